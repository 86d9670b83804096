#include "jit/private_dir.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "fmt/format.h"

namespace ae::jit {

std::string make_private_dir(const std::string& path, bool follow_symlink) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);  // mkdir says why
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return fmt::format("cannot create {}: {}", path, std::strerror(errno));
  struct stat st;
  if ((follow_symlink ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0)
    return fmt::format("cannot read {}: {}", path, std::strerror(errno));
  if (S_ISLNK(st.st_mode)) return fmt::format("{} is a symlink", path);
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} is not a folder", path);
  if (st.st_uid != ::geteuid())
    return fmt::format("{} belongs to another user (uid {})", path, st.st_uid);
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return fmt::format("{} is writable by {} (mode {:o}; chmod 700 it)", path,
                       st.st_mode & S_IWOTH ? "others" : "its group", st.st_mode & 07777);
  return "";
}

std::string untrusted_file(const struct stat& st) {
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  if (st.st_uid != ::geteuid()) return fmt::format("belongs to another user (uid {})", st.st_uid);
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return "writable by others";
  return "";
}

}  // namespace ae::jit
