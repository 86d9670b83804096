#include "ir/eval.h"

#include <cmath>
#include <limits>

#include "ir/error.h"

namespace ae::ir {
namespace {

// Integer arithmetic wraps around in two's complement, as PyTorch's int64 tensors do (and
// without the undefined behaviour of signed overflow in C++).
int64_t wrap(uint64_t v) { return static_cast<int64_t>(v); }
int64_t add(int64_t a, int64_t b) { return wrap(uint64_t(a) + uint64_t(b)); }
int64_t sub(int64_t a, int64_t b) { return wrap(uint64_t(a) - uint64_t(b)); }
int64_t mul(int64_t a, int64_t b) { return wrap(uint64_t(a) * uint64_t(b)); }
int64_t neg(int64_t a) { return wrap(0 - uint64_t(a)); }

int64_t floordiv(int64_t a, int64_t b) {
  if (b == -1) return neg(a);  // INT64_MIN / -1 overflows
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t remainder(int64_t a, int64_t b) {
  if (b == -1) return 0;
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

// Exponentiation by squaring: log2(e) steps, whatever the exponent.
int64_t ipow(int64_t base, int64_t e) {
  uint64_t r = 1, b = uint64_t(base);
  for (uint64_t k = uint64_t(e); k; k >>= 1) {
    if (k & 1) r *= b;
    b *= b;
  }
  return wrap(r);
}

// c10's div_floor_floating: what torch.floor_divide and div(rounding_mode="floor") return.
double floordiv(double a, double b) {
  if (b == 0) return a / b;
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0 && (b < 0) != (mod < 0)) div -= 1.0;
  if (div == 0) return std::copysign(0.0, a / b);
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) floordiv += 1.0;
  return floordiv;
}

// torch.remainder on floats: the sign of the divisor (5 % inf is 5, -5 % inf is inf).
double remainder(double a, double b) {
  double mod = std::fmod(a, b);
  if (mod != 0 && (b < 0) != (mod < 0)) mod += b;
  return mod;
}

// torch.maximum / minimum: nan if either is nan, else the first unless the second is larger
// (smaller), which also fixes which zero comes back of -0.0 and 0.0.
double fmax_nan(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return a < b ? b : a;
}
double fmin_nan(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return b < a ? b : a;
}

// torch.sign: 0 for nan and for both zeros.
double sign(double x) { return static_cast<double>((0 < x) - (x < 0)); }

// Comparisons compare integers as integers (doubles hold them exactly only up to 2^53).
template <class Cmp>
int64_t compare(const Value& a, const Value& b, Cmp cmp) {
  if (a.type != DType::Float && b.type != DType::Float) return cmp(a.i, b.i);
  return cmp(a.as_float(), b.as_float());
}

}  // namespace

Value make_value(DType t, double v) {
  Value r;
  r.type = t;
  if (t == DType::Float) r.f = v;
  else if (t == DType::Bool) r.i = v != 0;
  else r.i = static_cast<int64_t>(v);
  return r;
}

bool apply_op(const Node& n, const std::vector<Value>& a, Value* out) {
  auto lt = [](auto x, auto y) { return x < y; };
  auto le = [](auto x, auto y) { return x <= y; };
  auto eq = [](auto x, auto y) { return x == y; };
  const DType t = n.type;
  Value r;
  r.type = t;
  auto unary_f = [&](double (*fn)(double)) { r.f = fn(a[0].as_float()); };
  // Operand type of binary arithmetic: the result type (int for bool operands).
  const bool fl = t == DType::Float;
  switch (n.op) {
    case Op::Param:
    case Op::Const:
    case Op::Load:
      return false;
    case Op::Cast: {
      const Value& x = a[0];
      if (x.type != DType::Float) {  // from int or bool: exact
        r.f = static_cast<double>(x.i);
        r.i = t == DType::Bool ? x.i != 0 : x.i;
      } else if (t == DType::Float) {
        r.f = x.f;
      } else if (t == DType::Bool) {
        r.i = x.f != 0;  // nan is true, as in torch
      } else {
        // float -> int truncates toward zero; nan, inf and values past int64 are left to
        // run time (the conversion is undefined there)
        if (!(std::fabs(x.f) < 9.2e18)) return false;
        r.i = static_cast<int64_t>(x.f);
      }
      break;
    }
    case Op::Neg: fl ? (void)(r.f = -a[0].f) : (void)(r.i = neg(a[0].i)); break;
    case Op::Not: r.i = t == DType::Bool ? !a[0].i : ~a[0].i; break;
    case Op::Abs: fl ? (void)(r.f = std::fabs(a[0].f)) : (void)(r.i = a[0].i < 0 ? neg(a[0].i) : a[0].i); break;
    case Op::Sign: fl ? (void)(r.f = sign(a[0].f)) : (void)(r.i = (a[0].i > 0) - (a[0].i < 0)); break;
    case Op::Relu: fl ? (void)(r.f = a[0].f < 0 ? 0.0 : a[0].f) : (void)(r.i = a[0].i > 0 ? a[0].i : 0); break;
    case Op::Exp: unary_f([](double x) { return std::exp(x); }); break;
    case Op::Exp2: unary_f([](double x) { return std::exp2(x); }); break;
    case Op::Log: unary_f([](double x) { return std::log(x); }); break;
    case Op::Log2: unary_f([](double x) { return std::log2(x); }); break;
    case Op::Tanh: unary_f([](double x) { return std::tanh(x); }); break;
    case Op::Sigmoid: unary_f([](double x) { return 1.0 / (1.0 + std::exp(-x)); }); break;
    case Op::Sqrt: unary_f([](double x) { return std::sqrt(x); }); break;
    case Op::Rsqrt: unary_f([](double x) { return 1.0 / std::sqrt(x); }); break;
    case Op::Sin: unary_f([](double x) { return std::sin(x); }); break;
    case Op::Cos: unary_f([](double x) { return std::cos(x); }); break;
    case Op::Floor: fl ? (void)(r.f = std::floor(a[0].f)) : (void)(r.i = a[0].i); break;
    case Op::Ceil: fl ? (void)(r.f = std::ceil(a[0].f)) : (void)(r.i = a[0].i); break;
    case Op::Trunc: fl ? (void)(r.f = std::trunc(a[0].f)) : (void)(r.i = a[0].i); break;
    case Op::Round: fl ? (void)(r.f = std::nearbyint(a[0].f)) : (void)(r.i = a[0].i); break;
    case Op::Add: fl ? (void)(r.f = a[0].as_float() + a[1].as_float()) : (void)(r.i = add(a[0].i, a[1].i)); break;
    case Op::Sub: fl ? (void)(r.f = a[0].as_float() - a[1].as_float()) : (void)(r.i = sub(a[0].i, a[1].i)); break;
    case Op::Mul: fl ? (void)(r.f = a[0].as_float() * a[1].as_float()) : (void)(r.i = mul(a[0].i, a[1].i)); break;
    case Op::Div: r.f = a[0].as_float() / a[1].as_float(); break;
    case Op::FloorDiv:
      if (fl) { r.f = floordiv(a[0].as_float(), a[1].as_float()); break; }
      if (a[1].i == 0) return false;
      r.i = floordiv(a[0].i, a[1].i);
      break;
    case Op::Mod:
      if (fl) { r.f = remainder(a[0].as_float(), a[1].as_float()); break; }
      if (a[1].i == 0) return false;
      r.i = remainder(a[0].i, a[1].i);
      break;
    case Op::Pow:
      if (fl) { r.f = std::pow(a[0].as_float(), a[1].as_float()); break; }
      if (a[1].i < 0) return false;  // torch refuses negative integer powers of integers
      r.i = ipow(a[0].i, a[1].i);
      break;
    case Op::Min: fl ? (void)(r.f = fmin_nan(a[0].as_float(), a[1].as_float())) : (void)(r.i = std::min(a[0].i, a[1].i)); break;
    case Op::Max: fl ? (void)(r.f = fmax_nan(a[0].as_float(), a[1].as_float())) : (void)(r.i = std::max(a[0].i, a[1].i)); break;
    case Op::Lt: r.i = compare(a[0], a[1], lt); break;
    case Op::Le: r.i = compare(a[0], a[1], le); break;
    case Op::Gt: r.i = compare(a[1], a[0], lt); break;
    case Op::Ge: r.i = compare(a[1], a[0], le); break;
    case Op::Eq: r.i = compare(a[0], a[1], eq); break;
    case Op::Ne: r.i = !compare(a[0], a[1], eq); break;
    case Op::And: r.i = t == DType::Bool ? (a[0].i && a[1].i) : (a[0].i & a[1].i); break;
    case Op::Or: r.i = t == DType::Bool ? (a[0].i || a[1].i) : (a[0].i | a[1].i); break;
    case Op::Xor: r.i = t == DType::Bool ? ((a[0].i != 0) != (a[1].i != 0)) : (a[0].i ^ a[1].i); break;
    case Op::Where: {
      const Value& v = a[0].i ? a[1] : a[2];
      *out = make_value(t, v.as_float());
      if (t == DType::Int) out->i = v.as_int();
      return true;
    }
  }
  *out = r;
  return true;
}

std::vector<Value> evaluate(const Graph& g, const double params[kNumParams], const LoadFn& load) {
  std::vector<Value> v(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::Param) {
      v[i] = make_value(n.type, params[n.index]);
    } else if (n.op == Op::Const) {
      v[i].type = n.type;
      v[i].f = n.fvalue;
      v[i].i = n.ivalue;
    } else if (n.op == Op::Load) {
      std::vector<int64_t> idx;
      for (int a : n.args) idx.push_back(v[a].as_int());
      v[i] = make_value(n.type, load(n.index, idx));
    } else {
      std::vector<Value> args;
      for (int a : n.args) args.push_back(v[a]);
      if (!apply_op(n, args, &v[i]))
        throw GraphError(at_loc("integer division or remainder by zero", n.loc));
    }
  }
  return v;
}

}  // namespace ae::ir
