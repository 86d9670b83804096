// The op graph: a typed SSA form of what score_mod and mask_mod compute for one element
// (b, h, q_idx, kv_idx) of the score matrix. Nodes are stored in topological order: a node's
// arguments always have smaller ids. Both mods live in one graph and share its index
// parameters; each result is a named output ("score", "mask", and after autodiff "d_score"
// and one "d_load" per differentiable buffer load). A custom row normalization adds the
// outputs "weight" and "stat" (per element, functions of the modified score) and "finish"
// (per row, a function of the row statistic), and their derivatives (see differentiate).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ae::ir {

enum class DType : uint8_t { Bool, Int, Float };

enum class Op : uint8_t {
  // leaves
  Param, Const, Load,
  // unary
  Neg, Not, Abs, Sign, Exp, Exp2, Log, Log2, Tanh, Sigmoid, Relu, Sqrt, Rsqrt, Sin, Cos,
  Floor, Ceil, Trunc, Round, Cast,
  // binary
  Add, Sub, Mul, Div, FloorDiv, Mod, Pow, Min, Max, Lt, Le, Gt, Ge, Eq, Ne, And, Or, Xor,
  // ternary
  Where,
};

// The mods' inputs, in FlexAttention's order; then the row statistic a custom
// normalization's finish() reads (one value per query row).
enum class Param : uint8_t { Score, B, H, QIdx, KvIdx, Stat };
constexpr int kNumParams = 6;

struct OpInfo {
  const char* name;  // the trace's and the text form's spelling
  int arity;         // -1: variable (Load)
};
const OpInfo& op_info(Op op);
// Returns false when `name` is not an op.
bool op_from_name(std::string_view name, Op* op);
const char* dtype_name(DType t);
const char* param_name(Param p);
DType param_type(Param p);  // the score and the row statistic are floats, the indices ints
bool param_from_name(std::string_view name, Param* p);

struct Node {
  Op op = Op::Const;
  DType type = DType::Float;  // result type; for Cast, the target type
  std::vector<int> args;
  double fvalue = 0;   // Const of type Float
  int64_t ivalue = 0;  // Const of type Int or Bool (0 / 1)
  int index = -1;      // Param: a Param value; Load: the buffer's index
  std::string loc;     // the user's source line ("file.py:12: return score + bias[h]")
  // Written by autodiff: part of a derivative, not of what the user wrote. Only such nodes
  // may be reassociated by constant folding (which changes their rounding, never the
  // forward's values).
  bool derived = false;
};

// A tensor the mods close over, read by Load nodes.
struct Buffer {
  std::string name;         // the Python name it was found under (display only)
  std::string torch_dtype;  // "float32", "int64", ...
  DType type = DType::Float;
  std::vector<int64_t> shape;
  bool requires_grad = false;
};

struct Output {
  std::string name;  // "score", "mask", "d_score", "d_load"; custom normalizations: see top
  int node = -1;
  int load = -1;     // for "d_load*": the Load node this is the derivative by
};

// Custom: p_ij = f(x_ij) c(L_i) with L_i = sum_j g(x_ij), from the outputs "weight" (f),
// "stat" (g; absent: g = f) and "finish" (c; absent: 1). In the log domain "weight" is log f,
// g = f, L is log sum_j f and "finish" returns log c (the kernels keep a running max).
enum class Normalize : uint8_t { Softmax, None, Custom };
const char* normalize_name(Normalize n);

struct Graph {
  std::vector<Node> nodes;
  std::vector<Buffer> buffers;
  std::vector<Output> outputs;
  Normalize normalize = Normalize::Softmax;
  bool log_domain = false;    // Custom only
  bool detach_stats = false;  // Custom only: no gradient flows through L

  // A graph with this one's buffers and normalization, and no nodes or outputs (passes build
  // their result into it).
  Graph header() const;

  int add(Node n);
  int add_const(DType type, double value);
  int add_param(Param p);
  // The node of the first output with this name, or -1.
  int output(std::string_view name) const;
  const Output* find_output(std::string_view name) const;

  // Stable text form. `details` adds what does not change the generated code (buffer names,
  // shapes, gradient flags, the user's source lines); the canonical form (details=false)
  // is what the hash covers.
  std::string text(bool details = true) const;
  // 16 hex digits of XXH3-64 over text(false): the variant's identity.
  std::string hash() const;
};

}  // namespace ae::ir
