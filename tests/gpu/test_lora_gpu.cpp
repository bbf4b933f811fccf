// The LoRA op on the GPU (kernels/cuda/lora.cu) against the CPU op (kernels/cpu/lora.cpp) in double
// on the same bf16 inputs: the adapter's term added to a bf16 output, and the three gradients (dinp
// bf16, dA and dB fp32, accumulating). The GPU rounds the rank-R intermediates u = inp A^T and
// du = scale dout B to bf16 (they are GEMM operands), so each result is held to a bf16 rounding of
// the magnitude of its terms.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/lora.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/lora.cuh"

using namespace opd::testing;

namespace {

class LoraGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

struct Case {
  int N, K, R, M;
};
// Odd sizes, the miniature's width at ranks 4 and 16, and a Qwen3-0.6B projection at rank 32.
const Case kCases[] = {{7, 13, 3, 5}, {96, 64, 4, 192}, {96, 64, 16, 64}, {256, 1024, 32, 2048}};

std::vector<double> abs_of(std::vector<double> v) {
  for (double& x : v) x = std::fabs(x);
  return v;
}

// 2-3 bf16 roundings of the terms' magnitude (u, du and the output are rounded once each).
constexpr double kRtol = 1.2e-2;

TEST_F(LoraGpu, ForwardMatchesCpu) {
  opd::cuda::Matmul mm;
  uint32_t seed = 1;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " K=" << k.K << " R=" << k.R << " M=" << k.M);
    const float scale = 32.0f / k.R;
    const auto inp = to_bf16(random_vector<float>(size_t(k.N) * k.K, seed++));
    const auto A = to_bf16(random_vector<float>(size_t(k.R) * k.K, seed++, -0.1, 0.1));
    const auto B = to_bf16(random_vector<float>(size_t(k.M) * k.R, seed++, -0.1, 0.1));
    const auto out0 = to_bf16(random_vector<float>(size_t(k.N) * k.M, seed++));
    auto want = to_double(to_float(out0));
    std::vector<double> u(size_t(k.N) * k.R);
    const auto inp_d = to_double(to_float(inp)), A_d = to_double(to_float(A)), B_d = to_double(to_float(B));
    opd::cpu::lora_forward(want.data(), u.data(), inp_d.data(), A_d.data(), B_d.data(), k.N, k.K, k.R, k.M, scale);
    // The magnitude of the sum's terms: |out0| + scale |inp| |A|^T |B|^T.
    auto mag = abs_of(to_double(to_float(out0)));
    std::vector<double> u_abs(u.size());
    const auto ia = abs_of(inp_d), aa = abs_of(A_d), ba = abs_of(B_d);
    opd::cpu::lora_forward(mag.data(), u_abs.data(), ia.data(), aa.data(), ba.data(), k.N, k.K, k.R, k.M, scale);

    DeviceBuffer<bf16> d_inp(inp), d_A(A), d_B(B), d_out(out0), d_u(size_t(k.N) * k.R);
    opd::cuda::lora_forward(mm, d_out.get(), d_u.get(), d_inp.get(), d_A.get(), d_B.get(), k.N, k.K, k.R, k.M, scale);
    expect_near_all(to_float(d_out.host()), want, 1e-6 * k.K, kRtol, "out", &mag);
  }
}

TEST_F(LoraGpu, ZeroBAddsExactlyNothing) {
  opd::cuda::Matmul mm;
  const int N = 96, K = 64, R = 8, M = 192;
  const auto inp = to_bf16(random_vector<float>(size_t(N) * K, 50));
  const auto A = to_bf16(random_vector<float>(size_t(R) * K, 51));
  const auto out0 = to_bf16(random_vector<float>(size_t(N) * M, 52));
  DeviceBuffer<bf16> d_inp(inp), d_A(A), d_B(size_t(M) * R), d_out(out0), d_u(size_t(N) * R);
  opd::cuda::lora_forward(mm, d_out.get(), d_u.get(), d_inp.get(), d_A.get(), d_B.get(), N, K, R, M, 4.0f);
  expect_bitwise_equal(to_float(d_out.host()), to_float(out0), "out");
}

TEST_F(LoraGpu, BackwardMatchesCpu) {
  opd::cuda::Matmul mm;
  uint32_t seed = 100;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " K=" << k.K << " R=" << k.R << " M=" << k.M);
    const float scale = 32.0f / k.R;
    const auto inp = to_bf16(random_vector<float>(size_t(k.N) * k.K, seed++));
    const auto A = to_bf16(random_vector<float>(size_t(k.R) * k.K, seed++, -0.1, 0.1));
    const auto B = to_bf16(random_vector<float>(size_t(k.M) * k.R, seed++, -0.1, 0.1));
    const auto dout = to_bf16(random_vector<float>(size_t(k.N) * k.M, seed++));
    const auto dinp0 = to_bf16(random_vector<float>(size_t(k.N) * k.K, seed++));
    const auto dA0 = random_vector<float>(size_t(k.R) * k.K, seed++), dB0 = random_vector<float>(size_t(k.M) * k.R, seed++);
    const auto inp_d = to_double(to_float(inp)), A_d = to_double(to_float(A)), B_d = to_double(to_float(B)),
               dout_d = to_double(to_float(dout));
    auto want_dinp = to_double(to_float(dinp0)), want_dA = to_double(dA0), want_dB = to_double(dB0);
    std::vector<double> u(size_t(k.N) * k.R), du(u.size());
    opd::cpu::lora_backward(want_dinp.data(), want_dA.data(), want_dB.data(), u.data(), du.data(), dout_d.data(),
                            inp_d.data(), A_d.data(), B_d.data(), k.N, k.K, k.R, k.M, scale);
    // Magnitudes: the same sums over absolute values.
    auto mag_dinp = abs_of(to_double(to_float(dinp0))), mag_dA = abs_of(to_double(dA0)),
         mag_dB = abs_of(to_double(dB0));
    const auto ia = abs_of(inp_d), aa = abs_of(A_d), ba = abs_of(B_d), da = abs_of(dout_d);
    opd::cpu::lora_backward(mag_dinp.data(), mag_dA.data(), mag_dB.data(), u.data(), du.data(), da.data(), ia.data(),
                            aa.data(), ba.data(), k.N, k.K, k.R, k.M, scale);

    DeviceBuffer<bf16> d_inp(inp), d_A(A), d_B(B), d_dout(dout), d_dinp(dinp0), d_u(u.size()), d_du(du.size());
    DeviceBuffer<float> d_dA(dA0), d_dB(dB0);
    opd::cuda::lora_backward(mm, d_dinp.get(), d_dA.get(), d_dB.get(), d_u.get(), d_du.get(), d_dout.get(),
                             d_inp.get(), d_A.get(), d_B.get(), k.N, k.K, k.R, k.M, scale);
    expect_near_all(to_float(d_dinp.host()), want_dinp, 1e-6 * k.M, kRtol, "dinp", &mag_dinp);
    expect_near_all(d_dA.host(), want_dA, 1e-6 * k.N, kRtol, "dA", &mag_dA);
    expect_near_all(d_dB.host(), want_dB, 1e-6 * k.N, kRtol, "dB", &mag_dB);

    // Without dinp (a frozen first layer's input), the adapters' gradients accumulate again.
    opd::cuda::lora_backward(mm, nullptr, d_dA.get(), d_dB.get(), d_u.get(), d_du.get(), d_dout.get(), d_inp.get(),
                             d_A.get(), d_B.get(), k.N, k.K, k.R, k.M, scale);
    std::vector<double> twice_dA(want_dA.size()), mag2(mag_dA.size());
    for (size_t i = 0; i < twice_dA.size(); ++i) twice_dA[i] = 2 * want_dA[i] - dA0[i], mag2[i] = 2 * mag_dA[i];
    expect_near_all(d_dA.host(), twice_dA, 2e-6 * k.N, kRtol, "dA, second accumulation", &mag2);
  }
}

}  // namespace

#else

TEST(LoraGpu, ForwardMatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
