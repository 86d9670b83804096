// Exceptions thrown by the JIT. bind_jit.cpp maps them to attention_engine._C.JitError and
// attention_engine._C.CompileError (both RuntimeError subclasses).
#pragma once
#include <stdexcept>
#include <string>

namespace ae::jit {

// A missing library, a driver call that failed, a bad launch configuration.
class JitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The compiler rejected a source. what() holds the log and the numbered source.
class CompileError : public JitError {
 public:
  CompileError(const std::string& message, std::string log, std::string source,
               std::string log_path)
      : JitError(message), log_(std::move(log)), source_(std::move(source)),
        log_path_(std::move(log_path)) {}
  const std::string& log() const { return log_; }
  const std::string& source() const { return source_; }
  // Where the log and the source were written; empty if that failed.
  const std::string& log_path() const { return log_path_; }

 private:
  std::string log_, source_, log_path_;
};

}  // namespace ae::jit
