#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/rmsnorm.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/rmsnorm.cuh"

using opd::testing::expect_close;
using opd::testing::random_vector;

namespace {

constexpr float kEps = 1e-6f;

// A device copy of a host vector, starting `offset` floats into its allocation so that a test can
// hand the kernels pointers that are not 16-byte aligned.
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<float>& host, size_t offset = 0) : n_(host.size()), offset_(offset) {
    CUDA_CHECK(cudaMalloc(&base_, sizeof(float) * (n_ + offset_ + 1)));
    CUDA_CHECK(cudaMemcpy(get(), host.data(), sizeof(float) * n_, cudaMemcpyHostToDevice));
  }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  ~DeviceVector() { cudaFree(base_); }
  float* get() { return base_ + offset_; }
  std::vector<float> host() {
    std::vector<float> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), get(), sizeof(float) * n_, cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  float* base_ = nullptr;
  size_t n_, offset_;
};

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Case {
  int N, C;
  size_t offset;  // nonzero: misaligned pointers, which must take the scalar path
};

class RmsNormGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

}  // namespace

// The CPU op in double is the reference, so the tolerances measure the GPU's float error alone.
// The shapes cover: a warp per row and a block per row, widths that are and are not multiples of
// 4 and 32, misaligned rows, and more rows than the backward kernel has blocks (N > 1024 teams).
TEST_F(RmsNormGpu, ForwardAndBackwardMatchCpu) {
  const Case cases[] = {{7, 13, 0},     {300, 128, 0},  {33, 4096, 0}, {5, 1030, 0},
                        {9000, 40, 0},  {1500, 2048, 0}, {17, 256, 1},  {3, 2048, 3}};
  uint32_t seed = 1;
  for (const Case& k : cases) {
    const int N = k.N, C = k.C;
    SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C << " offset=" << k.offset);
    const size_t NC = size_t(N) * C;
    const auto x = random_vector<float>(NC, seed++, -2.0, 2.0);
    const auto w = random_vector<float>(C, seed++, 0.5, 1.5);
    const auto dout = random_vector<float>(NC, seed++);
    const auto dx0 = random_vector<float>(NC, seed++);
    const auto dw0 = random_vector<float>(C, seed++);

    std::vector<double> out(NC), rstd(N), dx = to_double(dx0), dw = to_double(dw0);
    const auto xd = to_double(x), wd = to_double(w), doutd = to_double(dout);
    opd::cpu::rmsnorm_forward(out.data(), rstd.data(), xd.data(), wd.data(), N, C, kEps);
    opd::cpu::rmsnorm_backward(dx.data(), dw.data(), doutd.data(), xd.data(), wd.data(), rstd.data(), N, C);

    DeviceVector d_x(x, k.offset), d_w(w, k.offset), d_dout(dout, k.offset), d_dx(dx0, k.offset),
        d_dw(dw0, k.offset), d_out{std::vector<float>(NC), k.offset}, d_rstd{std::vector<float>(N)};
    opd::cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, kEps);
    opd::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), d_rstd.get(), N, C);
    CUDA_CHECK(cudaDeviceSynchronize());

    expect_close(d_out.host(), out, 1e-5, 1e-5, "out");
    expect_close(d_rstd.host(), rstd, 0.0, 1e-5, "rstd");
    expect_close(d_dx.host(), dx, 1e-5, 1e-5, "dx");
    // dw sums N rows of O(1) terms: its size, and the float error, grow like sqrt(N).
    expect_close(d_dw.host(), dw, 1e-5 * std::sqrt(double(N)), 1e-5, "dw");
  }
}

TEST_F(RmsNormGpu, BackwardIsBitwiseDeterministic) {
  for (auto [N, C] : {std::pair{9000, 40}, std::pair{1500, 2048}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " C=" << C);
    const size_t NC = size_t(N) * C;
    const auto x = random_vector<float>(NC, 50), w = random_vector<float>(C, 51);
    const auto dout = random_vector<float>(NC, 52);
    DeviceVector d_x(x), d_w(w), d_dout(dout), d_out{std::vector<float>(NC)}, d_rstd{std::vector<float>(N)};
    opd::cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, kEps);
    std::vector<float> first_dx, first_dw;
    for (int run = 0; run < 3; ++run) {
      DeviceVector d_dx{std::vector<float>(NC)}, d_dw{std::vector<float>(C)};
      opd::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), d_rstd.get(), N, C);
      const auto dx = d_dx.host(), dw = d_dw.host();
      if (run == 0) first_dx = dx, first_dw = dw;
      EXPECT_EQ(dx, first_dx) << "run " << run;
      EXPECT_EQ(dw, first_dw) << "run " << run;
    }
  }
}

#else

TEST(RmsNormGpu, ForwardAndBackwardMatchCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
