// Finding the GPU libraries (env var, added search folders, clear error) and the
// AE_TEMPLATE_DIR override of the embedded headers.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include "jit/compiler.h"
#include "jit/dynlib.h"
#include "jit/errors.h"
#include "jit/headers.h"
#include "jit/kernel_cache.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::TempDir;

// Any real library will do as the target; the test only cares how it is found.
std::string some_real_library() {
  for (const char* p : {"/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/lib/x86_64-linux-gnu/libz.so.1",
                        "/lib/x86_64-linux-gnu/libz.so.1"})
    if (access(p, R_OK) == 0) return p;
  return "";
}

TEST(JitLibraries, MissingLibraryErrorSaysWhereItLooked) {
  try {
    DynLib::open("the test library", "AE_TEST_LIB_PATH", {"libae_missing.so.9"},
                 {"/nonexistent/dir"});
    FAIL() << "opened a library that does not exist";
  } catch (const JitError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("the test library"), std::string::npos) << what;
    EXPECT_NE(what.find("libae_missing.so.9"), std::string::npos) << what;
    EXPECT_NE(what.find("/nonexistent/dir/libae_missing.so.9"), std::string::npos) << what;
    EXPECT_NE(what.find("AE_TEST_LIB_PATH"), std::string::npos) << what;
  }
}

TEST(JitLibraries, FoundThroughAddedSearchPathAndEnv) {
  std::string target = some_real_library();
  if (target.empty()) GTEST_SKIP() << "no library to link to";
  TempDir dir;
  std::filesystem::create_symlink(target, dir / "libae_probe_search.so");
  std::filesystem::create_symlink(target, dir / "libae_probe_env.so");
  EXPECT_THROW(DynLib::open("probe", nullptr, {"libae_probe_search.so"}), JitError);
  add_library_search_path(dir.path());
  add_library_search_path(dir.path());  // once is enough
  int found = 0;
  for (const auto& p : library_search_paths()) found += p == dir.path();
  EXPECT_EQ(found, 1);
  DynLib lib = DynLib::open("probe", nullptr, {"libae_probe_search.so"});
  EXPECT_EQ(lib.path(), dir / "libae_probe_search.so");
  EXPECT_NE(lib.fingerprint().find(std::filesystem::canonical(target).string()), std::string::npos);

  // The env var wins, as a file or as a folder holding one of the names.
  setenv("AE_TEST_LIB_PATH", (dir / "libae_probe_env.so").c_str(), 1);
  EXPECT_EQ(DynLib::open("probe", "AE_TEST_LIB_PATH", {"libae_probe_search.so"}).path(),
            dir / "libae_probe_env.so");
  setenv("AE_TEST_LIB_PATH", dir.path().c_str(), 1);
  EXPECT_EQ(DynLib::open("probe", "AE_TEST_LIB_PATH", {"libae_probe_env.so"}).path(),
            dir / "libae_probe_env.so");
  unsetenv("AE_TEST_LIB_PATH");
}

TEST(JitLibraries, TemplateDirOverridesEmbeddedHeaders) {
  TempDir dir;
  std::filesystem::create_directories(dir / "common");
  testing::write_text(dir / "common/ae_common.h",
                      "#pragma once\nnamespace ae { typedef float f32; typedef int i32; }\n"
                      "#define AE_FROM_DISK 1\n");
  testing::write_text(dir / "common/notes.txt", "not a header");
  std::shared_ptr<const HeaderSet> embedded = template_headers();
  setenv("AE_TEMPLATE_DIR", dir.path().c_str(), 1);
  std::shared_ptr<const HeaderSet> disk = template_headers();
  unsetenv("AE_TEMPLATE_DIR");
  ASSERT_EQ(disk->files().size(), 1u);
  EXPECT_EQ(disk->files()[0].name, "common/ae_common.h");
  EXPECT_NE(disk->digest(), embedded->digest());

  CompileRequest req = testing::saxpy_request("sm_80");
  req.source = "#include \"common/ae_common.h\"\n#if !AE_FROM_DISK\n#error embedded\n#endif\n" +
               req.source;
  req.headers = disk;
  EXPECT_NO_THROW(nvrtc_compiler().compile(req, *disk));
  req.headers = embedded;
  EXPECT_THROW(nvrtc_compiler().compile(req, *embedded), CompileError);
}

TEST(JitLibraries, EmbeddedCommonHeaderIsReal) {
  bool found = false;
  for (const auto& f : template_headers()->files())
    found |= f.name == "common/ae_common.h" && f.contents.find("typedef") != std::string::npos;
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace ae::jit
