#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 256;

// silu(g) = g / (1 + exp(-g)) as PyTorch writes it: exp overflowing to inf gives -0, not NaN.
__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

// d silu/dg = s * (1 + g * (1 - s)) with s = sigmoid(g).
__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du) {
  const float s = 1.0f / (1.0f + __expf(-g));
  dg = d * u * s * (1.0f + g * (1.0f - s));
  du = d * g * s;
}

// kVec: every pointer is 16-byte aligned and the body goes in packs; the last n % kPack
// elements (and the whole buffer when kVec is false) go one by one.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(T* out, const T* gate, const T* up, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  size_t first = 0;
  if constexpr (kVec) {
    const size_t packs = n / kPack<T>;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < packs; i += stride) {
      float g[kPack<T>], u[kPack<T>], o[kPack<T>];
      load_pack(g, gate, i);
      load_pack(u, up, i);
#pragma unroll
      for (int k = 0; k < kPack<T>; ++k) o[k] = silu(g[k]) * u[k];
      store_pack(out, i, o);
    }
    first = packs * kPack<T>;
  }
  for (size_t i = first + blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride)
    out[i] = from_float<T>(silu(to_float(gate[i])) * to_float(up[i]));
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  size_t first = 0;
  if constexpr (kVec) {
    const size_t packs = n / kPack<T>;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < packs; i += stride) {
      float g[kPack<T>], u[kPack<T>], d[kPack<T>], dg[kPack<T>], du[kPack<T>];
      load_pack(g, gate, i);
      load_pack(u, up, i);
      load_pack(d, dout, i);
#pragma unroll
      for (int k = 0; k < kPack<T>; ++k) swiglu_grad(d[k], g[k], u[k], dg[k], du[k]);
      store_pack(dgate, i, dg);
      store_pack(dup, i, du);
    }
    first = packs * kPack<T>;
  }
  for (size_t i = first + blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride) {
    float dg, du;
    swiglu_grad(to_float(dout[i]), to_float(gate[i]), to_float(up[i]), dg, du);
    dgate[i] = from_float<T>(dg);
    dup[i] = from_float<T>(du);
  }
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(gate) && aligned16(up))
    swiglu_forward_kernel<T, true><<<blocks_for(n / kPack<T> + 1, kThreads), kThreads, 0, stream>>>(out, gate, up, n);
  else
    swiglu_forward_kernel<T, false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(out, gate, up, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up))
    swiglu_backward_kernel<T, true>
        <<<blocks_for(n / kPack<T> + 1, kThreads), kThreads, 0, stream>>>(dgate, dup, dout, gate, up, n);
  else
    swiglu_backward_kernel<T, false>
        <<<blocks_for(n, kThreads), kThreads, 0, stream>>>(dgate, dup, dout, gate, up, n);
  CUDA_CHECK_LAUNCH();
}

template void swiglu_forward<float>(float*, const float*, const float*, size_t, cudaStream_t);
template void swiglu_forward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, size_t,
                                            cudaStream_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, size_t, cudaStream_t);
template void swiglu_backward<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, const __nv_bfloat16*,
                                             const __nv_bfloat16*, const __nv_bfloat16*, size_t, cudaStream_t);

}  // namespace opd::cuda
