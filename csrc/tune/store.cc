#include "tune/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "fmt/format.h"
#include "jit/hash.h"
#include "jit/kernel_cache.h"
#include "jit/private_dir.h"
#include "nlohmann/json.hpp"

namespace ae::tune {
namespace fs = std::filesystem;
namespace {

std::atomic<uint64_t> g_tmp_counter{0};

// The file's text if it is a regular file this user alone can write (never a symlink).
std::optional<std::string> read_private(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  struct stat st;
  std::optional<std::string> out;
  if (fstat(fd, &st) == 0 && jit::untrusted_file(st).empty() && st.st_size < (1 << 20)) {
    std::string text(size_t(st.st_size), '\0');
    ssize_t n = ::read(fd, text.data(), text.size());
    if (n == st.st_size) out = std::move(text);
  }
  ::close(fd);
  return out;
}

// 0 or an errno value.
int write_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno;
  int error = 0;
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    error = errno ? errno : ENOSPC;
  ::close(fd);
  if (!error && std::rename(tmp.c_str(), path.c_str()) != 0) error = errno;
  if (error) ::unlink(tmp.c_str());
  return error;
}

bool is_choice_file(const std::string& name) {
  return name.size() == 37 && name.compare(32, 5, ".json") == 0 &&
         name.find_first_not_of("0123456789abcdef") == 32;
}

}  // namespace

std::string to_json(const StoredChoice& c) {
  nlohmann::json j = {{"key", c.key},           {"choice", c.choice.text()}, {"describe", c.describe},
                      {"ms", c.ms},             {"table_ms", c.table_ms},    {"candidates", c.candidates},
                      {"timed", c.timed},       {"seconds", c.seconds},      {"created", c.created}};
  return j.dump(1) + "\n";
}

std::optional<StoredChoice> from_json(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    StoredChoice c;
    c.key = j.at("key").get<std::string>();
    c.choice = Choice::parse(j.at("choice").get<std::string>());
    c.describe = j.value("describe", "");
    c.ms = j.value("ms", 0.0);
    c.table_ms = j.value("table_ms", 0.0);
    c.candidates = j.value("candidates", 0);
    c.timed = j.value("timed", 0);
    c.seconds = j.value("seconds", 0.0);
    c.created = j.value("created", int64_t{0});
    return c;
  } catch (const std::exception&) {  // not JSON, a field missing, a choice that does not parse
    return std::nullopt;
  }
}

ChoiceStore::ChoiceStore(std::string dir) : dir_(std::move(dir)) {}

std::string ChoiceStore::file_name(const std::string& key) {
  return jit::hash128(key.data(), key.size()).hex() + ".json";
}

std::optional<StoredChoice> ChoiceStore::find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = memory_.find(key); it != memory_.end()) return it->second;
  std::optional<StoredChoice> c;
  if (!dir_.empty())
    if (auto text = read_private(dir_ + "/" + file_name(key)))
      if ((c = from_json(*text)) && c->key != key) c.reset();  // a hash collision
  memory_[key] = c;
  return c;
}

void ChoiceStore::put(const StoredChoice& c) {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_[c.key] = c;
  if (dir_.empty()) return;
  std::string why = jit::make_private_dir(dir_, /*follow_symlink=*/false);
  if (why.empty()) {
    const int error = write_atomic(dir_ + "/" + file_name(c.key), to_json(c));
    if (error) why = std::strerror(error);
  }
  if (!why.empty() && !warned_) {
    warned_ = true;
    std::fprintf(stderr, "attention_engine: tuning choices kept in memory only: %s: %s\n",
                 dir_.c_str(), why.c_str());
  }
}

std::vector<StoredChoice> ChoiceStore::list() const {
  std::vector<StoredChoice> out;
  std::error_code ec;
  if (dir_.empty() || !fs::is_directory(fs::symlink_status(dir_, ec))) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_choice_file(name)) continue;
    if (auto text = read_private(e.path().string()))
      if (auto c = from_json(*text); c && file_name(c->key) == name) out.push_back(*c);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  return out;
}

size_t ChoiceStore::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_.clear();
  size_t removed = 0;
  std::error_code ec;
  if (dir_.empty() || !fs::is_directory(fs::symlink_status(dir_, ec))) return 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    // Choice files, and temporary ones a writer left more than an hour ago.
    bool ours = is_choice_file(name);
    if (!ours && name.size() > 37 && is_choice_file(name.substr(0, 37)) &&
        name.compare(37, 5, ".tmp.") == 0) {
      struct stat st;
      ours = ::lstat(e.path().c_str(), &st) == 0 && st.st_mtime + 3600 < std::time(nullptr);
    }
    struct stat st;
    if (ours && ::lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_uid == ::geteuid() && ::unlink(e.path().c_str()) == 0)
      ++removed;
  }
  return removed;
}

void ChoiceStore::forget_memory() {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_.clear();
}

ChoiceStore& default_store() {
  static ChoiceStore* store = [] {
    jit::KernelCache& k = jit::default_kernel_cache();
    const bool disk = k.disk().usable() && !k.disk().dir().empty();
    return new ChoiceStore(disk ? k.disk().dir() + "/tuning" : "");
  }();
  return *store;
}

}  // namespace ae::tune
