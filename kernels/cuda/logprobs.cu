#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/vocab_row.cuh"

namespace opd::cuda {

namespace {

using namespace vocab;

template <typename T, int W, bool kEntropy>
__global__ void __launch_bounds__(kThreads)
    logprobs_forward_kernel(float* __restrict__ logp, float* __restrict__ entropy, const T* __restrict__ logits,
                            const int* __restrict__ targets, int V) {
  __shared__ RowStats red[kThreads / 32];
  const int row = blockIdx.x;
  const int t = targets[row];
  if (t < 0 || t >= V) {  // the whole block leaves together: no barrier is skipped by some threads only
    if (threadIdx.x == 0) {
      logp[row] = 0.0f;
      if (kEntropy) entropy[row] = 0.0f;
    }
    return;
  }
  const T* x = logits + static_cast<size_t>(row) * V;
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(x, x, V, [&](int, float xv, float) { stats_add<kEntropy>(st, xv, 0.0f); });
  st = block_stats<kEntropy>(st, red);
  if (threadIdx.x == 0) {
    const float lse = logf(st.s);
    logp[row] = (to_float(x[t]) - st.m) - lse;
    // -sum p log p with log p = (x - m) - lse and p = exp(x - m) / s: lse - t / s.
    if (kEntropy) entropy[row] = lse - st.t / st.s;
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    logprobs_backward_kernel(T* dlogits, const float* __restrict__ dlogp, const T* __restrict__ logits,
                             const int* __restrict__ targets, int V) {
  __shared__ RowStats red[kThreads / 32];
  const int row = blockIdx.x;
  const int t = targets[row];
  if (t < 0 || t >= V) return;
  const T* x = logits + static_cast<size_t>(row) * V;
  T* dx = dlogits + static_cast<size_t>(row) * V;
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(x, x, V, [&](int, float xv, float) { stats_add<false>(st, xv, 0.0f); });
  st = block_stats<false>(st, red);
  const float m = st.m, lse = logf(st.s), d = dlogp[row];
  map_row<T, T, T, W, true>(dx, x, dx, V, [&](int v, float xv, float old) {
    float r = old - d * __expf((xv - m) - lse);
    if (v == t) r += d;
    return r;
  });
}

template <typename T, int W>
__global__ void __launch_bounds__(kThreads) log_softmax_kernel(T* out, const T* logits, int V) {
  __shared__ RowStats red[kThreads / 32];
  const size_t off = static_cast<size_t>(blockIdx.x) * V;
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(logits + off, logits + off, V,
                            [&](int, float xv, float) { stats_add<false>(st, xv, 0.0f); });
  st = block_stats<false>(st, red);
  const float m = st.m, lse = logf(st.s);
  map_row<T, T, T, W, false>(out + off, logits + off, logits + off, V,
                             [&](int, float xv, float) { return (xv - m) - lse; });
}

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    shard_stats_kernel(float* __restrict__ mx, float* __restrict__ sumexp, float* __restrict__ target_logit,
                       const T* __restrict__ logits, const int* __restrict__ targets, int Vlocal, int v0) {
  __shared__ RowStats red[kThreads / 32];
  const int row = blockIdx.x;
  const T* x = logits + static_cast<size_t>(row) * Vlocal;
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(x, x, Vlocal, [&](int, float xv, float) { stats_add<false>(st, xv, 0.0f); });
  st = block_stats<false>(st, red);
  if (threadIdx.x == 0) {
    mx[row] = st.m;
    sumexp[row] = st.s;
    const int local = targets[row] - v0;
    target_logit[row] = targets[row] >= 0 && local >= 0 && local < Vlocal ? to_float(x[local]) : 0.0f;
  }
}

__global__ void combine_kernel(float* __restrict__ logp, float* __restrict__ lse, const float* __restrict__ mx,
                               const float* __restrict__ sumexp, const float* __restrict__ target_logit,
                               const int* __restrict__ targets, int R, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float m = -INFINITY;
  for (int r = 0; r < R; ++r) m = fmaxf(m, mx[static_cast<size_t>(r) * N + n]);
  float s = 0.0f, tl = 0.0f;
  for (int r = 0; r < R; ++r) {
    const float mr = mx[static_cast<size_t>(r) * N + n];
    if (mr != -INFINITY) s += sumexp[static_cast<size_t>(r) * N + n] * expf(mr - m);
    tl += target_logit[static_cast<size_t>(r) * N + n];  // one shard holds the target, the rest add 0
  }
  const float l = logf(s);
  if (lse) lse[n] = m + l;
  logp[n] = targets[n] < 0 ? 0.0f : (tl - m) - l;
}

// One block per row of the shard: h = -sum p (x - lse), each thread over its share, then a fixed
// tree. The share form keeps lse out of the sum (see cpu::entropy_shard on the cancellation).
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    entropy_shard_kernel(float* __restrict__ out, const T* __restrict__ logits, const float* __restrict__ lse,
                         int Vl) {
  __shared__ float red[kThreads / 32];
  const int row = blockIdx.x;
  const T* x = logits + static_cast<size_t>(row) * Vl;
  const float l = lse[row];
  float h = 0.0f;
  visit_row<T, T, W, false>(x, x, Vl, [&](int, float xv, float) {
    const float lp = xv - l;
    const float p = __expf(lp);
    if (p > 0.0f) h -= p * lp;  // no mass, no term (a -inf logit)
  });
  h = block_sum(h, red);
  if (threadIdx.x == 0) out[row] = h;
}

// One block per row; no reduction (lse is given), so each element is one read and one write.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    logprobs_backward_shard_kernel(T* dlogits, const float* __restrict__ dlogp, const T* __restrict__ logits,
                                   const float* __restrict__ lse, const int* __restrict__ targets, int Vl, int v0) {
  const int row = blockIdx.x;
  const int t = targets[row];
  if (t < 0) return;
  // t >= v0 first, so that t - v0 cannot overflow.
  const int local = t >= v0 && t - v0 < Vl ? t - v0 : -1;
  const T* x = logits + static_cast<size_t>(row) * Vl;
  T* dx = dlogits + static_cast<size_t>(row) * Vl;
  const float l = lse[row], d = dlogp[row];
  // As the CPU op: the softmax part first, then the one-hot.
  map_row<T, T, T, W, true>(dx, x, dx, Vl, [&](int v, float xv, float old) {
    float r = old - d * __expf(xv - l);
    if (v == local) r += d;
    return r;
  });
}

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    log_softmax_shard_kernel(T* out, const T* logits, const float* __restrict__ lse, int Vl) {
  const size_t off = static_cast<size_t>(blockIdx.x) * Vl;
  const float l = lse[blockIdx.x];
  map_row<T, T, T, W, false>(out + off, logits + off, logits + off, Vl,
                             [&](int, float xv, float) { return xv - l; });
}

struct Pick {
  float x;
  int v;  // -1: nothing picked yet
};

// Before in the CPU's order: the larger logit, the lower id on ties; an empty pick is last.
__device__ __forceinline__ bool before(const Pick& a, const Pick& b) {
  return b.v < 0 || (a.v >= 0 && (a.x > b.x || (a.x == b.x && a.v < b.v)));
}

__device__ __forceinline__ Pick block_first(Pick p, Pick* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Pick q{__shfl_xor_sync(0xffffffffu, p.x, o), __shfl_xor_sync(0xffffffffu, p.v, o)};
    if (before(q, p)) p = q;
  }
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = p;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w)
      if (before(red[w], p)) p = red[w];
    red[0] = p;
  }
  __syncthreads();
  p = red[0];
  __syncthreads();
  return p;
}

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    topk_kernel(int* __restrict__ ids, float* __restrict__ logp, const T* __restrict__ logits,
                const int* __restrict__ extra, bool skip_without_extra, int V, int K) {
  __shared__ RowStats red[kThreads / 32];
  __shared__ Pick pick_red[kThreads / 32];
  extern __shared__ int picked[];  // [K]
  const int row = blockIdx.x, K1 = K + 1;
  int* id = ids + static_cast<size_t>(row) * K1;
  float* lp = logp + static_cast<size_t>(row) * K1;
  const int e = extra[row] < V ? extra[row] : -1;
  if (skip_without_extra && e < 0) {
    for (int j = threadIdx.x; j < K1; j += blockDim.x) id[j] = -1, lp[j] = 0.0f;
    return;
  }
  const T* x = logits + static_cast<size_t>(row) * V;
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(x, x, V, [&](int, float xv, float) { stats_add<false>(st, xv, 0.0f); });
  st = block_stats<false>(st, red);
  // Round r picks the first element, in the CPU's order, after round r-1's pick.
  Pick prev{0.0f, -1};
  for (int r = 0; r < K; ++r) {
    Pick best{0.0f, -1};
    visit_row<T, T, W, false>(x, x, V, [&](int v, float xv, float) {
      const Pick c{xv, v};
      if ((prev.v < 0 || before(prev, c)) && before(c, best)) best = c;
    });
    prev = block_first(best, pick_red);
    if (threadIdx.x == 0) picked[r] = prev.v;
    // Nothing comes after a NaN in the order: the rest stay unpicked (the same on every thread).
    if (prev.v < 0) {
      if (threadIdx.x == 0)
        for (int j = r + 1; j < K; ++j) picked[j] = -1;
      break;
    }
  }
  if (threadIdx.x == 0) {
    const float m = st.m, lse = logf(st.s);
    bool extra_in_top = false;
    for (int j = 0; j < K; ++j) {
      id[j] = picked[j];
      lp[j] = picked[j] >= 0 ? (to_float(x[picked[j]]) - m) - lse : NAN;  // a NaN row stays NaN
      extra_in_top = extra_in_top || picked[j] == e;
    }
    id[K] = e >= 0 && !extra_in_top ? e : -1;
    lp[K] = e >= 0 && !extra_in_top ? (to_float(x[e]) - m) - lse : 0.0f;
  }
}

// One block per row of the shard, as topk_kernel: round r picks the first element, in the CPU's
// order, after round r-1's pick. Ranked by the rounded log-prob x - lse (as the CPU op: two logits
// a rounding apart can share a log-prob, and the merge then wants the lower id), which is the same
// IEEE float subtraction here, so the picks and their log-probs are the CPU's bit for bit.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    topk_shard_kernel(int* __restrict__ ids, float* __restrict__ logp, const T* __restrict__ logits,
                      const float* __restrict__ lse, int Vl, int v0, int K) {
  __shared__ Pick pick_red[kThreads / 32];
  const int row = blockIdx.x;
  int* id = ids + static_cast<size_t>(row) * K;
  float* lp = logp + static_cast<size_t>(row) * K;
  const T* x = logits + static_cast<size_t>(row) * Vl;
  const float l = lse[row];
  const int kk = K < Vl ? K : Vl;
  Pick prev{0.0f, -1};
  for (int r = 0; r < kk; ++r) {
    Pick best{0.0f, -1};
    visit_row<T, T, W, false>(x, x, Vl, [&](int v, float xv, float) {
      const Pick c{xv - l, v};
      if ((prev.v < 0 || before(prev, c)) && before(c, best)) best = c;
    });
    prev = block_first(best, pick_red);
    if (prev.v < 0) {  // nothing comes after a NaN in the order (the same on every thread)
      for (int j = r + threadIdx.x; j < kk; j += blockDim.x) id[j] = -1, lp[j] = NAN;  // the row stays NaN
      break;
    }
    if (threadIdx.x == 0) {
      id[r] = v0 + prev.v;
      lp[r] = prev.x;
    }
  }
  for (int j = kk + threadIdx.x; j < K; j += blockDim.x) id[j] = -1, lp[j] = -INFINITY;
}

void check_shape(const char* op, int N, int V) {
  OPD_REQUIRE(N >= 0 && V > 0, "cuda::", op, ": need N >= 0 and V > 0, got N=", N, " V=", V);
}

void check_shard(const char* op, int N, int Vl, int v0) {
  OPD_REQUIRE(N >= 0 && Vl > 0 && v0 >= 0, "cuda::", op, ": need N >= 0, Vl > 0 and v0 >= 0, got N=", N,
              " Vl=", Vl, " v0=", v0);
}

}  // namespace

template <typename T>
void logprobs_forward(float* logp, float* entropy, const T* logits, const int* targets, int N, int V,
                      cudaStream_t stream) {
  check_shape("logprobs_forward", N, V);
  if (N == 0) return;
  constexpr int W = kVecWidth<T>;
  const bool vec = packable(logits, V, sizeof(T));
  if (entropy && vec)
    logprobs_forward_kernel<T, W, true><<<N, kThreads, 0, stream>>>(logp, entropy, logits, targets, V);
  else if (entropy)
    logprobs_forward_kernel<T, 1, true><<<N, kThreads, 0, stream>>>(logp, entropy, logits, targets, V);
  else if (vec)
    logprobs_forward_kernel<T, W, false><<<N, kThreads, 0, stream>>>(logp, entropy, logits, targets, V);
  else
    logprobs_forward_kernel<T, 1, false><<<N, kThreads, 0, stream>>>(logp, entropy, logits, targets, V);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void logprobs_backward(T* dlogits, const float* dlogp, const T* logits, const int* targets, int N, int V,
                       cudaStream_t stream) {
  check_shape("logprobs_backward", N, V);
  if (N == 0) return;
  if (packable(logits, V, sizeof(T)) && packable(dlogits, V, sizeof(T)))
    logprobs_backward_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(dlogits, dlogp, logits, targets, V);
  else
    logprobs_backward_kernel<T, 1><<<N, kThreads, 0, stream>>>(dlogits, dlogp, logits, targets, V);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void log_softmax_forward(T* out, const T* logits, int N, int V, cudaStream_t stream) {
  check_shape("log_softmax_forward", N, V);
  if (N == 0) return;
  if (packable(logits, V, sizeof(T)) && packable(out, V, sizeof(T)))
    log_softmax_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(out, logits, V);
  else
    log_softmax_kernel<T, 1><<<N, kThreads, 0, stream>>>(out, logits, V);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void topk_logprobs(int* ids, float* logp, const T* logits, const int* extra, bool skip_without_extra, int N, int V,
                   int K, cudaStream_t stream) {
  check_shape("topk_logprobs", N, V);
  OPD_REQUIRE(K >= 1 && K <= V && K <= 4096, "cuda::topk_logprobs: K = ", K, " must be in [1, min(V = ", V,
              ", 4096)]");
  if (N == 0) return;
  const size_t smem = sizeof(int) * K;
  if (packable(logits, V, sizeof(T)))
    topk_kernel<T, kVecWidth<T>><<<N, kThreads, smem, stream>>>(ids, logp, logits, extra, skip_without_extra, V, K);
  else
    topk_kernel<T, 1><<<N, kThreads, smem, stream>>>(ids, logp, logits, extra, skip_without_extra, V, K);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void logprobs_shard_stats(float* mx, float* sumexp, float* target_logit, const T* logits, const int* targets, int N,
                          int Vlocal, int v0, cudaStream_t stream) {
  check_shape("logprobs_shard_stats", N, Vlocal);
  OPD_REQUIRE(v0 >= 0, "cuda::logprobs_shard_stats: shard start v0 = ", v0, " is negative");
  if (N == 0) return;
  if (packable(logits, Vlocal, sizeof(T)))
    shard_stats_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(mx, sumexp, target_logit, logits, targets,
                                                                    Vlocal, v0);
  else
    shard_stats_kernel<T, 1><<<N, kThreads, 0, stream>>>(mx, sumexp, target_logit, logits, targets, Vlocal, v0);
  CUDA_CHECK_LAUNCH();
}

void combine_shard_stats(float* logp, float* lse, const float* mx, const float* sumexp, const float* target_logit,
                         const int* targets, int R, int N, cudaStream_t stream) {
  OPD_REQUIRE(R > 0 && N >= 0, "cuda::combine_shard_stats: need R > 0 shards and N >= 0, got R=", R, " N=", N);
  if (N == 0) return;
  combine_kernel<<<(N + 255) / 256, 256, 0, stream>>>(logp, lse, mx, sumexp, target_logit, targets, R, N);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void entropy_shard(float* out, const T* logits, const float* lse, int N, int Vl, cudaStream_t stream) {
  check_shard("entropy_shard", N, Vl, 0);
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)))
    entropy_shard_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(out, logits, lse, Vl);
  else
    entropy_shard_kernel<T, 1><<<N, kThreads, 0, stream>>>(out, logits, lse, Vl);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void logprobs_backward_shard(T* dlogits, const float* dlogp, const T* logits, const float* lse, const int* targets,
                             int N, int Vl, int v0, cudaStream_t stream) {
  check_shard("logprobs_backward_shard", N, Vl, v0);
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)) && packable(dlogits, Vl, sizeof(T)))
    logprobs_backward_shard_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(dlogits, dlogp, logits, lse, targets,
                                                                                Vl, v0);
  else
    logprobs_backward_shard_kernel<T, 1><<<N, kThreads, 0, stream>>>(dlogits, dlogp, logits, lse, targets, Vl, v0);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void log_softmax_shard(T* out, const T* logits, const float* lse, int N, int Vl, cudaStream_t stream) {
  check_shard("log_softmax_shard", N, Vl, 0);
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)) && packable(out, Vl, sizeof(T)))
    log_softmax_shard_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(out, logits, lse, Vl);
  else
    log_softmax_shard_kernel<T, 1><<<N, kThreads, 0, stream>>>(out, logits, lse, Vl);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void topk_shard_candidates(int* ids, float* logp, const T* logits, const float* lse, int N, int Vl, int v0, int K,
                           cudaStream_t stream) {
  check_shard("topk_shard_candidates", N, Vl, v0);
  OPD_REQUIRE(K >= 1, "cuda::topk_shard_candidates: K = ", K, " must be >= 1");
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)))
    topk_shard_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(ids, logp, logits, lse, Vl, v0, K);
  else
    topk_shard_kernel<T, 1><<<N, kThreads, 0, stream>>>(ids, logp, logits, lse, Vl, v0, K);
  CUDA_CHECK_LAUNCH();
}

#define OPD_INSTANTIATE(T)                                                                                          \
  template void logprobs_forward<T>(float*, float*, const T*, const int*, int, int, cudaStream_t);                  \
  template void logprobs_backward<T>(T*, const float*, const T*, const int*, int, int, cudaStream_t);               \
  template void log_softmax_forward<T>(T*, const T*, int, int, cudaStream_t);                                       \
  template void topk_logprobs<T>(int*, float*, const T*, const int*, bool, int, int, int, cudaStream_t);            \
  template void logprobs_shard_stats<T>(float*, float*, float*, const T*, const int*, int, int, int, cudaStream_t); \
  template void entropy_shard<T>(float*, const T*, const float*, int, int, cudaStream_t);                           \
  template void logprobs_backward_shard<T>(T*, const float*, const T*, const float*, const int*, int, int, int,     \
                                           cudaStream_t);                                                           \
  template void log_softmax_shard<T>(T*, const T*, const float*, int, int, cudaStream_t);                           \
  template void topk_shard_candidates<T>(int*, float*, const T*, const float*, int, int, int, int, cudaStream_t);
OPD_INSTANTIATE(float)
OPD_INSTANTIATE(bf16)
#undef OPD_INSTANTIATE

}  // namespace opd::cuda
