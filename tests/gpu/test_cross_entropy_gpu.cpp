#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "kernels/cpu/cross_entropy.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/device.cuh"
#include "vocab_gpu_util.h"

using opd::testing::DeviceBuffer;
using opd::testing::expect_near_all;
using opd::testing::to_double;

namespace {

struct Case {
  int N, V;
  size_t offset;
};

const Case kCases[] = {{3, 1, 0},   {5, 17, 0},    {7, 1000, 0},   {4, 1000, 1}, {33, 4096, 0},
                       {5, 4096, 3}, {3, 50257, 0}, {3, 151936, 0}, {2, 151936, 2}};

class CrossEntropyGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Separate and in-place gradients, and the loss-only call; skipped rows must come back all zero.
template <typename T>
void check_case(const Case& k, uint32_t seed, double tol_grad) {
  const int N = k.N, V = k.V;
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " offset=" << k.offset << " bf16="
                                    << (sizeof(T) == 2));
  const size_t NV = static_cast<size_t>(N) * V;
  const auto xf = opd::testing::lm_logits(N, V, seed);
  std::vector<T> x(NV);
  if constexpr (sizeof(T) == 2) x = opd::testing::to_bf16(xf); else x = xf;
  const auto xd = to_double(x);
  const auto t = opd::testing::targets_with_skips(N, V, seed + 1);
  const float scale = 0.37f;
  std::vector<double> loss(N), dx(NV);
  opd::cpu::cross_entropy_forward_backward(loss.data(), dx.data(), xd.data(), t.data(), double(scale), N, V);

  DeviceBuffer<T> d_x(x, k.offset), d_inplace(x, k.offset), d_dx(std::vector<T>(NV, T(1.0f)), k.offset);
  DeviceBuffer<int> d_t(t);
  DeviceBuffer<float> d_loss(N), d_loss2(N), d_loss3(N);
  opd::cuda::cross_entropy_forward_backward(d_loss.get(), d_dx.get(), d_x.get(), d_t.get(), scale, N, V);
  opd::cuda::cross_entropy_forward_backward(d_loss2.get(), d_inplace.get(), d_inplace.get(), d_t.get(), scale, N, V);
  opd::cuda::cross_entropy_forward_backward(d_loss3.get(), static_cast<T*>(nullptr), d_x.get(), d_t.get(), scale, N,
                                            V);
  CUDA_CHECK(cudaDeviceSynchronize());
  expect_near_all(d_loss.host(), loss, 2e-4, 1e-5, "loss");
  expect_near_all(d_loss2.host(), loss, 2e-4, 1e-5, "loss (in place)");
  expect_near_all(d_loss3.host(), loss, 2e-4, 1e-5, "loss (no gradient)");
  expect_near_all(d_dx.host(), dx, 2e-5, tol_grad, "dlogits", V);
  expect_near_all(d_inplace.host(), dx, 2e-5, tol_grad, "dlogits (in place)", V);
}

}  // namespace

TEST_F(CrossEntropyGpu, Fp32MatchesCpu) {
  uint32_t seed = 20;
  for (const Case& k : kCases) check_case<float>(k, seed += 5, 1e-4);
}

TEST_F(CrossEntropyGpu, Bf16MatchesCpu) {
  uint32_t seed = 200;
  for (const Case& k : kCases) check_case<opd::cuda::bf16>(k, seed += 5, 8e-3);
}

#else

TEST(CrossEntropyGpu, Fp32MatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
