#include "kernels/cpu/logprobs.h"

#include <cmath>

#include "core/error.h"

namespace opd::cpu {

namespace {

// log_softmax(x)[v] = (x[v] - mx) - lse: the max is taken out so that no exp overflows, and kept
// apart from lse so that large logits lose no precision to the addition.
template <typename T>
void max_and_lse(T& mx, T& lse, const T* x, int V) {
  mx = x[0];
  for (int v = 1; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
  T sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(x[v] - mx);
  lse = std::log(sum);
}

// Below this many elements a parallel region costs more than the work it splits.
constexpr size_t kParallelMin = size_t(1) << 14;

void check_targets(const int* targets, int N, int V) {
  OPD_REQUIRE(N >= 0 && V > 0, "logprobs: need N >= 0 and V > 0, got N=", N, " V=", V);
  // Checked before the parallel loop: an exception must not escape an OpenMP region.
  for (int n = 0; n < N; ++n)
    OPD_REQUIRE(targets[n] < V, "logprobs: targets[", n, "] = ", targets[n], " is not below the vocabulary size ", V);
}

}  // namespace

template <typename T>
void logprobs_forward(T* logp, T* entropy, const T* logits, const int* targets, int N, int V) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * V;
    if (targets[n] < 0) {
      logp[n] = 0;
      if (entropy) entropy[n] = 0;
      continue;
    }
    T mx, lse;
    max_and_lse(mx, lse, x, V);
    logp[n] = (x[targets[n]] - mx) - lse;
    if (entropy) {
      T h = 0;
      for (int v = 0; v < V; ++v) {
        const T lp = (x[v] - mx) - lse;
        h -= std::exp(lp) * lp;
      }
      entropy[n] = h;
    }
  }
}

template <typename T>
void logprobs_backward(T* dlogits, const T* dlogp, const T* logits, const int* targets, int N, int V) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const T* x = logits + static_cast<size_t>(n) * V;
    T* dx = dlogits + static_cast<size_t>(n) * V;
    T mx, lse;
    max_and_lse(mx, lse, x, V);
    const T d = dlogp[n];
    for (int v = 0; v < V; ++v) dx[v] -= d * std::exp((x[v] - mx) - lse);
    dx[targets[n]] += d;
  }
}

template void logprobs_forward<float>(float*, float*, const float*, const int*, int, int);
template void logprobs_forward<double>(double*, double*, const double*, const int*, int, int);
template void logprobs_backward<float>(float*, const float*, const float*, const int*, int, int);
template void logprobs_backward<double>(double*, const double*, const double*, const int*, int, int);

}  // namespace opd::cpu
