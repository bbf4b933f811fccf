// RMSNorm on the GPU against the CPU op: float storage against the op in double, bf16 storage
// against the op in float on the same bf16-rounded inputs; warp-per-row and block-per-row shapes,
// packed and scalar paths, the caller's workspace, a non-default stream, and a dw that is the same
// bits on every run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/rmsnorm.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include "gpu/device_buffer.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/rmsnorm.cuh"

using namespace opd::testing;

namespace {

constexpr float kEps = 1e-6f;

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

// One forward and backward on the GPU in storage type T, from float data (rounded to T on the
// way in; dw0 stays fp32). `stream` and `workspace` are passed through; results come back widened.
struct Outputs {
  std::vector<float> out, rstd, dx, dw;
};
struct Inputs {
  std::vector<float> x, w, dout, dx0, dw0;
};

Inputs make_inputs(int N, int C, uint32_t seed) {
  const size_t NC = size_t(N) * C;
  return {random_vector<float>(NC, seed, -2.0, 2.0), random_vector<float>(C, seed + 1, 0.5, 1.5),
          random_vector<float>(NC, seed + 2), random_vector<float>(NC, seed + 3), random_vector<float>(C, seed + 4)};
}

template <typename T>
Outputs run_gpu(const Inputs& in, int N, int C, size_t offset, cudaStream_t stream = 0, bool use_workspace = false) {
  const size_t NC = size_t(N) * C;
  DeviceBuffer<T> d_x(Storage<T>::to(in.x), offset), d_w(Storage<T>::to(in.w), offset),
      d_dout(Storage<T>::to(in.dout), offset), d_dx(Storage<T>::to(in.dx0), offset),
      d_out(std::vector<T>(NC), offset);
  DeviceBuffer<float> d_dw(in.dw0, offset), d_rstd{std::vector<float>(N)};
  // Guard floats after the workspace, to catch a write past the size the op asked for.
  const size_t ws_floats = opd::cuda::rmsnorm_backward_workspace_bytes(N, C) / sizeof(float);
  constexpr size_t kGuard = 64;
  const float sentinel = 12345.0f;
  DeviceBuffer<float> d_ws(std::vector<float>(use_workspace ? ws_floats + kGuard : 0, sentinel));
  CUDA_CHECK(cudaDeviceSynchronize());  // the uploads ran on the default stream; `stream` may not wait for it
  opd::cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, kEps, stream);
  opd::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), d_rstd.get(), N, C, stream,
                              use_workspace ? d_ws.get() : nullptr);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (use_workspace) {
    const auto ws = d_ws.host();
    for (size_t i = ws_floats; i < ws.size(); ++i) EXPECT_EQ(ws[i], sentinel) << "workspace overrun at " << i;
  }
  return {Storage<T>::back(d_out.host()), d_rstd.host(), Storage<T>::back(d_dx.host()), d_dw.host()};
}

// The CPU op in R (double or float) on the values the GPU op reads (`in` rounded to T).
template <typename R>
Outputs run_cpu(const Inputs& in, int N, int C, bool bf16) {
  auto as = [&](const std::vector<float>& v) {
    const auto r = bf16 ? bf16_rounded(v) : v;
    return std::vector<R>(r.begin(), r.end());
  };
  const auto x = as(in.x), w = as(in.w), dout = as(in.dout);
  std::vector<R> out(x.size()), rstd(N), dx = as(in.dx0), dw(in.dw0.begin(), in.dw0.end());
  opd::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, kEps);
  opd::cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  auto f = [](const std::vector<R>& v) { return std::vector<float>(v.begin(), v.end()); };
  return {f(out), f(rstd), f(dx), f(dw)};
}

void expect_same_bits(const Outputs& a, const Outputs& b) {
  expect_bitwise_equal(a.out, b.out, "out");
  expect_bitwise_equal(a.rstd, b.rstd, "rstd");
  expect_bitwise_equal(a.dx, b.dx, "dx");
  expect_bitwise_equal(a.dw, b.dw, "dw");
}

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
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " offset=" << k.offset);
    const Inputs in = make_inputs(N, C, seed);
    seed += 5;
    const Outputs want = run_cpu<double>(in, N, C, false), got = run_gpu<float>(in, N, C, k.offset);
    expect_close(got.out, want.out, 1e-5, 1e-5, "out");
    expect_close(got.rstd, want.rstd, 0.0, 1e-5, "rstd");
    expect_close(got.dx, want.dx, 1e-5, 1e-5, "dx");
    // dw sums N rows of O(1) terms: its size, and the float error, grow like sqrt(N).
    expect_close(got.dw, want.dw, 1e-5 * std::sqrt(double(N)), 1e-5, "dw");
  }
}

// bf16 storage: out and dx are rounded once to bf16 (2^-9 relative), rstd and dw stay fp32. Both
// sides read the same bf16 values and form every product exactly in fp32, so dw differs only by
// the order of its fp32 sums (the CPU's runs down N rows in sequence: an error that grows with N).
// Shapes: qk-norm's (a warp per row, C = head_dim 128, N = 4096 rows) and the model's widths
// (C = 1024 still a warp per row; 2048 and 4096 a block per row), widths that are not a multiple of
// the 8-element pack (the scalar path), misaligned rows, and N > 1024 teams.
TEST_F(RmsNormGpu, Bf16MatchesCpu) {
  const Case cases[] = {{4096, 128, 0}, {4096, 128, 1}, {300, 1024, 0}, {1500, 2048, 0}, {64, 4096, 0},
                        {33, 4096, 3},  {7, 13, 0},     {5, 1030, 0},   {9000, 40, 0},   {17, 2052, 0}};
  uint32_t seed = 100;
  for (const Case& k : cases) {
    const int N = k.N, C = k.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " offset=" << k.offset);
    const Inputs in = make_inputs(N, C, seed);
    seed += 5;
    const Outputs want = run_cpu<float>(in, N, C, true), got = run_gpu<bf16>(in, N, C, k.offset);
    expect_near_all(got.out, want.out, 1e-5, 1e-2, "out");
    expect_near_all(got.rstd, want.rstd, 0.0, 1e-5, "rstd");
    // The absolute term: where dx0 and the new gradient cancel, fp32 differences of O(1) terms.
    expect_near_all(got.dx, want.dx, 1e-4, 1e-2, "dx");
    expect_near_all(got.dw, want.dw, 1e-4 * std::sqrt(double(N)), 1e-4, "dw");
  }
}

// The caller's workspace and a non-blocking stream change where the partial sums live and where
// the work is queued, not one bit of the results.
TEST_F(RmsNormGpu, WorkspaceAndStreamGiveTheSameBits) {
  EXPECT_EQ(opd::cuda::rmsnorm_backward_workspace_bytes(0, 128), 0u);
  EXPECT_EQ(opd::cuda::rmsnorm_backward_workspace_bytes(16, 0), 0u);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const Case& k : {Case{4096, 128, 0}, Case{1500, 2048, 0}, Case{9000, 40, 1}, Case{5, 1030, 0}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " C=" << k.C << " offset=" << k.offset);
    const Inputs in = make_inputs(k.N, k.C, 200);
    EXPECT_GT(opd::cuda::rmsnorm_backward_workspace_bytes(k.N, k.C), 0u);
    const Outputs f = run_gpu<float>(in, k.N, k.C, k.offset);
    expect_same_bits(run_gpu<float>(in, k.N, k.C, k.offset, 0, true), f);
    expect_same_bits(run_gpu<float>(in, k.N, k.C, k.offset, stream, true), f);
    const Outputs b = run_gpu<bf16>(in, k.N, k.C, k.offset);
    expect_same_bits(run_gpu<bf16>(in, k.N, k.C, k.offset, 0, true), b);
    expect_same_bits(run_gpu<bf16>(in, k.N, k.C, k.offset, stream, false), b);
    expect_same_bits(run_gpu<bf16>(in, k.N, k.C, k.offset, stream, true), b);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

template <typename T>
void backward_is_bitwise_deterministic() {
  for (auto [N, C] : {std::pair{9000, 40}, std::pair{4096, 128}, std::pair{1500, 2048}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const size_t NC = size_t(N) * C;
    const auto x = Storage<T>::to(random_vector<float>(NC, 50)), w = Storage<T>::to(random_vector<float>(C, 51));
    const auto dout = Storage<T>::to(random_vector<float>(NC, 52));
    DeviceBuffer<T> d_x(x), d_w(w), d_dout(dout), d_out{std::vector<T>(NC)};
    DeviceBuffer<float> d_rstd{std::vector<float>(N)};
    opd::cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, kEps);
    std::vector<float> first_dx, first_dw;
    for (int run = 0; run < 3; ++run) {
      DeviceBuffer<T> d_dx{std::vector<T>(NC)};
      DeviceBuffer<float> d_dw{std::vector<float>(C)};
      opd::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), d_rstd.get(), N, C);
      const auto dx = Storage<T>::back(d_dx.host()), dw = d_dw.host();
      if (run == 0) first_dx = dx, first_dw = dw;
      expect_bitwise_equal(dx, first_dx, "dx");
      expect_bitwise_equal(dw, first_dw, "dw");
    }
  }
}

TEST_F(RmsNormGpu, BackwardIsBitwiseDeterministic) { backward_is_bitwise_deterministic<float>(); }
TEST_F(RmsNormGpu, Bf16BackwardIsBitwiseDeterministic) { backward_is_bitwise_deterministic<bf16>(); }

#else

TEST(RmsNormGpu, ForwardAndBackwardMatchCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
