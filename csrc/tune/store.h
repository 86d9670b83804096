// Stored tuning choices, beside the kernel cache:
//   <kernel cache dir>/tuning/<hash>.json           one choice per shape-class key
//   <kernel cache dir>/tuning/<hash>.json.tmp.<pid>.<n>   one being written (renamed into place)
// <hash> is the XXH3-128 of the key's text (shape_class.h), which the file repeats: a file
// whose key differs is ignored. The folder is made 0700 and only files this user alone can
// write are read (as the kernel cache's: jit/private_dir.h), though a choice is data: its
// variables are parsed by choice.h and checked again by the planner.
// Lookups: memory first; a key not in memory is read from its file once per process (a miss
// is remembered too, so the hot path never touches the disk twice for one key). Writes go to
// a temporary name, then rename: readers in other processes see a whole file or none.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tune/choice.h"

namespace ae::tune {

struct StoredChoice {
  std::string key;        // shape_class_key
  Choice choice;
  std::string describe;   // the chosen main kernel's KernelSpec::describe()
  double ms = 0;          // its median time
  double table_ms = 0;    // the table's choice's
  int candidates = 0, timed = 0;
  double seconds = 0;     // the tuning's duration
  int64_t created = 0;    // unix seconds
};

class ChoiceStore {
 public:
  explicit ChoiceStore(std::string dir);  // "": memory only

  const std::string& dir() const { return dir_; }
  std::optional<StoredChoice> find(const std::string& key);
  // Keeps it in memory and writes its file; a write that fails leaves it in memory (one
  // warning on stderr per store).
  void put(const StoredChoice& choice);
  // The choices in the folder (unreadable or foreign files skipped), sorted by key.
  std::vector<StoredChoice> list() const;
  // Removes the folder's choice files (and this process's memory); returns how many files.
  size_t clear();
  void forget_memory();  // drops memory and remembered misses (tests; another process tuned)

  static std::string file_name(const std::string& key);  // "<hash>.json"

 private:
  std::string dir_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::optional<StoredChoice>> memory_;
  bool warned_ = false;
};

// The process's store: <jit::default_kernel_cache's folder>/tuning, memory only when the disk
// cache is off or unusable.
ChoiceStore& default_store();

// JSON text of a choice and back (nullopt: not a choice file).
std::string to_json(const StoredChoice& c);
std::optional<StoredChoice> from_json(const std::string& text);

}  // namespace ae::tune
