// The residual add on the GPU against the CPU op (in double), in float and bf16.
#include <gtest/gtest.h>

#include <vector>

#include "common/check.h"
#include "kernels/cpu/residual.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/residual.cuh"

using namespace opd::testing;

namespace {

class ResidualGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Sizes: under one pack, a tail after the packs, several grid strides; offset 1 misaligns every
// pointer, so the scalar kernel runs.
struct Case {
  size_t n, offset;
};
const Case kCases[] = {{1, 0}, {13, 0}, {4099, 0}, {300007, 0}, {4099, 1}};

// Each element is one fp32 add, rounded once to the storage type: float is exact, bf16 within
// half an ulp of the exact sum of the rounded inputs.
template <typename T>
void residual_matches_cpu() {
  uint32_t seed = 100;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "n=" << k.n << " offset=" << k.offset);
    const auto x = Storage<T>::to(random_vector<float>(k.n, seed++, -4.0, 4.0));
    const auto y = Storage<T>::to(random_vector<float>(k.n, seed++));
    const auto xd = to_double(Storage<T>::back(x)), yd = to_double(Storage<T>::back(y));
    std::vector<double> want(k.n);
    opd::cpu::residual_forward(want.data(), xd.data(), yd.data(), k.n);
    DeviceBuffer<T> d_x(x, k.offset), d_y(y, k.offset), d_out(std::vector<T>(k.n), k.offset);
    opd::cuda::residual_forward(d_out.get(), d_x.get(), d_y.get(), k.n);
    const double rtol = sizeof(T) == 4 ? 1.2e-7 : 4e-3;
    expect_near_all(Storage<T>::back(d_out.host()), want, 0.0, rtol, "out");
    opd::cuda::residual_forward(d_x.get(), d_x.get(), d_y.get(), k.n);  // x += y
    expect_near_all(Storage<T>::back(d_x.host()), want, 0.0, rtol, "out in place");
  }
}

}  // namespace

TEST_F(ResidualGpu, FloatMatchesCpu) { residual_matches_cpu<float>(); }
TEST_F(ResidualGpu, Bf16MatchesCpu) { residual_matches_cpu<bf16>(); }

#else

TEST(ResidualGpu, FloatMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
