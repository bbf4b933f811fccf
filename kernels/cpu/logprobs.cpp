#include "kernels/cpu/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

namespace {

void check_shard(const char* op, int N, int Vl, int v0) {
  OPD_REQUIRE(N >= 0 && Vl > 0 && v0 >= 0, op, ": need N >= 0, Vl > 0 and v0 >= 0, got N=", N, " Vl=", Vl, " v0=", v0);
}

}  // namespace

template <typename T>
void entropy_shard(T* out, const T* logits, const T* lse, int N, int Vl) {
  check_shard("entropy_shard", N, Vl, 0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    T h = 0;
    for (int v = 0; v < Vl; ++v) {
      const T lp = x[v] - lse[n];
      const T p = std::exp(lp);
      if (p > 0) h -= p * lp;  // as logprobs_forward: no mass, no term
    }
    out[n] = h;
  }
}

template <typename T>
void logprobs_backward_shard(T* dlogits, const T* dlogp, const T* logits, const T* lse, const int* targets, int N,
                             int Vl, int v0) {
  check_shard("logprobs_backward_shard", N, Vl, v0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const T* x = logits + static_cast<size_t>(n) * Vl;
    T* dx = dlogits + static_cast<size_t>(n) * Vl;
    const T d = dlogp[n];
    for (int v = 0; v < Vl; ++v) dx[v] -= d * std::exp(x[v] - lse[n]);
    // Same order as logprobs_backward: the softmax part first, then the one-hot.
    const int local = targets[n] - v0;
    if (local >= 0 && local < Vl) dx[local] += d;
  }
}

template <typename T>
void log_softmax_shard(T* out, const T* logits, const T* lse, int N, int Vl) {
  check_shard("log_softmax_shard", N, Vl, 0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    T* y = out + static_cast<size_t>(n) * Vl;
    for (int v = 0; v < Vl; ++v) y[v] = x[v] - lse[n];
  }
}

template <typename T>
void topk_shard_candidates(int* ids, T* logp, const T* logits, const T* lse, int N, int Vl, int v0, int K) {
  check_shard("topk_shard_candidates", N, Vl, v0);
  OPD_REQUIRE(K >= 1, "topk_shard_candidates: K = ", K, " must be >= 1");
  const int kk = std::min(K, Vl);
#pragma omp parallel if (static_cast<size_t>(N) * Vl >= kParallelMin)
  {
    std::vector<int> order(Vl);
    std::vector<T> lp(Vl);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const T* x = logits + static_cast<size_t>(n) * Vl;
      int* id = ids + static_cast<size_t>(n) * K;
      T* out = logp + static_cast<size_t>(n) * K;
      // Ranked by the rounded log-prob, not the logit: two logits a rounding apart can share a
      // log-prob, and the merge (which sees only log-probs) then wants the lower id.
      for (int v = 0; v < Vl; ++v) lp[v] = x[v] - lse[n];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                        [&lp](int a, int b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
      for (int j = 0; j < kk; ++j) {
        id[j] = v0 + order[j];
        out[j] = lp[order[j]];
      }
      for (int j = kk; j < K; ++j) {
        id[j] = -1;
        out[j] = -std::numeric_limits<T>::infinity();
      }
    }
  }
}

template <typename T>
void topk_merge_shards(int* ids, T* logp, const int* cand_ids, const T* cand_logp, const int* extra,
                       const T* extra_logp, bool skip_without_extra, int R, int N, int K) {
  OPD_REQUIRE(R > 0 && N >= 0 && K >= 1, "topk_merge_shards: need R > 0 shards, N >= 0 and K >= 1, got R=", R,
              " N=", N, " K=", K);
  const size_t block = static_cast<size_t>(N) * K;
  // Checked before the parallel loop: an exception must not escape an OpenMP region.
  for (int n = 0; n < N; ++n) {
    if (skip_without_extra && extra[n] < 0) continue;
    int have = 0;
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < K; ++j) have += cand_ids[r * block + static_cast<size_t>(n) * K + j] >= 0;
    OPD_REQUIRE(have >= K, "topk_merge_shards: row ", n, " has ", have, " candidates over ", R,
                " shards, fewer than K = ", K, " (is K above the vocabulary size?)");
  }
  const int K1 = K + 1;
#pragma omp parallel if (static_cast<size_t>(N) * R * K >= kParallelMin)
  {
    std::vector<size_t> order;
    order.reserve(static_cast<size_t>(R) * K);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      int* id = ids + static_cast<size_t>(n) * K1;
      T* lp = logp + static_cast<size_t>(n) * K1;
      std::fill(id, id + K1, -1);
      std::fill(lp, lp + K1, T(0));
      if (skip_without_extra && extra[n] < 0) continue;
      order.clear();
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < K; ++j) {
          const size_t i = r * block + static_cast<size_t>(n) * K + j;
          if (cand_ids[i] >= 0) order.push_back(i);
        }
      // topk_logprobs' order (most likely first, ties lower id first), on the shards' log-probs.
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [cand_ids, cand_logp](size_t a, size_t b) {
        return cand_logp[a] > cand_logp[b] || (cand_logp[a] == cand_logp[b] && cand_ids[a] < cand_ids[b]);
      });
      bool extra_in_top = false;
      for (int j = 0; j < K; ++j) {
        id[j] = cand_ids[order[j]];
        lp[j] = cand_logp[order[j]];
        extra_in_top = extra_in_top || id[j] == extra[n];
      }
      if (extra[n] >= 0 && !extra_in_top) {
        id[K] = extra[n];
        lp[K] = extra_logp[n];
      }
    }
  }
}

#define OPD_INSTANTIATE_SHARD_OPS(T)                                                                         \
  template void entropy_shard<T>(T*, const T*, const T*, int, int);                                        \
  template void logprobs_backward_shard<T>(T*, const T*, const T*, const T*, const int*, int, int, int);   \
  template void log_softmax_shard<T>(T*, const T*, const T*, int, int);                                    \
  template void topk_shard_candidates<T>(int*, T*, const T*, const T*, int, int, int, int);                \
  template void topk_merge_shards<T>(int*, T*, const int*, const T*, const int*, const T*, bool, int, int, int);
OPD_INSTANTIATE_SHARD_OPS(float)
OPD_INSTANTIATE_SHARD_OPS(double)
#undef OPD_INSTANTIATE_SHARD_OPS

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
