// The one error type of the IR: a bad trace, a type error, an unsupported op. The message
// names what is wrong and, where known, the user's source line. Python sees it as
// attention_engine.GraphError (a ValueError).
#pragma once

#include <stdexcept>
#include <string>

namespace ae::ir {

class GraphError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "what (at file.py:12: code)" when loc is known.
std::string at_loc(const std::string& what, const std::string& loc);

}  // namespace ae::ir
