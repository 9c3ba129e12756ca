// Any elementwise optimizer's step over a packed buffer, as a small program run block by
// block (an XLA FFI custom call on CPU).
//
// funcopt/fused_program.py traces a transform's step (tx.update, then apply_updates) into
// its scalar part, which XLA computes (step counts, schedules, bias corrections: the
// program's coefficients), and its elementwise part, which it writes as the instructions
// below. FusedProgram runs them over a packed buffer whose gradient arrives leaf by leaf,
// as the hand-written passes of fused_adam.cc do for their families: segment i, at
// offsets[i] of each row, takes the i-th gradient, so a packed train step never
// concatenates the leaves' gradients, and every output is written in place over the input
// it replaces. Work is cut into blocks of kBlock elements; a block's instructions each run
// as one vectorised loop over values that stay in the L1 cache, and the block's outputs are
// written only after all its inputs have been read.
//
// Slots (each a block of floats): 0 the gradient, 1 p, 2 .. 1+S the state buffers, then the
// coefficients (a row of scalars per member of a vmapped ensemble, each broadcast over the
// block), then the registers. An instruction is five integers: op, destination, a, b, c
// (unused operands -1); an output's slot is its own input's or a register (the program
// copies any other input first). Booleans are 1.0f and 0.0f. The operations are IEEE float32 ones
// (nothing fuses unless the program says FMA: built with -ffp-contract=off).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static constexpr int64_t kBlock = 256;
static constexpr int64_t kParallelFrom = 1 << 16;  // below this, threads cost more than they save

enum Op : int64_t {  // as OPS in fused_program.py
  kCopy = 0,
  kAdd,
  kSub,
  kMul,
  kDiv,
  kNeg,
  kSqrt,
  kRsqrt,
  kMax,
  kMin,
  kAbs,
  kSign,
  kExp,
  kLog,
  kPow,
  kSelect,  // a ? c : b  (lax.select_n(a, b, c))
  kGt,
  kGe,
  kLt,
  kLe,
  kEq,
  kNe,
  kAnd,
  kOr,
  kNot,
  kIsFinite,
  kCbrt,
  kTanh,
  kLog1p,
  kExpm1,
  kLogistic,
  kRem,
  kFma,  // a b + c
  kNonzero,
  kOps
};

static inline float Bool(bool x) { return x ? 1.0f : 0.0f; }

static void Run(int64_t op, int64_t n, float* d, const float* a, const float* b, const float* c) {
#define LOOP(expr)                                  \
  _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) d[i] = (expr); \
  return;
  switch (op) {
    case kCopy: LOOP(a[i])
    case kAdd: LOOP(a[i] + b[i])
    case kSub: LOOP(a[i] - b[i])
    case kMul: LOOP(a[i] * b[i])
    case kDiv: LOOP(a[i] / b[i])
    case kNeg: LOOP(-a[i])
    case kSqrt: LOOP(std::sqrt(a[i]))
    case kRsqrt: LOOP(1.0f / std::sqrt(a[i]))
    case kMax: LOOP((a[i] > b[i] || a[i] != a[i]) ? a[i] : b[i])  // NaN propagates, as XLA's
    case kMin: LOOP((a[i] < b[i] || a[i] != a[i]) ? a[i] : b[i])
    case kAbs: LOOP(std::fabs(a[i]))
    case kSign: LOOP(a[i] > 0.0f ? 1.0f : (a[i] < 0.0f ? -1.0f : a[i]))  // ±0, NaN pass through
    case kExp: LOOP(std::exp(a[i]))
    case kLog: LOOP(std::log(a[i]))
    case kPow: LOOP(std::pow(a[i], b[i]))
    case kSelect: LOOP(a[i] != 0.0f ? c[i] : b[i])
    case kGt: LOOP(Bool(a[i] > b[i]))
    case kGe: LOOP(Bool(a[i] >= b[i]))
    case kLt: LOOP(Bool(a[i] < b[i]))
    case kLe: LOOP(Bool(a[i] <= b[i]))
    case kEq: LOOP(Bool(a[i] == b[i]))
    case kNe: LOOP(Bool(a[i] != b[i]))
    case kAnd: LOOP(Bool(a[i] != 0.0f && b[i] != 0.0f))
    case kOr: LOOP(Bool(a[i] != 0.0f || b[i] != 0.0f))
    case kNot: LOOP(Bool(a[i] == 0.0f))
    case kIsFinite: LOOP(Bool(std::isfinite(a[i])))
    case kCbrt: LOOP(std::cbrt(a[i]))
    case kTanh: LOOP(std::tanh(a[i]))
    case kLog1p: LOOP(std::log1p(a[i]))
    case kExpm1: LOOP(std::expm1(a[i]))
    case kLogistic: LOOP(1.0f / (1.0f + std::exp(-a[i])))
    case kRem: LOOP(std::fmod(a[i], b[i]))
    case kFma: LOOP(std::fma(a[i], b[i], c[i]))
    case kNonzero: LOOP(Bool(a[i] != 0.0f))
  }
#undef LOOP
}

static ffi::Error Invalid(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "fused_program: " + what);
}

// rest: the S state buffers, the segments' gradients (one per offset), then arrays that are
// only there to be computed first. outs[j] is written from slot outputs[j].
static ffi::Error FusedProgramImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> coef,
                                   ffi::RemainingArgs rest, ffi::Span<const int64_t> code,
                                   ffi::Span<const int64_t> outputs,
                                   ffi::Span<const int64_t> offsets, int64_t states,
                                   int64_t coefs, int64_t registers, ffi::RemainingRets outs) {
  const int64_t n = static_cast<int64_t>(p.element_count());
  if (coefs < 1) return Invalid("no coefficients");
  const int64_t rows = static_cast<int64_t>(coef.element_count()) / coefs;
  const int64_t segments = static_cast<int64_t>(offsets.size());
  const int64_t slots = 2 + states + coefs + registers;
  if (rows < 1 || rows * coefs != static_cast<int64_t>(coef.element_count()) ||
      n % rows != 0 || static_cast<int64_t>(rest.size()) < states + segments ||
      outs.size() != outputs.size() || code.size() % 5 != 0) {
    return Invalid("buffers of mismatched sizes");
  }
  for (size_t i = 0; i < code.size(); i += 5) {
    if (code[i] < 0 || code[i] >= kOps || code[i + 1] < 2 + states + coefs ||
        code[i + 1] >= slots) {
      return Invalid("a malformed instruction");
    }
    for (int j = 2; j < 5; ++j) {
      if (code[i + j] < -1 || code[i + j] >= slots) return Invalid("an operand out of range");
    }
  }
  for (int64_t s : outputs) {
    if (s < 0 || s >= slots) return Invalid("an output out of range");
  }
  const int64_t k = n / rows;
  std::vector<const float*> state(states), grads(segments);
  std::vector<float*> out(outputs.size());
  std::vector<int64_t> sizes(segments), blocks(segments + 1, 0);
  for (int64_t j = 0; j < states; ++j) {
    auto s = rest.get<ffi::Buffer<ffi::F32>>(j);
    if (s.has_error()) return s.error();
    if (static_cast<int64_t>(s->element_count()) != n) return Invalid("a state of another size");
    state[j] = s->typed_data();
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    auto o = outs.get<ffi::Buffer<ffi::F32>>(j);
    if (o.has_error()) return o.error();
    if (static_cast<int64_t>((*o)->element_count()) != n) return Invalid("an output's size");
    out[j] = (*o)->typed_data();
  }
  for (int64_t i = 0; i < segments; ++i) {
    auto g = rest.get<ffi::Buffer<ffi::F32>>(states + i);
    if (g.has_error()) return g.error();
    grads[i] = g->typed_data();
    sizes[i] = static_cast<int64_t>(g->element_count()) / rows;
    if (offsets[i] < 0 || offsets[i] + sizes[i] > k) return Invalid("a segment outside its buffer");
    blocks[i + 1] = blocks[i] + (sizes[i] + kBlock - 1) / kBlock;
  }
  const float* P = p.typed_data();
  const int64_t first_coef = 2 + states, first_register = first_coef + coefs;
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = coef.typed_data() + r * coefs;
#pragma omp parallel if (k >= kParallelFrom)
    {
      // This thread's coefficient blocks and registers, and where each slot points.
      std::vector<float> scratch((coefs + registers) * kBlock);
      std::vector<float*> slot(slots, nullptr);
      for (int64_t j = 0; j < coefs + registers; ++j) slot[first_coef + j] = &scratch[j * kBlock];
      for (int64_t j = 0; j < coefs; ++j) {
        for (int64_t i = 0; i < kBlock; ++i) slot[first_coef + j][i] = c[j];
      }
      int64_t segment = 0;
#pragma omp for schedule(dynamic, 16)
      for (int64_t b = 0; b < blocks[segments]; ++b) {
        while (blocks[segment + 1] <= b) ++segment;
        while (blocks[segment] > b) --segment;
        const int64_t from = (b - blocks[segment]) * kBlock;
        const int64_t len = std::min(kBlock, sizes[segment] - from);
        const int64_t at = r * k + offsets[segment] + from;
        slot[0] = const_cast<float*>(grads[segment] + r * sizes[segment] + from);
        slot[1] = const_cast<float*>(P + at);
        for (int64_t j = 0; j < states; ++j) slot[2 + j] = const_cast<float*>(state[j] + at);
        for (size_t i = 0; i < code.size(); i += 5) {
          auto operand = [&](int64_t s) -> const float* { return s < 0 ? nullptr : slot[s]; };
          Run(code[i], len, slot[code[i + 1]], operand(code[i + 2]), operand(code[i + 3]),
              operand(code[i + 4]));
        }
        // Every input of the block is read; now its outputs overwrite them.
        for (size_t j = 0; j < outputs.size(); ++j) {
          const float* from_slot = slot[outputs[j]];
          float* to = out[j] + at;
          if (from_slot != to) {
            for (int64_t i = 0; i < len; ++i) to[i] = from_slot[i];
          }
        }
      }
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FusedProgram, FusedProgramImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // p
                                  .Arg<ffi::Buffer<ffi::F32>>()  // coef
                                  .RemainingArgs()  // states, gradients, then ignored
                                  .Attr<ffi::Span<const int64_t>>("code")
                                  .Attr<ffi::Span<const int64_t>>("outputs")
                                  .Attr<ffi::Span<const int64_t>>("offsets")
                                  .Attr<int64_t>("states")
                                  .Attr<int64_t>("coefs")
                                  .Attr<int64_t>("registers")
                                  .RemainingRets());  // as outputs says
