#include "jit/cache_key.h"

#include "version.h"

namespace ae::jit {

Hash128 cache_key(const CompileRequest& req, const HeaderSet& headers,
                  const std::string& compiler_version) {
  Hasher h;
  h.add("attention_engine jit key 1").add(AE_VERSION).add(compiler_version).add(req.arch);
  std::vector<std::string> base = base_options(vendor_of_arch(req.arch), req.arch);
  h.add(int64_t(base.size()));
  for (const auto& o : base) h.add(o);
  h.add(int64_t(req.options.size()));
  for (const auto& o : req.options) h.add(o);
  h.add(req.kernel).add(req.file_name).add(int64_t(req.threads));
  h.add(headers.digest()).add(req.source);
  return h.finish();
}

}  // namespace ae::jit
