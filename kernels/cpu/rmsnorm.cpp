#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

// Same order of operations as Hugging Face's Qwen3RMSNorm: w * (x * rsqrt(mean(x^2) + eps)).
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int C, float eps) {
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (size_t)n * C;
    T* yr = out + (size_t)n * C;
    T ss = 0;
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const T r = T(1) / std::sqrt(ss / C + T(eps));
    for (int c = 0; c < C; ++c) yr[c] = w[c] * (xr[c] * r);
    rstd[n] = r;
  }
}

// With r = rstd: dx_j = r * (w_j dy_j - x_j * r^2 * sum_c(w_c dy_c x_c) / C), dw_c = sum_n dy_c x_c r.
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (size_t)n * C;
    const T* dy = dout + (size_t)n * C;
    T* dxr = dx + (size_t)n * C;
    const T r = rstd[n];
    T dot = 0;
    for (int c = 0; c < C; ++c) dot += w[c] * dy[c] * xr[c];
    const T k = dot * r * r / C;
    for (int c = 0; c < C; ++c) dxr[c] += r * (w[c] * dy[c] - xr[c] * k);
  }
  if (!dw) return;  // a frozen weight
  // dw sums over rows; threads split columns instead, so each sum runs in row order whatever the
  // thread count. Blocks of columns keep the row-major reads sequential.
  constexpr int kBlock = 64;
  const int blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
    T s[kBlock] = {};
    for (int n = 0; n < N; ++n) {
      const T* xr = x + (size_t)n * C;
      const T* dy = dout + (size_t)n * C;
      const T r = rstd[n];
      for (int c = c0; c < c1; ++c) s[c - c0] += dy[c] * xr[c] * r;
    }
    for (int c = c0; c < c1; ++c) dw[c] += s[c - c0];
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int, float);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int,
                                      int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*,
                                       const double*, int, int);

}  // namespace opd::cpu
