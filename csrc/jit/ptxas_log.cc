#include "jit/ptxas_log.h"

#include <cctype>
#include <cstdlib>
#include <map>
#include <sstream>

namespace ae::jit {
namespace {

// The number just before `suffix` in `line` ("1024+16 bytes smem" -> 1040), or -1.
int number_before(const std::string& line, const char* suffix) {
  size_t pos = line.find(suffix);
  if (pos == std::string::npos) return -1;
  size_t end = pos;
  while (end > 0 && line[end - 1] == ' ') --end;
  size_t begin = end;
  while (begin > 0 && (std::isdigit(static_cast<unsigned char>(line[begin - 1])) ||
                       line[begin - 1] == '+'))
    --begin;
  if (begin == end) return -1;
  int total = 0;
  std::stringstream parts(line.substr(begin, end - begin));
  std::string part;
  while (std::getline(parts, part, '+'))
    if (!part.empty()) total += std::atoi(part.c_str());
  return total;
}

// The name in "... 'name' ..." or after "for " at the end of the line.
std::string quoted(const std::string& line) {
  size_t a = line.find('\'');
  size_t b = a == std::string::npos ? a : line.find('\'', a + 1);
  return b == std::string::npos ? std::string() : line.substr(a + 1, b - a - 1);
}

}  // namespace

KernelFigures parse_ptxas_log(const std::string& log, const std::string& kernel) {
  std::map<std::string, KernelFigures> entries;
  std::string entry, props;  // current entry function; function of the properties block
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("Compiling entry function") != std::string::npos) {
      entry = quoted(line);
      entries[entry];
    } else if (size_t p = line.find("Function properties for "); p != std::string::npos) {
      props = line.substr(p + 24);
      while (!props.empty() && std::isspace(static_cast<unsigned char>(props.back())))
        props.pop_back();
    } else if (line.find("bytes stack frame") != std::string::npos) {
      if (!entries.count(props)) continue;  // a device function's frame
      KernelFigures& f = entries[props];
      f.stack_frame = number_before(line, "bytes stack frame");
      f.spill_stores = number_before(line, "bytes spill stores");
      f.spill_loads = number_before(line, "bytes spill loads");
    } else if (line.find("Used ") != std::string::npos &&
               line.find(" registers") != std::string::npos && !entry.empty()) {
      KernelFigures& f = entries[entry];
      f.registers = number_before(line, "registers");
      int smem = number_before(line, "bytes smem");
      f.smem_bytes = smem < 0 ? 0 : smem;  // ptxas omits the field when there is none
    }
  }
  auto it = entries.find(kernel);
  if (it != entries.end()) return it->second;
  if (entries.size() == 1) return entries.begin()->second;
  return KernelFigures{};
}

}  // namespace ae::jit
