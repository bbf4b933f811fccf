#include "kernels/cpu/reverse_kl.h"

#include <cmath>
#include <limits>
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

namespace {

void check_shard(const char* op, int N, int Vl, int v0) {
  OPD_REQUIRE(N >= 0 && Vl > 0 && v0 >= 0, op, ": need N >= 0, Vl > 0 and v0 >= 0, got N=", N, " Vl=", Vl, " v0=", v0);
}

// The shard's part of the duplicate check reverse_kl_topk makes over the whole row: every id lies in
// some shard, so a duplicate anywhere is caught by the shard holding it.
void check_shard_ids(const char* op, const int* ids, int N, int Vl, int v0, int K1) {
  OPD_REQUIRE(K1 > 0, op, ": need K1 > 0, got K1=", K1);
  std::vector<int> stamp(Vl, -1);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < K1; ++j) {
      const int local = ids[static_cast<size_t>(n) * K1 + j] - v0;
      if (ids[static_cast<size_t>(n) * K1 + j] < 0 || local < 0 || local >= Vl) continue;
      OPD_REQUIRE(stamp[local] != n, op, ": token ", local + v0, " appears twice in row ", n, " of ids");
      stamp[local] = n;
    }
}

// log of the teacher's normaliser over S_n: log sum_S exp(lt), with the max taken out; -inf when
// S_n is empty.
template <typename T>
T teacher_lse_over_set(const int* id, const T* lt, int K1) {
  T mxt = 0;
  bool any = false;
  for (int j = 0; j < K1; ++j) {
    if (id[j] < 0) continue;
    mxt = !any || lt[j] > mxt ? lt[j] : mxt;
    any = true;
  }
  if (!any) return -std::numeric_limits<T>::infinity();
  T st = 0;
  for (int j = 0; j < K1; ++j)
    if (id[j] >= 0) st += std::exp(lt[j] - mxt);
  return mxt + std::log(st);
}

}  // namespace

template <typename T>
void reverse_kl_full_shard_partial(T* partial, const T* logits, const T* lse, const T* logp_teacher, int N, int Vl) {
  check_shard("reverse_kl_full_shard_partial", N, Vl, 0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    const T* lt = logp_teacher + static_cast<size_t>(n) * Vl;
    T acc = 0;
    for (int v = 0; v < Vl; ++v) {
      const T ls = x[v] - lse[n];
      const T p = std::exp(ls);
      if (p > 0) acc += p * (ls - lt[v]);  // no mass, no term, even where lt is -inf
    }
    partial[n] = acc;
  }
}

template <typename T>
void reverse_kl_full_shard_grad(T* dlogits, const T* logits, const T* lse, const T* logp_teacher, const T* kl,
                                const T* scale, int N, int Vl) {
  check_shard("reverse_kl_full_shard_grad", N, Vl, 0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    const T* lt = logp_teacher + static_cast<size_t>(n) * Vl;
    T* dx = dlogits + static_cast<size_t>(n) * Vl;
    const T s = scale[n];
    for (int v = 0; v < Vl; ++v) {
      const T ls = x[v] - lse[n];
      const T p = std::exp(ls);
      dx[v] = p > 0 ? s * p * ((ls - lt[v]) - kl[n]) : T(0);
    }
  }
}

template <typename T>
void reverse_kl_topk_shard_partial(T* zs, T* a, const T* logits, const T* lse, const int* ids, const T* logp_teacher,
                                   int N, int Vl, int v0, int K1) {
  check_shard("reverse_kl_topk_shard_partial", N, Vl, v0);
  check_shard_ids("reverse_kl_topk_shard_partial", ids, N, Vl, v0, K1);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * K1 >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    const int* id = ids + static_cast<size_t>(n) * K1;
    const T* lt = logp_teacher + static_cast<size_t>(n) * K1;
    const T lset = teacher_lse_over_set(id, lt, K1);
    T z = 0, acc = 0;
    for (int j = 0; j < K1; ++j) {
      const int local = id[j] - v0;
      if (id[j] < 0 || local < 0 || local >= Vl) continue;
      const T ls = x[local] - lse[n];
      const T p = std::exp(ls);
      if (p > 0) {
        z += p;
        acc += p * (ls - (lt[j] - lset));
      }
    }
    zs[n] = z;
    a[n] = acc;
  }
}

template <typename T>
void reverse_kl_topk_combine(T* kl, const T* zs, const T* a, int N) {
  OPD_REQUIRE(N >= 0, "reverse_kl_topk_combine: need N >= 0, got N=", N);
  for (int n = 0; n < N; ++n) kl[n] = zs[n] > 0 ? a[n] / zs[n] - std::log(zs[n]) : T(0);
}

template <typename T>
void reverse_kl_topk_shard_grad(T* dlogits, const T* logits, const T* lse, const T* zs, const int* ids,
                                const T* logp_teacher, const T* kl, const T* scale, int N, int Vl, int v0, int K1) {
  check_shard("reverse_kl_topk_shard_grad", N, Vl, v0);
  check_shard_ids("reverse_kl_topk_shard_grad", ids, N, Vl, v0, K1);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<size_t>(n) * Vl;
    const int* id = ids + static_cast<size_t>(n) * K1;
    const T* lt = logp_teacher + static_cast<size_t>(n) * K1;
    T* dx = dlogits + static_cast<size_t>(n) * Vl;
    for (int v = 0; v < Vl; ++v) dx[v] = 0;
    if (!(zs[n] > 0)) continue;  // S_n empty (or without mass): no gradient
    const T lset = teacher_lse_over_set(id, lt, K1);
    const T lz = std::log(zs[n]);
    const T s = scale[n];
    for (int j = 0; j < K1; ++j) {
      const int local = id[j] - v0;
      if (id[j] < 0 || local < 0 || local >= Vl) continue;
      const T ls = (x[local] - lse[n]) - lz;  // log q_s
      const T q = std::exp(ls);
      dx[local] = q > 0 ? s * q * ((ls - (lt[j] - lset)) - kl[n]) : T(0);
    }
  }
}

#define OPD_INSTANTIATE(T)                                                                                        \
  template void reverse_kl_sampled<T>(T*, const T*, const T*, int);                                               \
  template void policy_gradient_loss<T>(T*, T*, const T*, const T*, const T*, const T*, int);                     \
  template void reverse_kl_full<T>(T*, T*, const T*, const T*, const T*, int, int);                               \
  template void reverse_kl_topk<T>(T*, T*, const T*, const int*, const T*, const T*, int, int, int);              \
  template void reverse_kl_full_shard_partial<T>(T*, const T*, const T*, const T*, int, int);                     \
  template void reverse_kl_full_shard_grad<T>(T*, const T*, const T*, const T*, const T*, const T*, int, int);    \
  template void reverse_kl_topk_shard_partial<T>(T*, T*, const T*, const T*, const int*, const T*, int, int, int, \
                                                 int);                                                            \
  template void reverse_kl_topk_combine<T>(T*, const T*, const T*, int);                                          \
  template void reverse_kl_topk_shard_grad<T>(T*, const T*, const T*, const T*, const int*, const T*, const T*,   \
                                              const T*, int, int, int, int);
OPD_INSTANTIATE(float)
OPD_INSTANTIATE(double)
#undef OPD_INSTANTIATE

}  // namespace opd::cpu
