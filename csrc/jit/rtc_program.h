// The steps NVRTC and hipRTC share once a program is compiled: their APIs mirror each other
// (GetProgramLog, Get{CUBIN,Code}, GetLoweredName), so one template reads either.
#pragma once

#include <string>
#include <vector>

namespace ae::jit {

// Pointers to the option strings, as the compile calls want them.
inline std::vector<const char*> c_strs(const std::vector<std::string>& v) {
  std::vector<const char*> p;
  for (const auto& s : v) p.push_back(s.c_str());
  return p;
}

// The program's log, without trailing NULs and newlines.
template <class Api, class Prog>
std::string program_log(const Api& api, Prog prog) {
  size_t size = 0;
  api.GetProgramLogSize(prog, &size);
  std::string log(size, '\0');
  if (size > 0) api.GetProgramLog(prog, log.data());
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

}  // namespace ae::jit
