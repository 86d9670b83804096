#include "tune/shape_class.h"

#include <fmt/format.h>

#include "version.h"

namespace ae::tune {

int64_t pow2_bucket(int64_t n) {
  int64_t b = 1;
  while (b < n) b <<= 1;
  return b;
}

const char* mask_class(const plan::VariantTraits& v) {
  if (!v.has_mask) return "none";
  return v.mask_reads_buffers ? "data" : "index";
}

std::string shape_class_key(const plan::PlanRequest& r, const DeviceIdentity& dev) {
  const plan::Problem& p = r.problem;
  std::string grads, bufs;
  for (const plan::CapturedTensor& t : p.captured) {
    grads += t.wants_grad ? '1' : '0';
    bufs += (bufs.empty() ? "" : ",") + t.dtype;
  }
  // v1: the key's format; a change that makes old choices wrong bumps it.
  return fmt::format("v1 {} {} {} d{}x{} q{} k{} bh{} g{} mask:{} det{} grads:{} buf:{}{} | {} sm{} "
                     "drv{} ae{}",
                     p.kind == plan::OpKind::Forward ? "fwd" : "bwd", r.variant.key,
                     plan::elem_name(p.dtype), p.d_qk, p.d_v, pow2_bucket(p.q_len),
                     pow2_bucket(p.kv_len), pow2_bucket(p.batch * p.q_heads), p.group(),
                     mask_class(r.variant), p.deterministic ? 1 : 0, grads, bufs,
                     r.overrides.enable_decode ? " decode" : "", dev.name,
                     dev.multiprocessors, dev.driver, AE_VERSION);
}

}  // namespace ae::tune
