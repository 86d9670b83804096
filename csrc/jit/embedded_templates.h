// The contents of templates/, compiled into the binary by tools/embed_templates.py.
#pragma once
#include <cstddef>

namespace ae::jit {

struct EmbeddedFile {
  const char* path;  // relative to templates/, e.g. "common/numeric.h"
  const char* data;  // NUL-terminated
  size_t size;       // bytes, without the NUL
};

// All embedded headers, sorted by path.
const EmbeddedFile* embedded_templates(size_t* count);

}  // namespace ae::jit
