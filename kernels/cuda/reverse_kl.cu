#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "kernels/cuda/vocab_row.cuh"

namespace opd::cuda {

namespace {

using namespace vocab;

constexpr int kMaxK1 = 8192;  // the top-K kernel keeps one float per id in shared memory

__global__ void sampled_kernel(float* __restrict__ k, const float* __restrict__ logp_old,
                               const float* __restrict__ logp_teacher, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n < N) k[n] = logp_old[n] - logp_teacher[n];
}

__global__ void pg_loss_kernel(float* __restrict__ loss, float* __restrict__ dlogp, const float* __restrict__ logp,
                               const float* __restrict__ logp_old, const float* __restrict__ adv,
                               const float* __restrict__ w, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float l = -adv[n] * expf(logp[n] - logp_old[n]) * w[n];
  loss[n] = l;
  dlogp[n] = l;
}

// One block per row. kl = sum p (ls - lt) with p = exp(x - m) / s and ls = (x - m) - log s, i.e.
// t / s - log s where t = sum exp(x - m) ((x - m) - lt) is tracked online with the max and sum.
// dlogits may alias logits: each element is read and then written by the same thread.
template <typename T, int W, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    reverse_kl_full_kernel(float* __restrict__ kl, T* dlogits, const T* logits, const T* __restrict__ logp_teacher,
                           const float* __restrict__ scale, int V) {
  __shared__ RowStats red[kThreads / 32];
  const size_t off = static_cast<size_t>(blockIdx.x) * V;
  const T* x = logits + off;
  const T* lt = logp_teacher + off;
  RowStats st = stats_empty();
  visit_row<T, T, W, true>(x, lt, V, [&](int, float xv, float lv) { stats_add<true>(st, xv, lv); });
  st = block_stats<true>(st, red);
  const float m = st.m, lse = logf(st.s), acc = st.t / st.s - lse;
  if (threadIdx.x == 0) kl[blockIdx.x] = acc;
  if constexpr (kGrad) {
    const float s = scale[blockIdx.x];
    map_row<T, T, T, W, true>(dlogits + off, x, lt, V, [&](int, float xv, float lv) {
      const float ls = (xv - m) - lse;
      const float p = __expf(ls);
      return p > 0.0f ? s * p * ((ls - lv) - acc) : 0.0f;
    });
  }
}

// One block per row of the shard: each thread sums p (ls - lt) over its share (reading both slabs
// in one pass), then a fixed tree.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    full_shard_partial_kernel(float* __restrict__ partial, const T* __restrict__ logits,
                              const float* __restrict__ lse, const T* __restrict__ logp_teacher, int Vl) {
  __shared__ float red[kThreads / 32];
  const size_t off = static_cast<size_t>(blockIdx.x) * Vl;
  const float l = lse[blockIdx.x];
  float acc = 0.0f;
  visit_row<T, T, W, true>(logits + off, logp_teacher + off, Vl, [&](int, float xv, float lv) {
    const float ls = xv - l;
    const float p = __expf(ls);
    if (p > 0.0f) acc += p * (ls - lv);  // no mass, no term, even where lt is -inf
  });
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block per row; dlogits may alias logits: each element is read and then written by the same
// thread.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    full_shard_grad_kernel(T* dlogits, const T* logits, const float* __restrict__ lse,
                           const T* __restrict__ logp_teacher, const float* __restrict__ kl,
                           const float* __restrict__ scale, int Vl) {
  const size_t off = static_cast<size_t>(blockIdx.x) * Vl;
  const float l = lse[blockIdx.x], k = kl[blockIdx.x], s = scale[blockIdx.x];
  map_row<T, T, T, W, true>(dlogits + off, logits + off, logp_teacher + off, Vl, [&](int, float xv, float lv) {
    const float ls = xv - l;
    const float p = __expf(ls);
    return p > 0.0f ? s * p * ((ls - lv) - k) : 0.0f;
  });
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block per row: warp 0 does the arithmetic over S (K1 entries, a handful of them per lane)
// and parks each id's gradient in shared memory; then the block zeroes the row and warp 0 scatters.
// The gathered logits are all read before the row is zeroed, so dlogits may alias logits.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    reverse_kl_topk_kernel(float* __restrict__ kl, T* dlogits, const T* logits, const int* __restrict__ ids,
                           const float* __restrict__ logp_teacher, const float* __restrict__ scale, int V, int K1) {
  extern __shared__ float grad[];  // [K1]
  const int row = blockIdx.x;
  const int* id = ids + static_cast<size_t>(row) * K1;
  const float* lt = logp_teacher + static_cast<size_t>(row) * K1;
  const T* x = logits + static_cast<size_t>(row) * V;
  T* dx = dlogits ? dlogits + static_cast<size_t>(row) * V : nullptr;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    auto valid = [&](int j) { return id[j] >= 0 && id[j] < V; };
    float mxs = -INFINITY, mxt = -INFINITY;
    int count = 0;
    for (int j = lane; j < K1; j += 32)
      if (valid(j)) {
        mxs = fmaxf(mxs, to_float(x[id[j]]));
        mxt = fmaxf(mxt, lt[j]);
        ++count;
      }
    mxs = warp_max(mxs);
    mxt = warp_max(mxt);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) count += __shfl_xor_sync(0xffffffffu, count, o);
    float ss = 0.0f, st = 0.0f;
    for (int j = lane; j < K1; j += 32)
      if (valid(j)) {
        ss += __expf(to_float(x[id[j]]) - mxs);
        st += __expf(lt[j] - mxt);
      }
    const float lses = logf(warp_sum(ss)), lset = logf(warp_sum(st));
    float acc = 0.0f;
    for (int j = lane; j < K1; j += 32)
      if (valid(j)) {
        const float ls = (to_float(x[id[j]]) - mxs) - lses;
        const float q = __expf(ls);
        if (q > 0.0f) acc += q * (ls - ((lt[j] - mxt) - lset));
      }
    acc = count > 0 ? warp_sum(acc) : 0.0f;
    if (lane == 0) kl[row] = acc;
    if (dx) {
      const float s = scale[row];
      for (int j = lane; j < K1; j += 32) {
        float g = 0.0f;
        if (valid(j) && count > 0) {
          const float ls = (to_float(x[id[j]]) - mxs) - lses;
          const float q = __expf(ls);
          g = q > 0.0f ? s * q * ((ls - ((lt[j] - mxt) - lset)) - acc) : 0.0f;
        }
        grad[j] = g;
      }
    }
  }
  if (!dx) return;  // uniform across the block
  __syncthreads();
  map_row<T, T, T, W, false>(dx, dx, dx, V, [](int, float, float) { return 0.0f; });
  __syncthreads();
  for (int j = threadIdx.x; j < K1; j += blockDim.x)
    if (id[j] >= 0 && id[j] < V) dx[id[j]] = from_float<T>(grad[j]);
}

// The teacher's log-normaliser over all of S_n (entries >= 0, wherever they lie: every rank holds
// all K1 teacher log-probs), for one warp: -inf when S_n is empty. Every lane gets it.
__device__ __forceinline__ float warp_teacher_lse(const int* id, const float* lt, int K1) {
  const int lane = threadIdx.x % 32;
  float mxt = -INFINITY;
  int count = 0;
  for (int j = lane; j < K1; j += 32)
    if (id[j] >= 0) mxt = fmaxf(mxt, lt[j]), ++count;
  mxt = warp_max(mxt);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) count += __shfl_xor_sync(0xffffffffu, count, o);
  if (count == 0) return -INFINITY;
  float st = 0.0f;
  for (int j = lane; j < K1; j += 32)
    if (id[j] >= 0) st += __expf(lt[j] - mxt);
  return mxt + logf(warp_sum(st));
}

// Whether global id g lies in the shard [v0, v0 + Vl), as its local column (-1 when not). g >= v0
// first, so that g - v0 cannot overflow.
__device__ __forceinline__ int shard_column(int g, int v0, int Vl) { return g >= v0 && g - v0 < Vl ? g - v0 : -1; }

constexpr int kRowsPerBlock = 4;  // the partial: one warp per row, no row-wide pass

// One warp per row: the sums over S_n's entries in the shard, each lane a stride of the K1 ids,
// then a fixed tree (warp_sum).
template <typename T>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    topk_shard_partial_kernel(float* __restrict__ zs, float* __restrict__ a, const T* __restrict__ logits,
                              const float* __restrict__ lse, const int* __restrict__ ids,
                              const float* __restrict__ logp_teacher, int N, int Vl, int v0, int K1) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= N) return;  // whole warps leave: the shuffles below are per warp
  const int lane = threadIdx.x % 32;
  const int* id = ids + static_cast<size_t>(row) * K1;
  const float* lt = logp_teacher + static_cast<size_t>(row) * K1;
  const T* x = logits + static_cast<size_t>(row) * Vl;
  const float lset = warp_teacher_lse(id, lt, K1), l = lse[row];
  float z = 0.0f, acc = 0.0f;
  for (int j = lane; j < K1; j += 32) {
    const int c = shard_column(id[j], v0, Vl);
    if (c < 0) continue;
    const float ls = to_float(x[c]) - l;
    const float p = __expf(ls);
    if (p > 0.0f) {
      z += p;
      acc += p * (ls - (lt[j] - lset));
    }
  }
  z = warp_sum(z);
  acc = warp_sum(acc);
  if (lane == 0) zs[row] = z, a[row] = acc;
}

// One block per row, as reverse_kl_topk_kernel: warp 0 computes the gradient of each of S_n's
// entries in the shard into shared memory, the block zeroes the row, then scatters. The gathered
// logits are all read before the row is zeroed, so dlogits may alias logits.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    topk_shard_grad_kernel(T* dlogits, const T* logits, const float* __restrict__ lse, const float* __restrict__ zs,
                           const int* __restrict__ ids, const float* __restrict__ logp_teacher,
                           const float* __restrict__ kl, const float* __restrict__ scale, int Vl, int v0, int K1) {
  extern __shared__ float grad[];  // [K1]
  const int row = blockIdx.x;
  const int* id = ids + static_cast<size_t>(row) * K1;
  const float* lt = logp_teacher + static_cast<size_t>(row) * K1;
  const T* x = logits + static_cast<size_t>(row) * Vl;
  T* dx = dlogits + static_cast<size_t>(row) * Vl;
  const float z = zs[row];
  const bool any = z > 0.0f;  // S_n empty (or without mass): no gradient; uniform across the block
  if (any && threadIdx.x < 32) {
    const float lset = warp_teacher_lse(id, lt, K1), lz = logf(z), l = lse[row], k = kl[row], s = scale[row];
    for (int j = threadIdx.x; j < K1; j += 32) {
      const int c = shard_column(id[j], v0, Vl);
      float g = 0.0f;
      if (c >= 0) {
        const float ls = (to_float(x[c]) - l) - lz;  // log q_s
        const float q = __expf(ls);
        g = q > 0.0f ? s * q * ((ls - (lt[j] - lset)) - k) : 0.0f;
      }
      grad[j] = g;
    }
  }
  __syncthreads();
  map_row<T, T, T, W, false>(dx, dx, dx, Vl, [](int, float, float) { return 0.0f; });
  if (!any) return;
  __syncthreads();
  for (int j = threadIdx.x; j < K1; j += blockDim.x) {
    const int c = shard_column(id[j], v0, Vl);
    if (c >= 0) dx[c] = from_float<T>(grad[j]);
  }
}

}  // namespace

void reverse_kl_sampled(float* k, const float* logp_old, const float* logp_teacher, int N, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0, "cuda::reverse_kl_sampled: N = ", N, " is negative");
  if (N == 0) return;
  sampled_kernel<<<(N + 255) / 256, 256, 0, stream>>>(k, logp_old, logp_teacher, N);
  CUDA_CHECK_LAUNCH();
}

void policy_gradient_loss(float* loss, float* dlogp, const float* logp, const float* logp_old, const float* adv,
                          const float* w, int N, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0, "cuda::policy_gradient_loss: N = ", N, " is negative");
  if (N == 0) return;
  pg_loss_kernel<<<(N + 255) / 256, 256, 0, stream>>>(loss, dlogp, logp, logp_old, adv, w, N);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void reverse_kl_full(float* kl, T* dlogits, const T* logits, const T* logp_teacher, const float* scale, int N, int V,
                     cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && V > 0, "cuda::reverse_kl_full: need N >= 0 and V > 0, got N=", N, " V=", V);
  OPD_REQUIRE(!dlogits || scale, "cuda::reverse_kl_full: dlogits needs the per-row scale");
  if (N == 0) return;
  constexpr int W = kVecWidth<T>;
  const bool vec = packable(logits, V, sizeof(T)) && packable(logp_teacher, V, sizeof(T)) &&
                   (!dlogits || packable(dlogits, V, sizeof(T)));
  if (dlogits && vec)
    reverse_kl_full_kernel<T, W, true><<<N, kThreads, 0, stream>>>(kl, dlogits, logits, logp_teacher, scale, V);
  else if (dlogits)
    reverse_kl_full_kernel<T, 1, true><<<N, kThreads, 0, stream>>>(kl, dlogits, logits, logp_teacher, scale, V);
  else if (vec)
    reverse_kl_full_kernel<T, W, false><<<N, kThreads, 0, stream>>>(kl, dlogits, logits, logp_teacher, scale, V);
  else
    reverse_kl_full_kernel<T, 1, false><<<N, kThreads, 0, stream>>>(kl, dlogits, logits, logp_teacher, scale, V);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void reverse_kl_topk(float* kl, T* dlogits, const T* logits, const int* ids, const float* logp_teacher,
                     const float* scale, int N, int V, int K1, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && V > 0 && K1 > 0 && K1 <= kMaxK1, "cuda::reverse_kl_topk: need N >= 0, V > 0 and 0 < K1 <= ",
              kMaxK1, ", got N=", N, " V=", V, " K1=", K1);
  OPD_REQUIRE(!dlogits || scale, "cuda::reverse_kl_topk: dlogits needs the per-row scale");
  if (N == 0) return;
  const size_t smem = sizeof(float) * K1;
  if (!dlogits || packable(dlogits, V, sizeof(T)))
    reverse_kl_topk_kernel<T, kVecWidth<T>><<<N, kThreads, smem, stream>>>(kl, dlogits, logits, ids, logp_teacher,
                                                                           scale, V, K1);
  else
    reverse_kl_topk_kernel<T, 1><<<N, kThreads, smem, stream>>>(kl, dlogits, logits, ids, logp_teacher, scale, V, K1);
  CUDA_CHECK_LAUNCH();
}

namespace {

void check_shard(const char* op, int N, int Vl) {
  OPD_REQUIRE(N >= 0 && Vl > 0, "cuda::", op, ": need N >= 0 and Vl > 0, got N=", N, " Vl=", Vl);
}

}  // namespace

template <typename T>
void reverse_kl_full_shard_partial(float* partial, const T* logits, const float* lse, const T* logp_teacher, int N,
                                   int Vl, cudaStream_t stream) {
  check_shard("reverse_kl_full_shard_partial", N, Vl);
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)) && packable(logp_teacher, Vl, sizeof(T)))
    full_shard_partial_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(partial, logits, lse, logp_teacher, Vl);
  else
    full_shard_partial_kernel<T, 1><<<N, kThreads, 0, stream>>>(partial, logits, lse, logp_teacher, Vl);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void reverse_kl_full_shard_grad(T* dlogits, const T* logits, const float* lse, const T* logp_teacher, const float* kl,
                                const float* scale, int N, int Vl, cudaStream_t stream) {
  check_shard("reverse_kl_full_shard_grad", N, Vl);
  if (N == 0) return;
  if (packable(logits, Vl, sizeof(T)) && packable(logp_teacher, Vl, sizeof(T)) && packable(dlogits, Vl, sizeof(T)))
    full_shard_grad_kernel<T, kVecWidth<T>><<<N, kThreads, 0, stream>>>(dlogits, logits, lse, logp_teacher, kl, scale,
                                                                        Vl);
  else
    full_shard_grad_kernel<T, 1><<<N, kThreads, 0, stream>>>(dlogits, logits, lse, logp_teacher, kl, scale, Vl);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void reverse_kl_topk_shard_partial(float* zs, float* a, const T* logits, const float* lse, const int* ids,
                                   const float* logp_teacher, int N, int Vl, int v0, int K1, cudaStream_t stream) {
  check_shard("reverse_kl_topk_shard_partial", N, Vl);
  OPD_REQUIRE(v0 >= 0 && K1 > 0, "cuda::reverse_kl_topk_shard_partial: need v0 >= 0 and K1 > 0, got v0=", v0,
              " K1=", K1);
  if (N == 0) return;
  topk_shard_partial_kernel<T><<<(N + kRowsPerBlock - 1) / kRowsPerBlock, 32 * kRowsPerBlock, 0, stream>>>(
      zs, a, logits, lse, ids, logp_teacher, N, Vl, v0, K1);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void reverse_kl_topk_shard_grad(T* dlogits, const T* logits, const float* lse, const float* zs, const int* ids,
                                const float* logp_teacher, const float* kl, const float* scale, int N, int Vl, int v0,
                                int K1, cudaStream_t stream) {
  check_shard("reverse_kl_topk_shard_grad", N, Vl);
  OPD_REQUIRE(v0 >= 0 && K1 > 0 && K1 <= kMaxK1, "cuda::reverse_kl_topk_shard_grad: need v0 >= 0 and 0 < K1 <= ",
              kMaxK1, ", got v0=", v0, " K1=", K1);
  if (N == 0) return;
  const size_t smem = sizeof(float) * K1;
  if (packable(dlogits, Vl, sizeof(T)))
    topk_shard_grad_kernel<T, kVecWidth<T>><<<N, kThreads, smem, stream>>>(dlogits, logits, lse, zs, ids,
                                                                           logp_teacher, kl, scale, Vl, v0, K1);
  else
    topk_shard_grad_kernel<T, 1><<<N, kThreads, smem, stream>>>(dlogits, logits, lse, zs, ids, logp_teacher, kl,
                                                                scale, Vl, v0, K1);
  CUDA_CHECK_LAUNCH();
}

template void reverse_kl_full<float>(float*, float*, const float*, const float*, const float*, int, int, cudaStream_t);
template void reverse_kl_full<bf16>(float*, bf16*, const bf16*, const bf16*, const float*, int, int, cudaStream_t);
template void reverse_kl_topk<float>(float*, float*, const float*, const int*, const float*, const float*, int, int,
                                     int, cudaStream_t);
template void reverse_kl_topk<bf16>(float*, bf16*, const bf16*, const int*, const float*, const float*, int, int, int,
                                    cudaStream_t);
template void reverse_kl_full_shard_partial<float>(float*, const float*, const float*, const float*, int, int,
                                                   cudaStream_t);
template void reverse_kl_full_shard_partial<bf16>(float*, const bf16*, const float*, const bf16*, int, int,
                                                  cudaStream_t);
template void reverse_kl_full_shard_grad<float>(float*, const float*, const float*, const float*, const float*,
                                                const float*, int, int, cudaStream_t);
template void reverse_kl_full_shard_grad<bf16>(bf16*, const bf16*, const float*, const bf16*, const float*,
                                               const float*, int, int, cudaStream_t);
template void reverse_kl_topk_shard_partial<float>(float*, float*, const float*, const float*, const int*,
                                                   const float*, int, int, int, int, cudaStream_t);
template void reverse_kl_topk_shard_partial<bf16>(float*, float*, const bf16*, const float*, const int*, const float*,
                                                  int, int, int, int, cudaStream_t);
template void reverse_kl_topk_shard_grad<float>(float*, const float*, const float*, const float*, const int*,
                                                const float*, const float*, const float*, int, int, int, int,
                                                cudaStream_t);
template void reverse_kl_topk_shard_grad<bf16>(bf16*, const bf16*, const float*, const float*, const int*,
                                               const float*, const float*, const float*, int, int, int, int,
                                               cudaStream_t);

}  // namespace opd::cuda
