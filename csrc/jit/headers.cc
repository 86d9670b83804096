#include "jit/headers.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fmt/format.h"
#include "jit/embedded_templates.h"
#include "jit/errors.h"

namespace ae::jit {
namespace fs = std::filesystem;

HeaderSet::HeaderSet(std::vector<HeaderFile> files) : files_(std::move(files)) {
  std::sort(files_.begin(), files_.end(),
            [](const HeaderFile& a, const HeaderFile& b) { return a.name < b.name; });
  Hasher h;
  h.add(int64_t(files_.size()));
  for (const auto& f : files_) h.add(f.name).add(f.contents);
  digest_ = h.finish();
}

std::vector<const char*> HeaderSet::name_ptrs() const {
  std::vector<const char*> out;
  for (const auto& f : files_) out.push_back(f.name.c_str());
  return out;
}

std::vector<const char*> HeaderSet::content_ptrs() const {
  std::vector<const char*> out;
  for (const auto& f : files_) out.push_back(f.contents.c_str());
  return out;
}

std::shared_ptr<const HeaderSet> read_header_dir(const std::string& dir) {
  std::vector<HeaderFile> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) throw JitError(fmt::format("attention_engine: cannot read AE_TEMPLATE_DIR {}: {}", dir,
                                     ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const fs::path& p = it->path();
    auto ext = p.extension().string();
    if (!it->is_regular_file() || (ext != ".h" && ext != ".cuh" && ext != ".hpp")) continue;
    std::ifstream in(p, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    files.push_back({fs::relative(p, dir).generic_string(), text.str()});
  }
  return std::make_shared<HeaderSet>(std::move(files));
}

std::shared_ptr<const HeaderSet> template_headers() {
  const char* dir = std::getenv("AE_TEMPLATE_DIR");
  if (dir && *dir) return read_header_dir(dir);
  static const std::shared_ptr<const HeaderSet> embedded = [] {
    size_t n = 0;
    const EmbeddedFile* e = embedded_templates(&n);
    std::vector<HeaderFile> files;
    for (size_t i = 0; i < n; ++i)
      if (e[i].path[0]) files.push_back({e[i].path, std::string(e[i].data, e[i].size)});
    return std::make_shared<HeaderSet>(std::move(files));
  }();
  return embedded;
}

}  // namespace ae::jit
