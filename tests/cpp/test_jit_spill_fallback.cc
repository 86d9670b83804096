// get_least_spilling: the spill-driven choice among compile options (kernel_registry takes the
// register-usage levels of KernelSpec::fallback_options through it).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "codegen/kernel_spec.h"
#include "jit/spill_fallback.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::TempDir;

// A fake compiler whose spill figures depend on the options: bytes[options joined] (0 if
// absent; -1 = no ptxas log). Counts compiles per option set.
class OptionSpillCompiler : public testing::FakeCompiler {
 public:
  std::map<std::string, int> bytes;
  std::map<std::string, int> compiles;
  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    CompileResult r = FakeCompiler::compile(req, headers);
    std::string joined;
    for (const auto& o : req.options) joined += o + " ";
    ++compiles[joined];
    auto it = bytes.find(joined);
    r.figures.spill_stores = r.figures.spill_loads = it == bytes.end() ? 0 : it->second;
    r.binary += joined;  // distinct binaries per option set
    return r;
  }
};

struct Fixture {
  TempDir dir;
  OptionSpillCompiler fake;
  KernelCache cache{dir.path(), true, [this](const std::string&) -> Compiler& { return fake; }};
  CompileRequest req;
  Fixture() {
    req.source = "kernel body";
    req.kernel = "k";
    req.arch = "sm_90";
    req.options = {"-A"};
  }
};

int spill(const KernelPtr& k) { return k->result.figures.spill_stores; }

TEST(SpillFallback, NoSpillCompilesOnlyTheRequest) {
  Fixture f;
  KernelPtr k = get_least_spilling(f.cache, f.req, {{"-B"}, {"-C"}});
  EXPECT_EQ(spill(k), 0);
  EXPECT_EQ(f.fake.compiles.size(), 1u);
  EXPECT_EQ(f.fake.compiles["-A "], 1);
}

TEST(SpillFallback, TakesTheFirstAlternativeThatDoesNotSpill) {
  Fixture f;
  f.fake.bytes = {{"-A ", 12}, {"-B ", 8}};  // -C and -D fit
  KernelPtr k = get_least_spilling(f.cache, f.req, {{"-B"}, {"-C"}, {"-D"}});
  EXPECT_EQ(spill(k), 0);
  EXPECT_NE(k->result.binary.find("-C "), std::string::npos);
  EXPECT_EQ(f.fake.compiles.count("-D "), 0u);  // stops at the first fit
}

TEST(SpillFallback, KeepsTheLeastSpillingWhenAllSpill) {
  Fixture f;
  f.fake.bytes = {{"-A ", 12}, {"-B ", 4}, {"-C ", 8}, {"-D ", -1}};  // -D: figures unknown
  KernelPtr k = get_least_spilling(f.cache, f.req, {{"-B"}, {"-C"}, {"-D"}});
  EXPECT_EQ(spill(k), 4);
  EXPECT_NE(k->result.binary.find("-B "), std::string::npos);
}

TEST(SpillFallback, UnknownFiguresKeepTheRequest) {
  Fixture f;
  f.fake.bytes = {{"-A ", -1}};  // no ptxas -v lines: no evidence of a spill
  KernelPtr k = get_least_spilling(f.cache, f.req, {{"-B"}, {"-C"}});
  EXPECT_EQ(spill(k), -1);
  EXPECT_EQ(f.fake.compiles.size(), 1u);  // nothing else compiled
}

TEST(SpillFallback, SecondCallIsServedFromTheCache) {
  Fixture f;
  f.fake.bytes = {{"-A ", 12}};
  get_least_spilling(f.cache, f.req, {{"-B"}});
  KernelPtr k = get_least_spilling(f.cache, f.req, {{"-B"}});
  EXPECT_EQ(spill(k), 0);
  EXPECT_EQ(f.fake.compiles["-A "], 1);
  EXPECT_EQ(f.fake.compiles["-B "], 1);
}

TEST(SpillFallback, SpecOffersOtherLevelsThenTheSmallerBackwardChunkOnNvidiaOnly) {
  using V = std::vector<std::string>;
  const std::string r0 = "-Xptxas=--register-usage-level=0", q16 = "-DAE_BWD_QUERY_CHUNK=16";
  codegen::KernelSpec s;
  s.arch = "sm_90";
  s.reg_level = 0;
  EXPECT_EQ(s.fallback_options(), std::vector<V>{V{}});  // forward: ptxas's default level
  s.reg_level = -1;
  EXPECT_EQ(s.fallback_options(), std::vector<V>{V{r0}});
  s.kind = codegen::Kind::Backward;
  s.reg_level = 0;
  s.d_qk = s.d_v = 128;
  s.block_n = 128;
  EXPECT_EQ(s.fallback_options(), (std::vector<V>{V{}, V{q16}, V{r0, q16}}));
  s.d_qk = s.d_v = 96;  // kQC is 16 already: no alternatives that compile the same code
  EXPECT_EQ(s.fallback_options(), std::vector<V>{V{}});
  s.d_qk = s.d_v = 256;
  s.block_n = 64;
  EXPECT_EQ(s.fallback_options(), std::vector<V>{V{}});
  s.arch = "gfx90a";
  EXPECT_TRUE(s.fallback_options().empty());
}

}  // namespace
}  // namespace ae::jit
