#include "ir/eval.h"

#include <cmath>

#include "ir/error.h"

namespace ae::ir {
namespace {

int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t remainder(int64_t a, int64_t b) {
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

double sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : x); }

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
    case Op::Cast: *out = make_value(t, a[0].as_float()); return true;
    case Op::Neg: fl ? (void)(r.f = -a[0].f) : (void)(r.i = -a[0].i); break;
    case Op::Not: r.i = t == DType::Bool ? !a[0].i : ~a[0].i; break;
    case Op::Abs: fl ? (void)(r.f = std::fabs(a[0].f)) : (void)(r.i = std::llabs(a[0].i)); break;
    case Op::Sign: fl ? (void)(r.f = sign(a[0].f)) : (void)(r.i = (a[0].i > 0) - (a[0].i < 0)); break;
    case Op::Relu: fl ? (void)(r.f = a[0].f > 0 ? a[0].f : 0.0) : (void)(r.i = a[0].i > 0 ? a[0].i : 0); break;
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
    case Op::Add: fl ? (void)(r.f = a[0].as_float() + a[1].as_float()) : (void)(r.i = a[0].i + a[1].i); break;
    case Op::Sub: fl ? (void)(r.f = a[0].as_float() - a[1].as_float()) : (void)(r.i = a[0].i - a[1].i); break;
    case Op::Mul: fl ? (void)(r.f = a[0].as_float() * a[1].as_float()) : (void)(r.i = a[0].i * a[1].i); break;
    case Op::Div: r.f = a[0].as_float() / a[1].as_float(); break;
    case Op::FloorDiv:
      if (fl) { r.f = std::floor(a[0].as_float() / a[1].as_float()); break; }
      if (a[1].i == 0) return false;
      r.i = floordiv(a[0].i, a[1].i);
      break;
    case Op::Mod:
      if (fl) {
        double x = a[0].as_float(), y = a[1].as_float();
        r.f = x - std::floor(x / y) * y;
        break;
      }
      if (a[1].i == 0) return false;
      r.i = remainder(a[0].i, a[1].i);
      break;
    case Op::Pow:
      if (fl) { r.f = std::pow(a[0].as_float(), a[1].as_float()); break; }
      if (a[1].i < 0) return false;
      r.i = 1;
      for (int64_t k = 0; k < a[1].i; ++k) r.i *= a[0].i;
      break;
    case Op::Min: fl ? (void)(r.f = std::fmin(a[0].as_float(), a[1].as_float())) : (void)(r.i = std::min(a[0].i, a[1].i)); break;
    case Op::Max: fl ? (void)(r.f = std::fmax(a[0].as_float(), a[1].as_float())) : (void)(r.i = std::max(a[0].i, a[1].i)); break;
    case Op::Lt: r.i = a[0].as_float() < a[1].as_float(); break;
    case Op::Le: r.i = a[0].as_float() <= a[1].as_float(); break;
    case Op::Gt: r.i = a[0].as_float() > a[1].as_float(); break;
    case Op::Ge: r.i = a[0].as_float() >= a[1].as_float(); break;
    case Op::Eq: r.i = a[0].as_float() == a[1].as_float(); break;
    case Op::Ne: r.i = a[0].as_float() != a[1].as_float(); break;
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
