#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace opd::cpu {

// Below this many elements, waking the OpenMP threads costs more than the loop itself.
constexpr size_t kParallelMin = 1 << 14;

template <typename T>
void embedding_forward(T* out, const int* tokens, const T* table, int N, int C) {
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) std::memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, sizeof(T) * C);
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int* tokens, int N, int V, int C) {
  for (int n = 0; n < N; ++n)
    OPD_REQUIRE(tokens[n] >= 0 && tokens[n] < V, "embedding_backward: token ", tokens[n], " at position ", n,
                " is outside the vocabulary [0, ", V, ")");
  // Rows repeat (the same token many times), so threads split columns, never rows: every element
  // then sums its contributions in the order n = 0..N-1 whatever the thread count.
  constexpr int kBlock = 64;  // columns per task: a cache line or more, so threads never share one
  const int blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int n = 0; n < N; ++n) {
      T* dst = dtable + (size_t)tokens[n] * C;
      const T* src = dout + (size_t)n * C;
      for (int c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

template <typename T>
void embedding_forward_shard(T* out, const int* tokens, const T* table, int N, int C, int v0, int Vl) {
  OPD_REQUIRE(v0 >= 0 && Vl > 0, "embedding_forward_shard: shard [", v0, ", ", v0 + Vl, ") is empty or negative");
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const int row = tokens[n] - v0;
    if (row >= 0 && row < Vl)
      std::memcpy(out + (size_t)n * C, table + (size_t)row * C, sizeof(T) * C);
    else
      std::fill(out + (size_t)n * C, out + (size_t)(n + 1) * C, T(0));
  }
}

template <typename T>
void embedding_backward_shard(T* dtable, const T* dout, const int* tokens, int N, int C, int v0, int Vl) {
  OPD_REQUIRE(v0 >= 0 && Vl > 0, "embedding_backward_shard: shard [", v0, ", ", v0 + Vl, ") is empty or negative");
  // As in embedding_backward: threads split columns, so every element sums in the order of n.
  constexpr int kBlock = 64;
  const int blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if ((size_t)N * C >= kParallelMin)
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int n = 0; n < N; ++n) {
      const int row = tokens[n] - v0;
      if (row < 0 || row >= Vl) continue;
      T* dst = dtable + (size_t)row * C;
      const T* src = dout + (size_t)n * C;
      for (int c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

template void embedding_forward_shard<float>(float*, const int*, const float*, int, int, int, int);
template void embedding_forward_shard<double>(double*, const int*, const double*, int, int, int, int);
template void embedding_backward_shard<float>(float*, const float*, const int*, int, int, int, int);
template void embedding_backward_shard<double>(double*, const double*, const int*, int, int, int, int);
template void embedding_forward<float>(float*, const int*, const float*, int, int);
template void embedding_forward<double>(double*, const int*, const double*, int, int);
template void embedding_backward<float>(float*, const float*, const int*, int, int, int);
template void embedding_backward<double>(double*, const double*, const int*, int, int, int);

}  // namespace opd::cpu
