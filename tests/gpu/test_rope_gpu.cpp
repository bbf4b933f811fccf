// RoPE on the GPU against the CPU op, forward and backward, float and bf16, plain and with
// Llama 3.1 scaling.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/rope.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/rope.cuh"

using namespace opd::testing;

namespace {

class RopeGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

struct Case {
  int N, H, D, max_pos;
};
// Head dims of the model (64, 128) and odd halves (6, 10); more pairs per row than threads in a
// block (16 x 64); positions up to 40000, where a sloppy angle would show.
const Case kCases[] = {{5, 3, 64, 10}, {33, 16, 128, 4096}, {7, 2, 6, 40000}, {300, 5, 10, 2047}, {1, 1, 2, 0}};

// The CPU op in float is the reference: the GPU forms the same float angles and the same
// correctly rounded cos/sin, so float differs only in the rotation's rounding (FMA or not); bf16
// adds one rounding of each output (2^-8 relative, ~4e-3 absolute for values up to 1).
// Llama 3.1-8B's scaling with theta 500000: at D=128 about half the frequencies are stretched by
// 8 and a few interpolated.
const opd::RopeScaling kLlama31{8.0, 1.0, 4.0, 8192};

template <typename T>
void matches_cpu(const opd::RopeScaling& scaling = {}) {
  const double atol = sizeof(T) == 4 ? 2e-6 : 8e-3, rtol = sizeof(T) == 4 ? 1e-5 : 8e-3;
  const float theta = scaling.enabled() ? 500000.0f : 1000000.0f;  // Llama 3.1's, Qwen3's
  uint32_t seed = 7;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " H=" << k.H << " D=" << k.D);
    const size_t n = size_t(k.N) * k.H * k.D;
    std::vector<int> pos(k.N);
    std::mt19937 gen(seed++);
    for (int& p : pos) p = std::uniform_int_distribution<int>(0, k.max_pos)(gen);
    const auto x = Storage<T>::to(random_vector<float>(n, seed++));
    auto want_fwd = Storage<T>::back(x), want_bwd = Storage<T>::back(x);
    opd::cpu::rope_forward(want_fwd.data(), pos.data(), k.N, k.H, k.D, theta, scaling);
    opd::cpu::rope_backward(want_bwd.data(), pos.data(), k.N, k.H, k.D, theta, scaling);

    DeviceBuffer<int> d_pos(pos);
    DeviceBuffer<T> d_fwd(x), d_bwd(x);
    opd::cuda::rope_forward(d_fwd.get(), d_pos.get(), k.N, k.H, k.D, theta, scaling);
    opd::cuda::rope_backward(d_bwd.get(), d_pos.get(), k.N, k.H, k.D, theta, scaling);
    expect_near_all(Storage<T>::back(d_fwd.host()), want_fwd, atol, rtol, "forward");
    expect_near_all(Storage<T>::back(d_bwd.host()), want_bwd, atol, rtol, "backward");
  }
}

}  // namespace

TEST_F(RopeGpu, FloatMatchesCpu) { matches_cpu<float>(); }
TEST_F(RopeGpu, Bf16MatchesCpu) { matches_cpu<bf16>(); }
TEST_F(RopeGpu, Llama3ScalingFloatMatchesCpu) { matches_cpu<float>(kLlama31); }
TEST_F(RopeGpu, Llama3ScalingBf16MatchesCpu) { matches_cpu<bf16>(kLlama31); }

TEST_F(RopeGpu, RejectsAnOddHeadDim) {
  EXPECT_THROW(opd::cuda::rope_forward<float>(nullptr, nullptr, 1, 1, 7, 10000.0f), opd::Error);
}

#else

TEST(RopeGpu, FloatMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
