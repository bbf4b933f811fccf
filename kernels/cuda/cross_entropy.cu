#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/vocab_row.cuh"

namespace opd::cuda {

namespace {

using namespace vocab;

// dlogits may alias logits: the target's logit is read before the first barrier, and every other
// element is read and then written by the same thread.
template <typename T, int W, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(float* __restrict__ losses, T* dlogits, const T* logits, const int* __restrict__ targets,
                         float scale, int V) {
  __shared__ RowStats red[kThreads / 32];
  const int row = blockIdx.x;
  const int t = targets[row];
  const T* x = logits + static_cast<size_t>(row) * V;
  T* dx = kGrad ? dlogits + static_cast<size_t>(row) * V : nullptr;
  if (t < 0 || t >= V) {
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if constexpr (kGrad) map_row<T, T, T, W, false>(dx, x, x, V, [](int, float, float) { return 0.0f; });
    return;
  }
  const float xt = to_float(x[t]);
  RowStats st = stats_empty();
  visit_row<T, T, W, false>(x, x, V, [&](int, float xv, float) { stats_add<false>(st, xv, 0.0f); });
  st = block_stats<false>(st, red);
  const float m = st.m, lse = logf(st.s);
  if (threadIdx.x == 0) losses[row] = lse - (xt - m);
  if constexpr (kGrad)
    map_row<T, T, T, W, false>(dx, x, x, V, [&](int v, float xv, float) {
      const float g = scale * __expf((xv - m) - lse);
      return v == t ? g - scale : g;
    });
}

}  // namespace

template <typename T>
void cross_entropy_forward_backward(float* losses, T* dlogits, const T* logits, const int* targets, float scale, int N,
                                    int V, cudaStream_t stream) {
  OPD_REQUIRE(N >= 0 && V > 0, "cuda::cross_entropy: need N >= 0 and V > 0, got N=", N, " V=", V);
  if (N == 0) return;
  constexpr int W = kVecWidth<T>;
  const bool vec = packable(logits, V, sizeof(T)) && (!dlogits || packable(dlogits, V, sizeof(T)));
  if (dlogits && vec)
    cross_entropy_kernel<T, W, true><<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets, scale, V);
  else if (dlogits)
    cross_entropy_kernel<T, 1, true><<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets, scale, V);
  else if (vec)
    cross_entropy_kernel<T, W, false><<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets, scale, V);
  else
    cross_entropy_kernel<T, 1, false><<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets, scale, V);
  CUDA_CHECK_LAUNCH();
}

template void cross_entropy_forward_backward<float>(float*, float*, const float*, const int*, float, int, int,
                                                    cudaStream_t);
template void cross_entropy_forward_backward<bf16>(float*, bf16*, const bf16*, const int*, float, int, int,
                                                   cudaStream_t);

}  // namespace opd::cuda
