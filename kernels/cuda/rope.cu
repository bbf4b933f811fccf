#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/packed.cuh"
#include "kernels/cuda/rope.cuh"

namespace opd::cuda {

namespace {

using namespace packed;

constexpr int kThreads = 128;

struct InvFreq {
  float f[kRopeMaxHeadDim / 2];
};

// The CPU op's own table (kernels/cpu/rope.cpp), so both rotate by bit-identical angles.
InvFreq inv_freq(int D, float theta, const RopeScaling& scaling) {
  const std::vector<float> f = cpu::rope_inv_freq<float>(D, theta, scaling);
  InvFreq r{};
  std::copy(f.begin(), f.end(), r.f);
  return r;
}

// One block per row: its cos/sin table is built once in shared memory, then every head of the
// row is rotated with it. Consecutive threads take consecutive dimensions of a head (coalesced).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rope_kernel(T* __restrict__ x, const int* __restrict__ pos, int H, int D, InvFreq freq, float sign) {
  extern __shared__ float table[];  // cos [half], then sin [half]
  const int half = D / 2;
  float* cs = table;
  float* sn = table + half;
  const int n = blockIdx.x;
  const float p = float(pos[n]);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    // double sin/cos round correctly, as the CPU op's do; --use_fast_math's float sinf would be
    // far off at angles in the thousands of radians.
    const double angle = double(p * freq.f[i]);
    cs[i] = float(cos(angle));
    sn[i] = sign * float(sin(angle));
  }
  __syncthreads();
  T* row = x + size_t(n) * H * D;
  for (int j = threadIdx.x; j < H * half; j += kThreads) {
    const int h = j / half, i = j % half;
    T* v = row + size_t(h) * D;
    const float x1 = to_float(v[i]), x2 = to_float(v[i + half]);
    v[i] = from_float<T>(x1 * cs[i] - x2 * sn[i]);
    v[i + half] = from_float<T>(x2 * cs[i] + x1 * sn[i]);
  }
}

template <typename T>
void rotate(const char* op, T* x, const int* pos, int N, int H, int D, float theta,
            const RopeScaling& scaling, float sign, cudaStream_t stream) {
  OPD_REQUIRE(D > 0 && D % 2 == 0 && D <= kRopeMaxHeadDim, "cuda::", op,
              ": head dimension must be even, positive and at most ", kRopeMaxHeadDim, ", got ", D);
  OPD_REQUIRE(N >= 0 && H >= 0, "cuda::", op, ": negative shape N=", N, " H=", H);
  if (N == 0 || H == 0) return;
  rope_kernel<T><<<N, kThreads, sizeof(float) * D, stream>>>(x, pos, H, D, inv_freq(D, theta, scaling), sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void rope_forward(T* x, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling,
                  cudaStream_t stream) {
  rotate("rope_forward", x, pos, N, H, D, theta, scaling, 1.0f, stream);
}

template <typename T>
void rope_backward(T* dx, const int* pos, int N, int H, int D, float theta, const RopeScaling& scaling,
                   cudaStream_t stream) {
  rotate("rope_backward", dx, pos, N, H, D, theta, scaling, -1.0f, stream);
}

template void rope_forward<float>(float*, const int*, int, int, int, float, const RopeScaling&, cudaStream_t);
template void rope_forward<__nv_bfloat16>(__nv_bfloat16*, const int*, int, int, int, float, const RopeScaling&,
                                            cudaStream_t);
template void rope_backward<float>(float*, const int*, int, int, int, float, const RopeScaling&, cudaStream_t);
template void rope_backward<__nv_bfloat16>(__nv_bfloat16*, const int*, int, int, int, float, const RopeScaling&,
                                            cudaStream_t);

}  // namespace opd::cuda
