#include "kernels/cpu/cross_entropy.h"

#include <cmath>

#include "core/error.h"

namespace opd::cpu {

// Below this many elements a parallel region costs more than the work it splits.
constexpr size_t kParallelMin = size_t(1) << 14;

template <typename T>
void cross_entropy_forward_backward(T* losses, T* dlogits, const T* logits, const int* targets, T scale, int N,
                                    int V) {
  OPD_REQUIRE(N >= 0 && V > 0, "cross_entropy: need N >= 0 and V > 0, got N=", N, " V=", V);
  // Checked before the parallel loop: an exception must not escape an OpenMP region.
  for (int n = 0; n < N; ++n)
    OPD_REQUIRE(targets[n] < V, "cross_entropy: targets[", n, "] = ", targets[n], " is not below the vocabulary size ",
                V);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * V;
    T* dx = dlogits ? dlogits + static_cast<size_t>(n) * V : nullptr;
    const int t = targets[n];
    if (t < 0) {
      losses[n] = 0;
      if (dx)
        for (int v = 0; v < V; ++v) dx[v] = 0;
      continue;
    }
    T mx = x[0];
    for (int v = 1; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
    T sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - mx);
    // Kept apart from mx so that large logits lose no precision to the addition.
    const T lse = std::log(sum);
    losses[n] = lse - (x[t] - mx);
    if (dx) {
      for (int v = 0; v < V; ++v) dx[v] = scale * std::exp((x[v] - mx) - lse);
      dx[t] -= scale;
    }
  }
}

template void cross_entropy_forward_backward<float>(float*, float*, const float*, const int*, float, int, int);
template void cross_entropy_forward_backward<double>(double*, double*, const double*, const int*, double, int, int);

}  // namespace opd::cpu
