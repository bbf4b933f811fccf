// Device-side helpers shared by the pointwise CUDA kernels (include from .cu files only): 16-byte
// packs of float or bf16 elements converted to and from float, so every kernel computes in fp32
// whatever its storage type, and reads and writes memory in full 16-byte transactions.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace opd::cuda::packed {

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Elements of T in one 16-byte pack: 4 floats or 8 bf16.
template <typename T>
constexpr int kPack = 16 / sizeof(T);

// The kPack elements at p[i * kPack ...], widened to float. p must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void load_pack(float (&v)[kPack<T>], const T* p, size_t i) {
  alignas(16) T e[kPack<T>];
  *reinterpret_cast<int4*>(e) = reinterpret_cast<const int4*>(p)[i];
#pragma unroll
  for (int k = 0; k < kPack<T>; ++k) v[k] = to_float(e[k]);
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, size_t i, const float (&v)[kPack<T>]) {
  alignas(16) T e[kPack<T>];
#pragma unroll
  for (int k = 0; k < kPack<T>; ++k) e[k] = from_float<T>(v[k]);
  reinterpret_cast<int4*>(p)[i] = *reinterpret_cast<const int4*>(e);
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

inline unsigned blocks_for(size_t work, int threads) {
  // Grid-stride loops cover any remainder: a cap keeps the grid small for huge buffers.
  const size_t b = (work + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b == 0 ? 1 : b) : 65535 * 8);
}

}  // namespace opd::cuda::packed
