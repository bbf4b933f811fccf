#include "kernels/cpu/reverse_kl.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace opd::cpu {

// Below this many elements a parallel region costs more than the work it splits.
constexpr size_t kParallelMin = size_t(1) << 14;

template <typename T>
void reverse_kl_sampled(T* k, const T* logp_old, const T* logp_teacher, int N) {
  for (int n = 0; n < N; ++n) k[n] = logp_old[n] - logp_teacher[n];
}

template <typename T>
void policy_gradient_loss(T* loss, T* dlogp, const T* logp, const T* logp_old, const T* adv, const T* w, int N) {
  for (int n = 0; n < N; ++n) {
    const T l = -adv[n] * std::exp(logp[n] - logp_old[n]) * w[n];
    loss[n] = l;
    dlogp[n] = l;
  }
}

template <typename T>
void reverse_kl_full(T* kl, T* dlogits, const T* logits, const T* logp_teacher, const T* scale, int N, int V) {
  OPD_REQUIRE(N >= 0 && V > 0, "reverse_kl_full: need N >= 0 and V > 0, got N=", N, " V=", V);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * V;
    const T* lt = logp_teacher + static_cast<size_t>(n) * V;
    T mx = x[0];
    for (int v = 1; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
    T sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - mx);
    // Kept apart from mx so that large logits lose no precision to the addition.
    const T lse = std::log(sum);
    // A token the student gives no mass adds nothing, even where the teacher's log-prob is -inf.
    T acc = 0;
    for (int v = 0; v < V; ++v) {
      const T ls = (x[v] - mx) - lse;
      const T p = std::exp(ls);
      if (p > 0) acc += p * (ls - lt[v]);
    }
    kl[n] = acc;
    if (dlogits) {
      T* dx = dlogits + static_cast<size_t>(n) * V;
      const T s = scale[n];
      for (int v = 0; v < V; ++v) {
        const T ls = (x[v] - mx) - lse;
        const T p = std::exp(ls);
        dx[v] = p > 0 ? s * p * ((ls - lt[v]) - acc) : T(0);
      }
    }
  }
}

template <typename T>
void reverse_kl_topk(T* kl, T* dlogits, const T* logits, const int* ids, const T* logp_teacher, const T* scale,
                     int N, int V, int K1) {
  OPD_REQUIRE(N >= 0 && V > 0 && K1 > 0, "reverse_kl_topk: need N >= 0, V > 0 and K1 > 0, got N=", N, " V=", V,
              " K1=", K1);
  // Checked before the parallel loop (an exception must not escape an OpenMP region); the stamp
  // finds a duplicate id in one pass over the row instead of comparing all pairs.
  std::vector<int> stamp(V, -1);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < K1; ++j) {
      const int id = ids[static_cast<size_t>(n) * K1 + j];
      if (id < 0) continue;
      OPD_REQUIRE(id < V, "reverse_kl_topk: ids[", n, ", ", j, "] = ", id, " is not below the vocabulary size ", V);
      OPD_REQUIRE(stamp[id] != n, "reverse_kl_topk: token ", id, " appears twice in row ", n, " of ids");
      stamp[id] = n;
    }
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * V;
    const int* id = ids + static_cast<size_t>(n) * K1;
    const T* lt = logp_teacher + static_cast<size_t>(n) * K1;
    T* dx = dlogits ? dlogits + static_cast<size_t>(n) * V : nullptr;
    if (dx)
      for (int v = 0; v < V; ++v) dx[v] = 0;
    // Both renormalisations over S are log-sum-exps over S alone; the rest of the row cancels.
    T mxs = 0, mxt = 0;
    bool any = false;
    for (int j = 0; j < K1; ++j) {
      if (id[j] < 0) continue;
      const T xs = x[id[j]];
      mxs = !any || xs > mxs ? xs : mxs;
      mxt = !any || lt[j] > mxt ? lt[j] : mxt;
      any = true;
    }
    if (!any) {
      kl[n] = 0;
      continue;
    }
    T ss = 0, st = 0;
    for (int j = 0; j < K1; ++j) {
      if (id[j] < 0) continue;
      ss += std::exp(x[id[j]] - mxs);
      st += std::exp(lt[j] - mxt);
    }
    const T lses = std::log(ss), lset = std::log(st);
    T acc = 0;
    for (int j = 0; j < K1; ++j) {
      if (id[j] < 0) continue;
      const T ls = (x[id[j]] - mxs) - lses;
      const T q = std::exp(ls);
      if (q > 0) acc += q * (ls - ((lt[j] - mxt) - lset));
    }
    kl[n] = acc;
    if (dx) {
      const T s = scale[n];
      for (int j = 0; j < K1; ++j) {
        if (id[j] < 0) continue;
        const T ls = (x[id[j]] - mxs) - lses;
        const T q = std::exp(ls);
        dx[id[j]] = q > 0 ? s * q * ((ls - ((lt[j] - mxt) - lset)) - acc) : T(0);
      }
    }
  }
}

#define OPD_INSTANTIATE(T)                                                                                 \
  template void reverse_kl_sampled<T>(T*, const T*, const T*, int);                                      \
  template void policy_gradient_loss<T>(T*, T*, const T*, const T*, const T*, const T*, int);            \
  template void reverse_kl_full<T>(T*, T*, const T*, const T*, const T*, int, int);                      \
  template void reverse_kl_topk<T>(T*, T*, const T*, const int*, const T*, const T*, int, int, int);
OPD_INSTANTIATE(float)
OPD_INSTANTIATE(double)
#undef OPD_INSTANTIATE

}  // namespace opd::cpu
