// The folders and files of the disk cache are code that runs in this process (a cubin is
// loaded and launched as it is), so only what this user alone can write is trusted: a folder
// or file owned by the effective user, not writable by group or others, not reached through
// a symlink (except the cache folder itself: AE_CACHE_DIR may name a link).
#pragma once
#include <sys/stat.h>

#include <string>

namespace ae::jit {

// Creates `path` (its parents with the usual mode) as a folder of mode 0700, or checks the
// one there. "" when it is this user's alone, else why not (for the warning).
std::string make_private_dir(const std::string& path, bool follow_symlink);

// Why `st` (from fstat / lstat) is not a file this user alone can write, or "".
std::string untrusted_file(const struct stat& st);

}  // namespace ae::jit
