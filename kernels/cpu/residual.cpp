#include "kernels/cpu/residual.h"

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

template <typename T>
void residual_forward(T* out, const T* x, const T* y, size_t n) {
#pragma omp parallel for simd if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}

template void residual_forward<float>(float*, const float*, const float*, size_t);
template void residual_forward<double>(double*, const double*, const double*, size_t);

}  // namespace opd::cpu
