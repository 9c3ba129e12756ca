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
// FusedAdamSegments is the same pass over a packed buffer whose gradient arrives leaf by
// leaf (a packed train step): segment i of p, m, v, at offsets[i], takes the i-th gradient,
// so the leaves' gradients are never concatenated into a packed copy.
#include <cmath>
#include <cstdint>
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

static ffi::Error FusedAdamSegmentsImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> m,
                                        ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::F32> coef,
                                        ffi::RemainingArgs rest,
                                        ffi::Span<const int64_t> offsets, bool decay,
                                        ffi::ResultBuffer<ffi::F32> p_out,
                                        ffi::ResultBuffer<ffi::F32> m_out,
                                        ffi::ResultBuffer<ffi::F32> v_out) {
  const int64_t n = static_cast<int64_t>(p.element_count());
  const int64_t rows = static_cast<int64_t>(coef.element_count()) / kCoefs;
  const int64_t segments = static_cast<int64_t>(offsets.size());
  if (rows < 1 || n % rows != 0 || static_cast<int64_t>(rest.size()) < segments ||
      m.element_count() != p.element_count() || v.element_count() != p.element_count()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "fused_adam_segments: buffers of mismatched sizes");
  }
  const int64_t k = n / rows;
  // The gradients come first among the remaining arguments; what follows is only ordering.
  std::vector<const float*> grads(segments);
  std::vector<int64_t> sizes(segments);
  for (int64_t i = 0; i < segments; ++i) {
    auto g = rest.get<ffi::Buffer<ffi::F32>>(i);
    if (g.has_error()) return g.error();
    grads[i] = g->typed_data();
    sizes[i] = static_cast<int64_t>(g->element_count()) / rows;
    if (offsets[i] < 0 || offsets[i] + sizes[i] > k) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                        "fused_adam_segments: a segment outside its buffer");
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = coef.typed_data() + r * kCoefs;
    // Small segments in parallel with one another; each pass parallelises itself only
    // when it runs outside this region (a large segment).
#pragma omp parallel for schedule(dynamic, 16) if (k >= kParallelFrom)
    for (int64_t i = 0; i < segments; ++i) {
      const int64_t at = r * k + offsets[i];
      (decay ? AdamPass<true> : AdamPass<false>)(
          sizes[i], c, grads[i] + r * sizes[i], p.typed_data() + at, m.typed_data() + at,
          v.typed_data() + at, p_out->typed_data() + at, m_out->typed_data() + at,
          v_out->typed_data() + at);
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FusedAdamSegments, FusedAdamSegmentsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // p
                                  .Arg<ffi::Buffer<ffi::F32>>()  // m
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Arg<ffi::Buffer<ffi::F32>>()  // coef
                                  .RemainingArgs()  // the segments' gradients, then ignored
                                  .Attr<ffi::Span<const int64_t>>("offsets")
                                  .Attr<bool>("decay")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // p
                                  .Ret<ffi::Buffer<ffi::F32>>()  // m
                                  .Ret<ffi::Buffer<ffi::F32>>());  // v
