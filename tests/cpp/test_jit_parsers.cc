// Pure pieces: ptxas log parsing, hashes, the cache entry format, numbered sources.
#include <gtest/gtest.h>

#include "jit/cache_entry.h"
#include "jit/compiler.h"
#include "jit/hash.h"
#include "jit/ptxas_log.h"

namespace ae::jit {
namespace {

const char* kTwoKernelLog = R"(ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90a'
ptxas info    : Function properties for _Z3fooPf
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 49152+16 bytes smem, 400 bytes cmem[0]
ptxas info    : Function properties for helper
ptxas         .     64 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'bar' for 'sm_90a'
ptxas info    : Function properties for bar
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers
)";

TEST(JitPtxasLog, PicksTheNamedEntry) {
  KernelFigures foo = parse_ptxas_log(kTwoKernelLog, "_Z3fooPf");
  EXPECT_EQ(foo.registers, 255);
  EXPECT_EQ(foo.smem_bytes, 49168);
  EXPECT_EQ(foo.spill_stores, 8);
  EXPECT_EQ(foo.spill_loads, 12);
  EXPECT_EQ(foo.stack_frame, 16);  // not the device function's 64
  EXPECT_TRUE(foo.spills());
  KernelFigures bar = parse_ptxas_log(kTwoKernelLog, "bar");
  EXPECT_EQ(bar.registers, 40);
  EXPECT_EQ(bar.smem_bytes, 0);
  EXPECT_FALSE(bar.spills());
  EXPECT_EQ(parse_ptxas_log(kTwoKernelLog, "missing").registers, -1);  // ambiguous
  EXPECT_EQ(parse_ptxas_log("", "x").registers, -1);
}

TEST(JitPtxasLog, SingleEntryNeedsNoName) {
  std::string log = R"(ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 1024 bytes smem, 368 bytes cmem[0]
)";
  KernelFigures f = parse_ptxas_log(log, "");
  EXPECT_EQ(f.registers, 12);
  EXPECT_EQ(f.smem_bytes, 1024);
}

TEST(JitHash, HexRoundTripsAndRejectsJunk) {
  Hash128 h = hash128("abc", 3);
  EXPECT_NE(h, hash128("abd", 3));
  Hash128 back;
  ASSERT_TRUE(Hash128::from_hex(h.hex(), &back));
  EXPECT_EQ(back, h);
  EXPECT_FALSE(Hash128::from_hex("xyz", &back));
  EXPECT_FALSE(Hash128::from_hex(std::string(32, 'G'), &back));
}

TEST(JitCacheEntry, RoundTripsAndRejectsDamage) {
  CompileResult r;
  r.arch = "sm_90a";
  r.binary = std::string("\x7f" "ELF\0\1\2", 7);
  r.lowered_name = "_Z1kv";
  r.threads = 256;
  r.figures = {168, 2048, 0, 0, 0};
  r.log = "ptxas info : ... \xff not utf8";
  Hash128 key = hash128("key", 3);
  std::string bytes = encode_cache_entry(key, r);
  auto back = decode_cache_entry(key, bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->binary, r.binary);
  EXPECT_EQ(back->lowered_name, "_Z1kv");
  EXPECT_EQ(back->threads, 256);
  EXPECT_EQ(back->figures.registers, 168);
  EXPECT_EQ(back->figures.smem_bytes, 2048);
  EXPECT_EQ(back->arch, "sm_90a");
  EXPECT_FALSE(decode_cache_entry(hash128("other", 5), bytes));  // misnamed file
  for (size_t cut : {size_t(0), size_t(10), bytes.size() - 1})
    EXPECT_FALSE(decode_cache_entry(key, bytes.substr(0, cut))) << cut;
  for (size_t at : {size_t(3), size_t(20), size_t(45), bytes.size() - 2}) {
    std::string bad = bytes;
    bad[at] ^= 0x10;
    EXPECT_FALSE(decode_cache_entry(key, bad)) << at;
  }
  EXPECT_FALSE(decode_cache_entry(key, bytes + "x"));
}

TEST(JitErrors, NumberedSource) {
  EXPECT_EQ(numbered_source("a\nb\n"), "    1 | a\n    2 | b\n");
  EXPECT_EQ(numbered_source("x"), "    1 | x\n");
}

}  // namespace
}  // namespace ae::jit
