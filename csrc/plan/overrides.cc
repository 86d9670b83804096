#include "plan/overrides.h"

#include <cctype>
#include <algorithm>
#include <cstdlib>
#include <string>

namespace ae::plan {
namespace {

using Lookup = std::function<const char*(const char*)>;

// "a,b,c" -> fields (up to N); an empty field (",,,,0") and the rest stay unset, and so does
// everything from a field that is not an integer on. Spaces around a number are allowed.
template <int N>
void parse_ints(const Lookup& getenv, const char* name, int (&fields)[N]) {
  const char* text = getenv(name);
  if (!text || !*text) return;
  for (int i = 0; i < N && *text; ++i) {
    if (*text != ',') {
      char* end = nullptr;
      const long v = std::strtol(text, &end, 10);  // (skips leading spaces)
      while (std::isspace(static_cast<unsigned char>(*end))) ++end;
      if (end == text || (*end && *end != ',')) return;
      fields[i] = static_cast<int>(v);
      text = end;
    }
    if (*text == ',') ++text;
  }
}

}  // namespace

TuningOverrides TuningOverrides::from_environment() {
  return from_lookup([](const char* name) { return static_cast<const char*>(std::getenv(name)); });
}

TuningOverrides TuningOverrides::from_lookup(const Lookup& getenv) {
  TuningOverrides o;
  parse_ints(getenv, "AE_SM80_FWD", o.sm80_fwd);
  parse_ints(getenv, "AE_SM80_BWD", o.sm80_bwd);
  parse_ints(getenv, "AE_SM90_FWD", o.sm90_fwd);
  parse_ints(getenv, "AE_DECODE", o.decode);
  if (const char* d = getenv("AE_DECODE"); d && *d && std::string(d) != "0") o.enable_decode = true;
  if (const char* c = getenv("AE_CUSTOM_NORM"); c && std::string(c) == "0")
    o.custom_norm_kernels = false;
  if (const char* p = getenv("AE_PLAIN_LOADS"); p && *p && std::string(p) != "0")
    o.plain_loads = true;
  if (const char* e = getenv("AE_EXACT_PV"); e && std::string(e) == "0") o.trust_v = true;
  if (const char* c = getenv("AE_V_CHECK"); c && (std::string(c) == "0" || std::string(c) == "1"))
    o.v_check = c[0] - '0';
  if (const char* m = getenv("AE_MASK_LOADS"); m && (std::string(m) == "0" ||
                                                     std::string(m) == "1" || std::string(m) == "2"))
    o.mask_load_mode = m[0] - '0';
  const char* off = getenv("AE_DISABLE_SM90");
  o.disable_sm90 = off && *off && std::string(off) != "0";
  const char* off_bwd = getenv("AE_DISABLE_SM90_BWD");
  o.disable_sm90_bwd = off_bwd && *off_bwd && std::string(off_bwd) != "0";
  if (const char* sink = getenv("AE_GRAD_SINK"); sink && std::string(sink) == "global")
    o.global_grads = true;
  if (const char* g = getenv("AE_HEAD_GROUP"); g && *g) {
    const int n = std::atoi(g);
    o.head_group = n < 1 ? 1 : n;
  }
  if (const char* s = getenv("AE_PERSISTENT"); s && *s) {  // "1" is "on", as for the others
    const std::string v(s);
    const int n = std::atoi(s);
    o.persistent = v == "on" || v == "true" || n == 1 ? -1 : std::max(0, n);
  }
  if (const char* c = getenv("AE_LINEAR_STATE_COLS"); c && (std::string(c) == "32" ||
                                                             std::string(c) == "64"))
    o.linear_state_cols = std::atoi(c);
  if (const char* s = getenv("AE_KV_SPLITS"); s && *s) {
    const int n = std::atoi(s);
    o.kv_splits = n < 1 ? 1 : n;
  }
  return o;
}

}  // namespace ae::plan
