#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

namespace {

// The angles follow Hugging Face's float32 arithmetic step by step (inv_freq = 1 / theta^(2i/D),
// angle = pos * inv_freq, each rounded to T): at positions in the thousands a more exact angle
// would differ from theirs by ~1e-4 and the logits would no longer match transformers'. Only pow,
// cos and sin go through double, which rounds them correctly, as near to PyTorch's as possible.
template <typename T>
std::vector<T> inv_freq(int D, float theta) {
  std::vector<T> f(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    const T e = T(2 * i) / T(D);
    f[i] = T(1) / T(std::pow(double(T(theta)), double(e)));
  }
  return f;
}

// sign = +1 rotates by +angle (forward), -1 by -angle (backward: the transpose of a rotation).
template <typename T>
void rotate(T* x, const int* pos, int N, int H, int D, float theta, T sign) {
  OPD_REQUIRE(D > 0 && D % 2 == 0, "rope: head dimension must be even and positive, got ", D);
  const int half = D / 2;
  const std::vector<T> freq = inv_freq<T>(D, theta);
#pragma omp parallel if ((size_t)N * H * D >= kParallelMin)
  {
    std::vector<T> cs(half), sn(half);
#pragma omp for
    for (int n = 0; n < N; ++n) {
      for (int i = 0; i < half; ++i) {
        const T angle = T(pos[n]) * freq[i];
        cs[i] = T(std::cos(double(angle)));
        sn[i] = sign * T(std::sin(double(angle)));
      }
      for (int h = 0; h < H; ++h) {
        T* v = x + ((size_t)n * H + h) * D;
        for (int i = 0; i < half; ++i) {
          const T x1 = v[i], x2 = v[i + half];
          v[i] = x1 * cs[i] - x2 * sn[i];
          v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta) {
  rotate(x, pos, N, H, D, theta, T(1));
}

template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta) {
  rotate(dx, pos, N, H, D, theta, T(-1));
}

template void rope_forward<float>(float*, const int*, int, int, int, float);
template void rope_forward<double>(double*, const int*, int, int, int, float);
template void rope_backward<float>(float*, const int*, int, int, int, float);
template void rope_backward<double>(double*, const int*, int, int, int, float);

}  // namespace opd::cpu
