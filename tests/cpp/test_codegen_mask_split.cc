// The mask's loads split into per-row and per-column terms (codegen/mask_split.h), and the
// generated members that compute them (emit_variant's MaskRow, MaskCol, mask_rc).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "codegen/emit_variant.h"
#include "codegen/mask_split.h"
#include "ir/variant.h"
#include "trace_builder.h"

using ae::codegen::MaskSplit;
using ae::codegen::split_mask;
using ae::test::TraceBuilder;

namespace {

struct Built {
  std::shared_ptr<const ae::ir::Variant> v;
  MaskSplit split;
  std::string source;
};

Built build(const TraceBuilder& t, std::vector<std::string> dtypes) {
  Built b;
  b.v = ae::ir::build_variant(t.str());
  const ae::ir::Graph& f = b.v->forward;
  b.split = split_mask(f, f.output("mask"));
  b.source = ae::codegen::emit_variant(*b.v, dtypes);
  return b;
}

// What a term node of the optimized graph loads from (its buffer), -1 if it is no load.
int buffer_of(const Built& b, int node) {
  const auto& n = b.v->forward.nodes[node];
  return n.op == ae::ir::Op::Load ? n.index : -1;
}

}  // namespace

TEST(MaskSplit, DocumentMaskLoadsOncePerRowAndOncePerColumn) {
  TraceBuilder t;  // doc[q] == doc[k] & q >= k
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  const int doc = t.buffer("doc", "int64", {64});
  t.mask(t.op("and", {t.op("eq", {t.load(doc, {q}), t.load(doc, {k})}), t.op("ge", {q, k})}));
  const Built b = build(t, {"int64"});
  ASSERT_EQ(b.split.row_terms.size(), 1u);
  ASSERT_EQ(b.split.col_terms.size(), 1u);
  EXPECT_EQ(buffer_of(b, b.split.row_terms[0]), doc);
  EXPECT_EQ(buffer_of(b, b.split.col_terms[0]), doc);
  EXPECT_NE(b.source.find("kMaskSplit = true"), std::string::npos) << b.source;
  // mask_rc reads both terms from the structs and loads nothing itself
  const size_t rc = b.source.find("bool mask_rc(");
  ASSERT_NE(rc, std::string::npos) << b.source;
  const std::string rc_body = b.source.substr(rc, b.source.find("  }\n", rc) - rc);
  EXPECT_EQ(rc_body.find("ae::ld"), std::string::npos) << rc_body;
  EXPECT_NE(rc_body.find(" = r.n"), std::string::npos) << rc_body;
  EXPECT_NE(rc_body.find(" = c.n"), std::string::npos) << rc_body;
}

TEST(MaskSplit, LoadsIndexedByBothIndicesStayPerScore) {
  TraceBuilder t;  // allowed[q - k + 64] (a banded table): the load needs both indices
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  const int table = t.buffer("allowed", "bool", {128});
  t.mask(t.load(table, {t.op("add", {t.op("sub", {q, k}), t.iconst(64)})}));
  const Built b = build(t, {"bool"});
  EXPECT_TRUE(b.split.empty());
  EXPECT_NE(b.source.find("kMaskSplit = false"), std::string::npos);
  // mask_rc is the mask itself then
  EXPECT_NE(b.source.find("return mask(b, h, q_idx, kv_idx);"), std::string::npos) << b.source;
}

TEST(MaskSplit, NestedLoadsSplitAtTheBoundary) {
  TraceBuilder t;  // allowed[doc[q], k] & kept[k]: the inner load is a row term, the outer
  // one per score, and kept[k] a column term
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  const int doc = t.buffer("doc", "int32", {64});
  const int allowed = t.buffer("allowed", "bool", {8, 64});
  const int kept = t.buffer("kept", "bool", {64});
  t.mask(t.op("and", {t.load(allowed, {t.load(doc, {q}), k}), t.load(kept, {k})}));
  const Built b = build(t, {"int32", "bool", "bool"});
  ASSERT_EQ(b.split.row_terms.size(), 1u);
  ASSERT_EQ(b.split.col_terms.size(), 1u);
  EXPECT_EQ(buffer_of(b, b.split.row_terms[0]), doc);
  EXPECT_EQ(buffer_of(b, b.split.col_terms[0]), kept);
}

TEST(MaskSplit, AMaskOfOneIndexIsItsOwnTerm) {
  {
    TraceBuilder t;  // key padding: kept[k]
    const int k = t.param("kv_idx");
    const int kept = t.buffer("kept", "bool", {64});
    t.mask(t.load(kept, {k}));
    const Built b = build(t, {"bool"});
    EXPECT_TRUE(b.split.row_terms.empty());
    ASSERT_EQ(b.split.col_terms.size(), 1u);
    EXPECT_EQ(b.split.col_terms[0], b.v->forward.output("mask"));
  }
  {
    TraceBuilder t;  // dead rows, and a per-head switch (no index: a row term too)
    const int h = t.param("h"), q = t.param("q_idx");
    const int alive = t.buffer("alive", "bool", {64});
    const int on = t.buffer("on", "bool", {4});
    t.mask(t.op("and", {t.load(alive, {q}), t.load(on, {h})}));
    const Built b = build(t, {"bool", "bool"});
    ASSERT_EQ(b.split.row_terms.size(), 1u);  // the whole mask, once per row
    EXPECT_EQ(b.split.row_terms[0], b.v->forward.output("mask"));
    EXPECT_TRUE(b.split.col_terms.empty());
  }
}

TEST(MaskSplit, NoLoadsNoTerms) {
  TraceBuilder t;  // causal: index arithmetic is cheaper per score than a term would be
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  t.mask(t.op("ge", {q, k}));
  EXPECT_TRUE(build(t, {}).split.empty());
}

TEST(MaskSplit, FloatValuesStayPerScore) {
  TraceBuilder t;  // w[q] * 3 + w[k] > 1: a float term could round differently from mask()
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  const int w = t.buffer("w", "float32", {64});
  t.mask(t.op("gt", {t.op("add", {t.op("mul", {t.load(w, {q}), t.fconst(3.0)}), t.load(w, {k})}),
                     t.fconst(1.0)}));
  EXPECT_TRUE(build(t, {"float32"}).split.empty());
}

TEST(MaskSplit, OnlyTheTermsMaskRcReads) {
  TraceBuilder t;  // kept[k] & on[h]: the whole mask is one column term; on[h] is no row term
  const int h = t.param("h"), k = t.param("kv_idx");
  const int kept = t.buffer("kept", "bool", {64});
  const int on = t.buffer("on", "bool", {4});
  t.mask(t.op("and", {t.load(kept, {k}), t.load(on, {h})}));
  const Built b = build(t, {"bool", "bool"});
  EXPECT_TRUE(b.split.row_terms.empty());
  ASSERT_EQ(b.split.col_terms.size(), 1u);
  EXPECT_EQ(b.split.col_terms[0], b.v->forward.output("mask"));
}

TEST(MaskSplit, SharedNodesAreComputedWhereTheyAreNeeded) {
  TraceBuilder t;  // doc[q + 1] == doc[k] & (q + 1 >= k): q + 1 feeds a row term and the rest
  const int q = t.param("q_idx"), k = t.param("kv_idx");
  const int doc = t.buffer("doc", "int32", {64});
  const int q1 = t.op("add", {q, t.iconst(1)});
  t.mask(t.op("and", {t.op("eq", {t.load(doc, {q1}), t.load(doc, {k})}), t.op("ge", {q1, k})}));
  const Built b = build(t, {"int32"});
  ASSERT_EQ(b.split.row_terms.size(), 1u);
  ASSERT_EQ(b.split.col_terms.size(), 1u);
  // mask_rc computes q + 1 itself (for the comparison) and reads the loads from the terms
  const size_t rc = b.source.find("bool mask_rc(");
  const std::string rc_body = b.source.substr(rc, b.source.find("  }\n", rc) - rc);
  EXPECT_EQ(rc_body.find("ae::ld"), std::string::npos) << rc_body;
  EXPECT_NE(rc_body.find(" + "), std::string::npos) << rc_body;
  EXPECT_NE(b.source.find("kMaskRowTerms = 1, kMaskColTerms = 1"), std::string::npos);
}
