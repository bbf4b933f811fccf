#include <cmath>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 256;
constexpr size_t kChunk = size_t(1) << 16;  // elements per block of the sum of squares
constexpr int kReduceThreads = 1024;

// Sum of a double over the block, in a fixed tree; the result is valid in thread 0.
template <int kBlock>
__device__ double block_sum(double v, double* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  return red[0];
}

// partial[b] = sum of squares of chunk b; thread t takes elements t, t + kThreads, ... of it.
template <typename G>
__global__ void __launch_bounds__(kThreads)
    sumsq_chunks_kernel(double* __restrict__ partial, const G* __restrict__ g, size_t n) {
  __shared__ double red[kThreads];
  const size_t lo = blockIdx.x * kChunk;
  const size_t hi = lo + kChunk < n ? lo + kChunk : n;
  double s = 0;
  for (size_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const double x = to_float(g[i]);
    s += x * x;
  }
  s = block_sum<kThreads>(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// *sumsq += the partials, summed by one block in a fixed order.
__global__ void __launch_bounds__(kReduceThreads)
    sumsq_total_kernel(double* __restrict__ sumsq, const double* __restrict__ partial, size_t blocks) {
  __shared__ double red[kReduceThreads];
  double s = 0;
  for (size_t b = threadIdx.x; b < blocks; b += kReduceThreads) s += partial[b];
  s = block_sum<kReduceThreads>(s, red);
  if (threadIdx.x == 0) *sumsq += s;
}

// IEEE division and square root (__fdiv_rn, __fsqrt_rn) rather than --use_fast_math's
// approximations: the update should match the CPU op's to rounding, not to 2 ulp per step.
template <typename G>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ params, const G* __restrict__ grads, float* __restrict__ m,
                 float* __restrict__ v, const unsigned char* __restrict__ decay_mask,
                 __nv_bfloat16* __restrict__ params_bf16, size_t n, float lr, float beta1, float beta2, float eps,
                 float weight_decay, float bc1, float bc2, float grad_scale) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride) {
    const float g = to_float(grads[i]) * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float mhat = __fdiv_rn(mi, bc1), vhat = __fdiv_rn(vi, bc2);
    const float wd = !decay_mask || decay_mask[i] ? weight_decay : 0.0f;
    const float p = params[i];
    const float updated = p - lr * (__fdiv_rn(mhat, __fsqrt_rn(vhat) + eps) + wd * p);
    params[i] = updated;
    if (params_bf16) params_bf16[i] = __float2bfloat16_rn(updated);
  }
}

}  // namespace

template <typename G>
void grad_sumsq_add(double* sumsq, const G* g, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const size_t blocks = (n + kChunk - 1) / kChunk;
  OPD_REQUIRE(blocks <= 0x7fffffffu, "cuda::grad_sumsq: ", n, " elements are too many for one call");
  double* partial = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial), sizeof(double) * blocks, stream));
  sumsq_chunks_kernel<G><<<unsigned(blocks), kThreads, 0, stream>>>(partial, g, n);
  CUDA_CHECK_LAUNCH();
  sumsq_total_kernel<<<1, kReduceThreads, 0, stream>>>(sumsq, partial, blocks);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(partial, stream));
}

template <typename G>
double grad_sumsq(const G* g, size_t n, cudaStream_t stream) {
  double* d = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&d), sizeof(double), stream));
  CUDA_CHECK(cudaMemsetAsync(d, 0, sizeof(double), stream));
  grad_sumsq_add(d, g, n, stream);
  double h = 0;
  CUDA_CHECK(cudaMemcpyAsync(&h, d, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaFreeAsync(d, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return h;
}

template <typename G>
void adamw_update(float* params, const G* grads, float* m, float* v, const unsigned char* decay_mask, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale,
                  __nv_bfloat16* params_bf16, cudaStream_t stream) {
  OPD_REQUIRE(t >= 1, "cuda::adamw_update: step t is 1-based, got ", t);
  OPD_REQUIRE(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
              "cuda::adamw_update: betas must be in [0, 1), got beta1=", beta1, " beta2=", beta2);
  if (n == 0) return;
  // Bias corrections exactly as the CPU op forms them.
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), t));
  adamw_kernel<G><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      params, grads, m, v, decay_mask, params_bf16, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
  CUDA_CHECK_LAUNCH();
}

template void grad_sumsq_add<float>(double*, const float*, size_t, cudaStream_t);
template void grad_sumsq_add<__nv_bfloat16>(double*, const __nv_bfloat16*, size_t, cudaStream_t);
template double grad_sumsq<float>(const float*, size_t, cudaStream_t);
template double grad_sumsq<__nv_bfloat16>(const __nv_bfloat16*, size_t, cudaStream_t);
template void adamw_update<float>(float*, const float*, float*, float*, const unsigned char*, size_t, float, float,
                                  float, float, float, int, float, __nv_bfloat16*, cudaStream_t);
template void adamw_update<__nv_bfloat16>(float*, const __nv_bfloat16*, float*, float*, const unsigned char*, size_t,
                                          float, float, float, float, float, int, float, __nv_bfloat16*,
                                          cudaStream_t);

}  // namespace opd::cuda
