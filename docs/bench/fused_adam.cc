// Issue 12 item 5, a measurement (not part of the package): Adam as one pass over a flat
// float32 buffer behind an XLA FFI custom call. Reads g, p, m, v once and writes p, m, v
// in place (the outputs alias the inputs): 28 bytes per parameter, torch's fused Adam's
// floor. coef = [lr / (1 - b1^t), 1 / (1 - b2^t)]. docs/bench/fused_adam.py builds it:
//   c++ -O3 -march=native -fno-math-errno -fopenmp -shared -fPIC -std=c++17 \
//       -I$(python -c "import jax.ffi; print(jax.ffi.include_dir())") fused_adam.cc
// (-fno-math-errno matters: without it sqrt is not vectorised and the pass is 2.4x slower).
#include <cmath>
#include <cstdint>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

static ffi::Error FusedAdamImpl(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> p,
                                ffi::Buffer<ffi::F32> m, ffi::Buffer<ffi::F32> v,
                                ffi::Buffer<ffi::F32> coef, float b1, float b2, float eps,
                                ffi::ResultBuffer<ffi::F32> po, ffi::ResultBuffer<ffi::F32> mo,
                                ffi::ResultBuffer<ffi::F32> vo) {
  const int64_t n = static_cast<int64_t>(g.element_count());
  const float* G = g.typed_data();
  const float* P = p.typed_data();
  const float* M = m.typed_data();
  const float* V = v.typed_data();
  float* PO = po->typed_data();
  float* MO = mo->typed_data();
  float* VO = vo->typed_data();
  const float step = coef.typed_data()[0], c2 = coef.typed_data()[1];
  const float a1 = 1.0f - b1, a2 = 1.0f - b2;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = G[i];
    const float mi = b1 * M[i] + a1 * gi;
    const float vi = b2 * V[i] + a2 * gi * gi;
    MO[i] = mi;
    VO[i] = vi;
    PO[i] = P[i] - step * mi / (std::sqrt(vi * c2) + eps);
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FusedAdam, FusedAdamImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("eps")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
