// The headers a generated source may include: the embedded templates/ files, handed to
// NVRTC/hipRTC in memory under their relative paths ("common/ae_common.h").
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "jit/hash.h"

namespace ae::jit {

struct HeaderFile {
  std::string name;      // include name, relative to templates/
  std::string contents;
};

class HeaderSet {
 public:
  explicit HeaderSet(std::vector<HeaderFile> files);  // sorts by name, hashes once
  const std::vector<HeaderFile>& files() const { return files_; }
  // Covers every name and every content: part of each cache key.
  const Hash128& digest() const { return digest_; }
  // For the compilers' C APIs; valid while this set lives.
  std::vector<const char*> name_ptrs() const;
  std::vector<const char*> content_ptrs() const;

 private:
  std::vector<HeaderFile> files_;
  Hash128 digest_;
};

// The embedded set (built once), or, when AE_TEMPLATE_DIR is set, the .h/.cuh/.hpp files
// under that folder, read again on every call so template edits apply without a rebuild.
std::shared_ptr<const HeaderSet> template_headers();
std::shared_ptr<const HeaderSet> read_header_dir(const std::string& dir);

}  // namespace ae::jit
