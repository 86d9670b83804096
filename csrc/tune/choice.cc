#include "tune/choice.h"

#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace ae::tune {

bool tunable(const std::string& name) {
  static const char* const kNames[] = {"AE_SM80_FWD",    "AE_SM80_BWD",         "AE_SM90_FWD",
                                       "AE_DISABLE_SM90", "AE_DISABLE_SM90_BWD", "AE_KV_SPLITS",
                                       "AE_PERSISTENT",  "AE_HEAD_GROUP",       "AE_DECODE"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

std::string Choice::text() const {
  std::string out;
  for (const auto& [name, value] : vars) out += (out.empty() ? "" : " ") + name + "=" + value;
  return out;
}

Choice Choice::parse(const std::string& text) {
  Choice c;
  std::istringstream in(text);
  std::string item;
  while (in >> item) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw std::invalid_argument("tuning choice: '" + item + "' is not NAME=VALUE");
    const std::string name = item.substr(0, eq), value = item.substr(eq + 1);
    if (!tunable(name))
      throw std::invalid_argument("tuning choice: " + name + " is not a tunable variable");
    if (value != "on" && value.find_first_not_of("0123456789,-") != std::string::npos)
      throw std::invalid_argument("tuning choice: " + name + "=" + value +
                                  " (values are integers separated by commas, or on)");
    c.vars[name] = value;
  }
  return c;
}

plan::TuningOverrides overrides_with(const Choice& choice) {
  return plan::TuningOverrides::from_lookup([&choice](const char* name) -> const char* {
    auto it = choice.vars.find(name);
    const char* env = std::getenv(name);
    const char* chosen = it == choice.vars.end() ? nullptr : it->second.c_str();
    // The decode template is opt-in (AE_DECODE=1): a choice's tiles for it apply only then.
    if (std::string(name) == "AE_DECODE")
      return env && std::string(env) == "1" && chosen ? chosen : env;
    return env && *env ? env : chosen;
  });
}

}  // namespace ae::tune
