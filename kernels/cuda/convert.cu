#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 256;
// Floats in one 16-byte pack of bf16: each thread of the vector path reads two float packs and
// writes one bf16 pack (or the reverse).
constexpr int kN = kPack<__nv_bfloat16>;
static_assert(kN == 2 * kPack<float>, "a bf16 pack holds two float packs");

// Integer arithmetic rather than the cvt instructions, so that the result is the CPU reference's
// bit for bit whatever the build's fast-math flags do to denormals, and a NaN keeps its sign and
// payload as the CPU one does.
__device__ __forceinline__ unsigned short bf16_bits(float f) {
  unsigned int b = __float_as_uint(f);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x7FFFFFu)) return static_cast<unsigned short>((b >> 16) | 0x40);
  b += 0x7FFFu + ((b >> 16) & 1);
  return static_cast<unsigned short>(b >> 16);
}

__device__ __forceinline__ float widen(unsigned short h) {
  return __uint_as_float(static_cast<unsigned int>(h) << 16);
}

// bf16 is handled as its bits (unsigned short) throughout, never through __nv_bfloat16's arithmetic.
using Bits = unsigned short;

// kVec: both pointers 16-byte aligned; the body goes in packs of kN and the last n % kN elements
// (the whole array when kVec is false) one by one.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    narrow_kernel(Bits* __restrict__ out, const float* __restrict__ in, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  size_t first = 0;
  if constexpr (kVec) {
    const size_t packs = n / kN;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < packs; i += stride) {
      float v[kN];
      load_pack<float>(*reinterpret_cast<float(*)[kPack<float>]>(v), in, 2 * i);
      load_pack<float>(*reinterpret_cast<float(*)[kPack<float>]>(v + kPack<float>), in, 2 * i + 1);
      alignas(16) Bits e[kN];
#pragma unroll
      for (int k = 0; k < kN; ++k) e[k] = bf16_bits(v[k]);
      reinterpret_cast<int4*>(out)[i] = *reinterpret_cast<const int4*>(e);
    }
    first = packs * kN;
  }
  for (size_t i = first + blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride) out[i] = bf16_bits(in[i]);
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    widen_kernel(float* __restrict__ out, const Bits* __restrict__ in, size_t n) {
  const size_t stride = size_t(gridDim.x) * kThreads;
  size_t first = 0;
  if constexpr (kVec) {
    const size_t packs = n / kN;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < packs; i += stride) {
      alignas(16) Bits e[kN];
      *reinterpret_cast<int4*>(e) = reinterpret_cast<const int4*>(in)[i];
      float v[kN];
#pragma unroll
      for (int k = 0; k < kN; ++k) v[k] = widen(e[k]);
      store_pack<float>(out, 2 * i, *reinterpret_cast<const float(*)[kPack<float>]>(v));
      store_pack<float>(out, 2 * i + 1, *reinterpret_cast<const float(*)[kPack<float>]>(v + kPack<float>));
    }
    first = packs * kN;
  }
  for (size_t i = first + blockIdx.x * size_t(kThreads) + threadIdx.x; i < n; i += stride) out[i] = widen(in[i]);
}

}  // namespace

void convert(__nv_bfloat16* out, const float* in, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  Bits* o = reinterpret_cast<Bits*>(out);
  if (aligned16(out) && aligned16(in))
    narrow_kernel<true><<<blocks_for(n / kN + 1, kThreads), kThreads, 0, stream>>>(o, in, n);
  else
    narrow_kernel<false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(o, in, n);
  CUDA_CHECK_LAUNCH();
}

void convert(float* out, const __nv_bfloat16* in, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const Bits* i = reinterpret_cast<const Bits*>(in);
  if (aligned16(out) && aligned16(in))
    widen_kernel<true><<<blocks_for(n / kN + 1, kThreads), kThreads, 0, stream>>>(out, i, n);
  else
    widen_kernel<false><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(out, i, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace opd::cuda
