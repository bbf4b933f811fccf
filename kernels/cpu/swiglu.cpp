#include "kernels/cpu/swiglu.h"

#include <cmath>

#include "kernels/cpu/fast_exp.h"

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

// silu written as g / (1 + exp(-g)), as PyTorch computes it; exp overflowing to inf gives -0, not NaN.
template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, size_t n) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) out[i] = gate[i] / (T(1) + exp_fast(-gate[i])) * up[i];
}

// d silu/dg = s * (1 + g * (1 - s)) with s = sigmoid(g).
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    // Read everything first: callers may overwrite a consumed buffer (dgate over gate, dup over up).
    const T g = gate[i], u = up[i], d = dout[i];
    const T s = T(1) / (T(1) + exp_fast(-g));
    dgate[i] = d * u * s * (T(1) + g * (T(1) - s));
    dup[i] = d * g * s;
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, size_t);
template void swiglu_forward<double>(double*, const double*, const double*, size_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, size_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, size_t);

}  // namespace opd::cpu
