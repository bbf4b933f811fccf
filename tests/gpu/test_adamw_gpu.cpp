// AdamW and the gradient's sum of squares on the GPU against the CPU op, with fp32 and bf16
// gradients, and the bf16 copy of the parameters the update writes for the forward.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/adamw.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/device.cuh"

using namespace opd::testing;

namespace {

class AdamwGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Three steps from the same state on both devices. The GPU uses IEEE division and square root,
// so the two differ only where one contracts a multiply-add into an FMA and the other does not:
// a few ulp of m and v, and of each step's change to the parameters.
template <typename G>
void update_matches_cpu() {
  const size_t n = 100003;
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  std::vector<unsigned char> mask(n);
  for (size_t i = 0; i < n; ++i) mask[i] = i % 7 != 0;
  auto params = random_vector<float>(n, 21), m = std::vector<float>(n), v = std::vector<float>(n);
  DeviceBuffer<float> d_params(params), d_m(m), d_v(v);
  DeviceBuffer<unsigned char> d_mask(mask);
  DeviceBuffer<bf16> d_params_bf16{std::vector<bf16>(n)};
  for (int t = 1; t <= 3; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    const auto grads = Storage<G>::to(random_vector<float>(n, 30 + t, -0.1, 0.1));
    const auto grads_f = Storage<G>::back(grads);
    const float scale = t == 2 ? 0.5f : 1.0f;  // a clipped step
    opd::cpu::adamw_update(params.data(), grads_f.data(), m.data(), v.data(), mask.data(), n, lr, beta1, beta2, eps,
                           wd, t, scale);
    DeviceBuffer<G> d_grads(grads);
    opd::cuda::adamw_update(d_params.get(), d_grads.get(), d_m.get(), d_v.get(), d_mask.get(), n, lr, beta1, beta2,
                            eps, wd, t, scale, d_params_bf16.get());
    const auto got_params = d_params.host();
    expect_near_all(d_m.host(), m, 1e-9, 1e-6, "m");
    expect_near_all(d_v.host(), v, 1e-12, 1e-6, "v");
    expect_near_all(got_params, params, 1e-7, 1e-6, "params");
    expect_bitwise_equal(to_float(d_params_bf16.host()), bf16_rounded(got_params), "params_bf16");
  }
}

template <typename G>
void sumsq_matches_cpu_and_repeats() {
  for (size_t n : {size_t(1), size_t(1000), size_t(65536), size_t(3 * 65536 + 17)}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const auto g = Storage<G>::to(random_vector<float>(n, uint32_t(n)));
    const auto gf = Storage<G>::back(g);
    const double want = opd::cpu::grad_sumsq(gf.data(), n);
    DeviceBuffer<G> d_g(g);
    const double first = opd::cuda::grad_sumsq(d_g.get(), n);
    EXPECT_NEAR(first, want, 1e-12 * want);
    const double second = opd::cuda::grad_sumsq(d_g.get(), n);
    EXPECT_EQ(std::memcmp(&first, &second, sizeof first), 0) << first << " vs " << second;
    // Two buffers into one device double, in call order.
    DeviceBuffer<double> d_sum(std::vector<double>{0.0});
    opd::cuda::grad_sumsq_add(d_sum.get(), d_g.get(), n);
    opd::cuda::grad_sumsq_add(d_sum.get(), d_g.get(), n);
    EXPECT_NEAR(d_sum.host()[0], 2 * want, 2e-12 * want);
  }
}

}  // namespace

TEST_F(AdamwGpu, Fp32GradsMatchCpu) { update_matches_cpu<float>(); }
TEST_F(AdamwGpu, Bf16GradsMatchCpu) { update_matches_cpu<bf16>(); }
TEST_F(AdamwGpu, Fp32SumsqMatchesCpuAndRepeatsBitForBit) { sumsq_matches_cpu_and_repeats<float>(); }
TEST_F(AdamwGpu, Bf16SumsqMatchesCpuAndRepeatsBitForBit) { sumsq_matches_cpu_and_repeats<bf16>(); }

TEST_F(AdamwGpu, RejectsStepZero) {
  EXPECT_THROW(opd::cuda::adamw_update<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1e-3f, 0.9f, 0.95f, 1e-8f,
                                              0.0f, 0, 1.0f),
               opd::Error);
}

#else

TEST(AdamwGpu, Fp32GradsMatchCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
