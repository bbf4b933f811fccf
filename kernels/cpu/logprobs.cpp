#include "kernels/cpu/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

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
        const T p = std::exp(lp);
        if (p > 0) h -= p * lp;  // a token with no mass (a -inf logit) adds nothing, not 0 * -inf
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

template <typename T>
void log_softmax_forward(T* out, const T* logits, int N, int V) {
  OPD_REQUIRE(N >= 0 && V > 0, "log_softmax: need N >= 0 and V > 0, got N=", N, " V=", V);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * V;
    T* y = out + static_cast<size_t>(n) * V;
    T mx, lse;
    max_and_lse(mx, lse, x, V);
    for (int v = 0; v < V; ++v) y[v] = (x[v] - mx) - lse;
  }
}

template <typename T>
void topk_logprobs(int* ids, T* logp, const T* logits, const int* extra, bool skip_without_extra, int N, int V, int K) {
  OPD_REQUIRE(K >= 1 && K <= V, "topk_logprobs: K = ", K, " must be in [1, V = ", V, "]");
  check_targets(extra, N, V);
  const int K1 = K + 1;
#pragma omp parallel if (static_cast<size_t>(N) * V >= kParallelMin)
  {
    std::vector<int> order(V);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const T* x = logits + static_cast<size_t>(n) * V;
      int* id = ids + static_cast<size_t>(n) * K1;
      T* lp = logp + static_cast<size_t>(n) * K1;
      std::fill(id, id + K1, -1);
      std::fill(lp, lp + K1, T(0));
      if (skip_without_extra && extra[n] < 0) continue;
      T mx, lse;
      max_and_lse(mx, lse, x, V);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [x](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
      bool extra_in_top = false;
      for (int j = 0; j < K; ++j) {
        id[j] = order[j];
        lp[j] = (x[order[j]] - mx) - lse;
        extra_in_top = extra_in_top || order[j] == extra[n];
      }
      if (extra[n] >= 0 && !extra_in_top) {
        id[K] = extra[n];
        lp[K] = (x[extra[n]] - mx) - lse;
      }
    }
  }
}

template <typename T>
void logprobs_shard_stats(T* mx, T* sumexp, T* target_logit, const T* logits, const int* targets, int N, int Vlocal,
                          int v0) {
  OPD_REQUIRE(N >= 0 && Vlocal > 0 && v0 >= 0, "logprobs_shard_stats: need N >= 0, Vlocal > 0 and v0 >= 0, got N=", N,
              " Vlocal=", Vlocal, " v0=", v0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vlocal >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vlocal;
    T m = x[0];
    for (int v = 1; v < Vlocal; ++v) m = x[v] > m ? x[v] : m;
    T sum = 0;
    for (int v = 0; v < Vlocal; ++v) sum += std::exp(x[v] - m);
    mx[n] = m;
    sumexp[n] = sum;
    const int local = targets[n] - v0;
    target_logit[n] = targets[n] >= 0 && local >= 0 && local < Vlocal ? x[local] : T(0);
  }
}

template <typename T>
void combine_shard_stats(T* logp, T* lse, const T* mx, const T* sumexp, const T* target_logit, const int* targets,
                         int R, int N) {
  OPD_REQUIRE(R > 0 && N >= 0, "combine_shard_stats: need R > 0 shards and N >= 0, got R=", R, " N=", N);
  for (int n = 0; n < N; ++n) {
    T m = mx[n];
    for (int r = 1; r < R; ++r) m = mx[static_cast<size_t>(r) * N + n] > m ? mx[static_cast<size_t>(r) * N + n] : m;
    T s = 0, tl = 0;
    for (int r = 0; r < R; ++r) {
      const size_t i = static_cast<size_t>(r) * N + n;
      // A shard whose logits are all -inf holds no mass (and exp(-inf - -inf) would be NaN).
      if (mx[i] != -INFINITY) s += sumexp[i] * std::exp(mx[i] - m);
      tl += target_logit[i];  // only the shard holding the target adds a nonzero
    }
    const T l = std::log(s);
    if (lse) lse[n] = m + l;
    logp[n] = targets[n] < 0 ? T(0) : (tl - m) - l;
  }
}

template void logprobs_shard_stats<float>(float*, float*, float*, const float*, const int*, int, int, int);
template void logprobs_shard_stats<double>(double*, double*, double*, const double*, const int*, int, int, int);
template void combine_shard_stats<float>(float*, float*, const float*, const float*, const float*, const int*, int,
                                         int);
template void combine_shard_stats<double>(double*, double*, const double*, const double*, const double*, const int*,
                                          int, int);
template void log_softmax_forward<float>(float*, const float*, int, int);
template void log_softmax_forward<double>(double*, const double*, int, int);
template void topk_logprobs<float>(int*, float*, const float*, const int*, bool, int, int, int);
template void topk_logprobs<double>(int*, double*, const double*, const int*, bool, int, int, int);
template void logprobs_forward<float>(float*, float*, const float*, const int*, int, int);
template void logprobs_forward<double>(double*, double*, const double*, const int*, int, int);
template void logprobs_backward<float>(float*, const float*, const float*, const int*, int, int);
template void logprobs_backward<double>(double*, const double*, const double*, const int*, int, int);

}  // namespace opd::cpu
