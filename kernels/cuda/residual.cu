#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"
#include "kernels/cuda/residual.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 256;

// kVec: all pointers 16-byte aligned, the body in packs and the last n % kPack one by one.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) residual_forward_kernel(T* out, const T* x, const T* y, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  size_t first = 0;
  if constexpr (kVec) {
    const size_t packs = n / kPack<T>;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < packs; i += stride) {
      float a[kPack<T>], b[kPack<T>];
      load_pack(a, x, i);
      load_pack(b, y, i);
#pragma unroll
      for (int k = 0; k < kPack<T>; ++k) a[k] += b[k];
      store_pack(out, i, a);
    }
    first = packs * kPack<T>;
  }
  for (size_t i = first + blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride)
    out[i] = from_float<T>(to_float(x[i]) + to_float(y[i]));
}

}  // namespace

template <typename T>
void residual_forward(T* out, const T* x, const T* y, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(x) && aligned16(y))
    residual_forward_kernel<T, true><<<blocks_for(n / kPack<T> + 1, kThreads), kThreads, 0, stream>>>(out, x, y, n);
  else
    residual_forward_kernel<T, false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(out, x, y, n);
  CUDA_CHECK_LAUNCH();
}

template void residual_forward<float>(float*, const float*, const float*, size_t, cudaStream_t);
template void residual_forward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, size_t,
                                              cudaStream_t);

}  // namespace opd::cuda
