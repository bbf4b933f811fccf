#include "core/rng.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/rng.cuh"

namespace opd::cuda {

namespace {
// One thread per counter: four consecutive outputs from one Philox call.
__global__ void philox_fill_kernel(uint32_t* __restrict__ out, uint64_t seed, uint32_t stream, uint64_t first,
                                   size_t n) {
  const size_t c = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (4 * c >= n) return;
  const Philox4 r = philox_draw(seed, stream, first + c);
  for (int k = 0; k < 4 && 4 * c + k < n; ++k) out[4 * c + k] = r.v[k];
}
}  // namespace

void philox_fill(uint32_t* out, uint64_t seed, uint32_t stream, uint64_t first, size_t n) {
  if (n == 0) return;
  const size_t counters = (n + 3) / 4;
  const int threads = 256;
  philox_fill_kernel<<<static_cast<unsigned>((counters + threads - 1) / threads), threads>>>(out, seed, stream, first,
                                                                                             n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace opd::cuda
