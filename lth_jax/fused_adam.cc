// One masked Adam step over one weight array, in one pass: the kernel of
// optimizer.fused_adam_cpu (lth_jax/fused_adam.py builds it, registers it with
// XLA's FFI and documents its arithmetic).
//
// Built with -ffp-contract=off, and without -ffast-math: every operation is
// one IEEE float32 operation (no fused multiply-adds), so the results do not
// depend on the vector instructions the compiler picks.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// h: -lr, b1, 1 - b1, b2, 1 - b2, 1 - b1^t, 1 - b2^t, eps (t: the step count after this step).
// The update is the expression XLA compiles optax.adam to:
// -lr * m / ((1 - b1^t) * (sqrt(v / (1 - b2^t)) + eps)).
static void Step(int64_t n, const float* p, const float* mu, const float* nu, const float* g,
                 const uint8_t* mask, const float* h, float* p_out, float* mu_out, float* nu_out) {
  const float neg_lr = h[0], b1 = h[1], c1 = h[2], b2 = h[3], c2 = h[4];
  const float bc1 = h[5], bc2 = h[6], eps = h[7];
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    const bool alive = mask[i] != 0;
    const float gl = g[i];  // loaded unconditionally, so that the loop vectorizes
    const float gi = alive ? gl : 0.0f;
    const float m = c1 * gi + b1 * mu[i];
    const float v = c2 * (gi * gi) + b2 * nu[i];
    const float u = neg_lr * (m / (bc1 * (std::sqrt(v / bc2) + eps)));
    p_out[i] = p[i] + (alive ? u : 0.0f);
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

static ffi::Error MaskedAdamImpl(ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> mu,
                                 ffi::Buffer<ffi::F32> nu, ffi::Buffer<ffi::F32> g,
                                 ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> hyper,
                                 ffi::Buffer<ffi::PRED> ok, ffi::ResultBuffer<ffi::F32> p_out,
                                 ffi::ResultBuffer<ffi::F32> mu_out,
                                 ffi::ResultBuffer<ffi::F32> nu_out) {
  const int64_t n = p.element_count();
  if (mu.element_count() != n || nu.element_count() != n || g.element_count() != n ||
      mask.element_count() != n || hyper.element_count() != 8) {
    return ffi::Error::InvalidArgument("lth_jax_masked_adam: operands of different sizes");
  }
  // ok false (a non-finite loss, or a run that already stopped): nothing changes.
  if (!ok.typed_data()[0]) {
    const float* src[3] = {p.typed_data(), mu.typed_data(), nu.typed_data()};
    float* dst[3] = {p_out->typed_data(), mu_out->typed_data(), nu_out->typed_data()};
    for (int k = 0; k < 3; ++k) {
      if (dst[k] != src[k]) std::memcpy(dst[k], src[k], sizeof(float) * n);
    }
    return ffi::Error::Success();
  }
  Step(n, p.typed_data(), mu.typed_data(), nu.typed_data(), g.typed_data(),
       reinterpret_cast<const uint8_t*>(mask.typed_data()),
       hyper.typed_data(), p_out->typed_data(), mu_out->typed_data(), nu_out->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LthJaxMaskedAdam, MaskedAdamImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
