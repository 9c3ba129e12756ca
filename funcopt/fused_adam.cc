// Adam (and AdamW) as one pass over memory, behind an XLA FFI custom call on CPU.
//
// funcopt.update_and_apply calls it for large float32 leaves of a funcopt.adam or
// funcopt.adamw step: it reads g, p, m and v once and writes p, m and v in place (the
// outputs alias the inputs), 28 bytes per parameter, where XLA's fusions of the same step
// take three passes. funcopt/fused.py builds it on first use with the system C++ compiler
// against jax.ffi.include_dir() and caches the library.
//
// The arithmetic is what XLA compiles funcopt's pure-JAX step into, operation for
// operation, so the results equal it bit for bit: XLA divides by a scalar as a multiply by
// its reciprocal, and on a CPU with FMA, LLVM contracts a multiply feeding an add into one
// fused multiply-add (the first product of a sum of two); MUL_ADD does the same here
// (the library is built with -march=native and -ffp-contract=off, so nothing else fuses):
//   m  = b1 m + (1 - b1) g                v  = b2 v + (1 - b2) g²
//   u  = (m · 1/w1) / (√(v · 1/w2) + eps)                      (w = 1 - βᵗ)
//   u  = lam p + u   (AdamW only)         p  = (-eta) u + p
// coef holds [b1, 1 - b1, b2, 1 - b2, w1, w2, eps, lam, -eta] per row: one row, or one
// per member of a vmapped ensemble (the buffers are then rows × n, row-major).
//
// FusedSegments (below) is the same pass, and those of gradient descent, Lion, RMSProp and
// AdaGrad, over a packed buffer whose gradient arrives leaf by leaf (a packed train step).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#ifdef __FMA__
#define MUL_ADD(a, b, c) std::fma(a, b, c)
#else
#define MUL_ADD(a, b, c) ((a) * (b) + (c))
#endif

static constexpr int64_t kCoefs = 9;
static constexpr int64_t kParallelFrom = 1 << 16;  // below this, threads cost more than they save

// One row: n elements with one set of coefficients. The decay is a template parameter so
// that the loop has no branch (a branch in it stops GCC from vectorising: 3x slower).
template <bool kDecay>
static void AdamPass(int64_t n, const float* c, const float* G, const float* P, const float* M,
                     const float* V, float* PO, float* MO, float* VO) {
  const float b1 = c[0], a1 = c[1], b2 = c[2], a2 = c[3];
  const float r1 = 1.0f / c[4], r2 = 1.0f / c[5];
  const float eps = c[6], lam = c[7], neg_eta = c[8];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = G[i];
    const float mi = MUL_ADD(b1, M[i], a1 * gi);
    const float vi = MUL_ADD(b2, V[i], a2 * (gi * gi));
    float u = (mi * r1) / (std::sqrt(vi * r2) + eps);
    if constexpr (kDecay) u = MUL_ADD(lam, P[i], u);
    MO[i] = mi;
    VO[i] = vi;
    PO[i] = MUL_ADD(neg_eta, u, P[i]);
  }
}

static ffi::Error FusedAdamImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> p,
                                ffi::Buffer<ffi::F32> m, ffi::Buffer<ffi::F32> v,
                                ffi::Buffer<ffi::F32> coef, ffi::RemainingArgs after,
                                bool decay,
                                ffi::ResultBuffer<ffi::F32> p_out,
                                ffi::ResultBuffer<ffi::F32> m_out,
                                ffi::ResultBuffer<ffi::F32> v_out) {
  const int64_t n = static_cast<int64_t>(g.element_count());
  const int64_t rows = static_cast<int64_t>(coef.element_count()) / kCoefs;
  if (rows < 1 || rows * kCoefs != static_cast<int64_t>(coef.element_count()) ||
      n % rows != 0 || p.element_count() != g.element_count() ||
      m.element_count() != g.element_count() || v.element_count() != g.element_count()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "fused_adam: buffers of mismatched sizes");
  }
  const int64_t k = n / rows;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * k;
    (decay ? AdamPass<true> : AdamPass<false>)(
        k, coef.typed_data() + r * kCoefs, g.typed_data() + at, p.typed_data() + at,
        m.typed_data() + at, v.typed_data() + at, p_out->typed_data() + at,
        m_out->typed_data() + at, v_out->typed_data() + at);
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FusedAdam, FusedAdamImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // g
                                  .Arg<ffi::Buffer<ffi::F32>>()  // p
                                  .Arg<ffi::Buffer<ffi::F32>>()  // m
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Arg<ffi::Buffer<ffi::F32>>()  // coef
                                  .RemainingArgs()  // ignored: what must be computed first
                                  .Attr<bool>("decay")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // p
                                  .Ret<ffi::Buffer<ffi::F32>>()  // m
                                  .Ret<ffi::Buffer<ffi::F32>>());  // v

// ---- packed buffers whose gradient arrives leaf by leaf ----------------------------------
//
// FusedSegments updates a packed buffer p and its state buffers in place (each output
// aliases its input) from one gradient per leaf: segment i, at offsets[i] of each row, takes
// the i-th gradient, so a packed train step never concatenates the leaves' gradients into a
// packed copy. `kind` is the optimizer; coef holds its scalars, one row of them per member of
// a vmapped ensemble; each operation is the one XLA compiles funcopt's pure-JAX step into:
//   kAdam, kAdamW  as AdamPass (states m, v)
//   kSgd           [-eta]              p = (-eta) g + p
//   kMomentum      [mu, -eta]          m = mu m + g;  p = (-eta) m + p
//   kNesterov      [mu, -eta]          m = mu m + g;  u = mu m + g;  p = (-eta) u + p
//   kLion          [b1, 1 - b1, b2, 1 - b2, lam, -eta]
//                  u = sign(b1 m + (1 - b1) g);  m = b2 m + (1 - b2) g;
//                  u = lam p + u;  p = (-eta) u + p
//   kRmsprop       [b, 1 - b, eps_root, eps, -eta]
//                  v = b v + (1 - b) g²;  p = (-eta) (g / (√(v + eps_root) + eps)) + p
//   kEma           [b, 1 - b, -eta]    m = b m + (1 - b) g;  p = (-eta) m + p
//   kAdagrad       [eps_root, eps, -eta]
//                  v = g g + v;  p = (-eta) (g / (√(v + eps_root) + eps)) + p
enum Kind : int64_t {
  kAdam = 0,
  kAdamW = 1,
  kSgd = 2,
  kMomentum = 3,
  kNesterov = 4,
  kLion = 5,
  kRmsprop = 6,
  kEma = 7,
  kAdagrad = 8,
};

struct KindInfo {
  int64_t coefs, states;  // scalars per row, state buffers beside p (-1: no such kind)
};

static KindInfo Info(int64_t kind) {
  switch (kind) {
    case kAdam:
    case kAdamW:
      return {kCoefs, 2};
    case kSgd:
      return {1, 0};
    case kMomentum:
    case kNesterov:
      return {2, 1};
    case kLion:
      return {6, 1};
    case kRmsprop:
      return {5, 1};
    case kEma:
    case kAdagrad:
      return {3, 1};
    default:
      return {0, -1};
  }
}

static void SgdPass(int64_t n, const float* c, const float* G, const float* P, float* PO) {
  const float neg_eta = c[0];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) PO[i] = MUL_ADD(neg_eta, G[i], P[i]);
}

template <bool kNesterov>
static void MomentumPass(int64_t n, const float* c, const float* G, const float* P,
                         const float* M, float* PO, float* MO) {
  const float mu = c[0], neg_eta = c[1];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = G[i];
    const float mi = MUL_ADD(mu, M[i], gi);
    float u = mi;
    if constexpr (kNesterov) u = MUL_ADD(mu, mi, gi);
    MO[i] = mi;
    PO[i] = MUL_ADD(neg_eta, u, P[i]);
  }
}

static void EmaPass(int64_t n, const float* c, const float* G, const float* P, const float* M,
                    float* PO, float* MO) {
  const float b = c[0], a = c[1], neg_eta = c[2];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) {
    const float mi = MUL_ADD(b, M[i], a * G[i]);
    MO[i] = mi;
    PO[i] = MUL_ADD(neg_eta, mi, P[i]);
  }
}

static void LionPass(int64_t n, const float* c, const float* G, const float* P, const float* M,
                     float* PO, float* MO) {
  const float b1 = c[0], a1 = c[1], b2 = c[2], a2 = c[3], lam = c[4], neg_eta = c[5];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = G[i], mi = M[i];
    const float d = MUL_ADD(b1, mi, a1 * gi);
    float u = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : d);  // jnp.sign: ±0 and NaN pass through
    MO[i] = MUL_ADD(b2, mi, a2 * gi);
    u = MUL_ADD(lam, P[i], u);
    PO[i] = MUL_ADD(neg_eta, u, P[i]);
  }
}

// RMSProp (kSum false: v = b v + (1 - b) g²) or AdaGrad (kSum: v = g g + v, as XLA contracts
// v + g²); c is [b, 1 - b, eps_root, eps, -eta] or [eps_root, eps, -eta].
template <bool kSum>
static void RootPass(int64_t n, const float* c, const float* G, const float* P, const float* V,
                     float* PO, float* VO) {
  const float* e = kSum ? c : c + 2;
  const float b = kSum ? 1.0f : c[0], a = kSum ? 1.0f : c[1];
  const float eps_root = e[0], eps = e[1], neg_eta = e[2];
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = G[i];
    float vi;
    if constexpr (kSum) {
      vi = MUL_ADD(gi, gi, V[i]);
    } else {
      vi = MUL_ADD(b, V[i], a * (gi * gi));
    }
    VO[i] = vi;
    PO[i] = MUL_ADD(neg_eta, gi / (std::sqrt(vi + eps_root) + eps), P[i]);
  }
}

static ffi::Error Invalid(const char* what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string("fused_segments: ") + what);
}

// rest: the state buffers (Info(kind).states of them), the segments' gradients (one per
// offset), then arrays that are only there to be computed first. outs: p, then the states.
static ffi::Error FusedSegmentsImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> coef,
                                    ffi::RemainingArgs rest, int64_t kind,
                                    ffi::Span<const int64_t> offsets, ffi::RemainingRets outs) {
  const KindInfo info = Info(kind);
  if (info.states < 0) return Invalid("unknown kind");
  const int64_t n = static_cast<int64_t>(p.element_count());
  const int64_t rows = static_cast<int64_t>(coef.element_count()) / info.coefs;
  const int64_t segments = static_cast<int64_t>(offsets.size());
  if (rows < 1 || rows * info.coefs != static_cast<int64_t>(coef.element_count()) ||
      n % rows != 0 || static_cast<int64_t>(rest.size()) < info.states + segments ||
      static_cast<int64_t>(outs.size()) != 1 + info.states) {
    return Invalid("buffers of mismatched sizes");
  }
  const int64_t k = n / rows;
  std::vector<const float*> state(info.states), grads(segments);
  std::vector<float*> out(1 + info.states);
  std::vector<int64_t> sizes(segments);
  for (int64_t j = 0; j < info.states; ++j) {
    auto s = rest.get<ffi::Buffer<ffi::F32>>(j);
    if (s.has_error()) return s.error();
    if (static_cast<int64_t>(s->element_count()) != n) return Invalid("a state of another size");
    state[j] = s->typed_data();
  }
  for (int64_t j = 0; j <= info.states; ++j) {
    auto o = outs.get<ffi::Buffer<ffi::F32>>(j);
    if (o.has_error()) return o.error();
    if (static_cast<int64_t>((*o)->element_count()) != n) return Invalid("an output's size");
    out[j] = (*o)->typed_data();
  }
  for (int64_t i = 0; i < segments; ++i) {
    auto g = rest.get<ffi::Buffer<ffi::F32>>(info.states + i);
    if (g.has_error()) return g.error();
    grads[i] = g->typed_data();
    sizes[i] = static_cast<int64_t>(g->element_count()) / rows;
    if (offsets[i] < 0 || offsets[i] + sizes[i] > k) return Invalid("a segment outside its buffer");
  }
  const float* P = p.typed_data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = coef.typed_data() + r * info.coefs;
    // Small segments in parallel with one another; each pass parallelises itself only
    // when it runs outside this region (a large segment).
#pragma omp parallel for schedule(dynamic, 16) if (k >= kParallelFrom)
    for (int64_t i = 0; i < segments; ++i) {
      const int64_t at = r * k + offsets[i], len = sizes[i];
      const float* g = grads[i] + r * len;
      switch (kind) {
        case kAdam:
        case kAdamW:
          (kind == kAdamW ? AdamPass<true> : AdamPass<false>)(
              len, c, g, P + at, state[0] + at, state[1] + at, out[0] + at, out[1] + at,
              out[2] + at);
          break;
        case kSgd:
          SgdPass(len, c, g, P + at, out[0] + at);
          break;
        case kMomentum:
        case kNesterov:
          (kind == kNesterov ? MomentumPass<true> : MomentumPass<false>)(
              len, c, g, P + at, state[0] + at, out[0] + at, out[1] + at);
          break;
        case kLion:
          LionPass(len, c, g, P + at, state[0] + at, out[0] + at, out[1] + at);
          break;
        case kRmsprop:
        case kAdagrad:
          (kind == kAdagrad ? RootPass<true> : RootPass<false>)(len, c, g, P + at, state[0] + at,
                                                                out[0] + at, out[1] + at);
          break;
        case kEma:
          EmaPass(len, c, g, P + at, state[0] + at, out[0] + at, out[1] + at);
          break;
      }
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FusedSegments, FusedSegmentsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // p
                                  .Arg<ffi::Buffer<ffi::F32>>()  // coef
                                  .RemainingArgs()  // states, gradients, then ignored
                                  .Attr<int64_t>("kind")
                                  .Attr<ffi::Span<const int64_t>>("offsets")
                                  .RemainingRets());  // p, then the states
