// Philox on the GPU gives the CPU's numbers, bit for bit: sampling keyed by (seed, step,
// sequence, position) draws the same tokens on either device.
#include <gtest/gtest.h>

#include <vector>

#include "core/rng.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/rng.cuh"

TEST(PhiloxGpu, MatchesCpuBitForBit) {
  if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  const size_t n = 4 * 100003 + 3;  // a partial last counter too
  const uint64_t seed = 0x0123456789abcdefull, first = (uint64_t(7) << 32) | 11;
  uint32_t* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(uint32_t)));
  opd::cuda::philox_fill(d, seed, 42, first, n);
  std::vector<uint32_t> gpu(n);
  CUDA_CHECK(cudaMemcpy(gpu.data(), d, n * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaFree(d));
  for (size_t i = 0; i < n; ++i)
    ASSERT_EQ(gpu[i], opd::philox_draw(seed, 42, first + i / 4).v[i % 4]) << "draw " << i;
}
#else
TEST(PhiloxGpu, MatchesCpuBitForBit) { GTEST_SKIP() << "opd was built without CUDA"; }
#endif
