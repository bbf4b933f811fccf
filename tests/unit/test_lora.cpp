// The LoRA op (kernels/cpu/lora.h): the adapter's term against a naive loop, its three gradients
// against finite differences in double, B = 0 adding exactly nothing, and the merged weight giving
// the adapted layer's output.
#include <gtest/gtest.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/matmul.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

// scale * (inp A^T) B^T, in double.
std::vector<double> naive_lora(const std::vector<float>& inp, const std::vector<float>& A, const std::vector<float>& B,
                               int N, int K, int R, int M, double scale) {
  std::vector<double> u(size_t(N) * R, 0.0), out(size_t(N) * M, 0.0);
  for (int n = 0; n < N; ++n)
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < K; ++k) u[size_t(n) * R + r] += double(inp[size_t(n) * K + k]) * A[size_t(r) * K + k];
  for (int n = 0; n < N; ++n)
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) out[size_t(n) * M + m] += scale * u[size_t(n) * R + r] * B[size_t(m) * R + r];
  return out;
}

// N, K (in), R (rank), M (out).
const std::tuple<int, int, int, int> kShapes[] = {{7, 13, 3, 5}, {1, 4, 1, 6}, {33, 64, 16, 48}};

}  // namespace

TEST(Lora, ForwardAddsTheLowRankTerm) {
  for (auto [N, K, R, M] : kShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " R=" << R << " M=" << M);
    const auto inp = random_vector<float>(size_t(N) * K, 1), A = random_vector<float>(size_t(R) * K, 2);
    const auto B = random_vector<float>(size_t(M) * R, 3), out0 = random_vector<float>(size_t(N) * M, 4);
    auto want = naive_lora(inp, A, B, N, K, R, M, 0.75);
    for (size_t i = 0; i < want.size(); ++i) want[i] += out0[i];
    auto out = out0;
    std::vector<float> u(size_t(N) * R, 99.0f);  // scratch garbage is overwritten
    opd::cpu::lora_forward(out.data(), u.data(), inp.data(), A.data(), B.data(), N, K, R, M, 0.75f);
    expect_close(out, want, 1e-5, 1e-5, "out");
  }
}

// B = 0 (a fresh adapter): the output is the base output bit for bit, whatever A is.
TEST(Lora, ZeroBAddsExactlyNothing) {
  const int N = 9, K = 24, R = 4, M = 40;
  const auto inp = random_vector<float>(size_t(N) * K, 5), A = random_vector<float>(size_t(R) * K, 6);
  const std::vector<float> B(size_t(M) * R, 0.0f);
  const auto out0 = random_vector<float>(size_t(N) * M, 7);
  auto out = out0;
  std::vector<float> u(size_t(N) * R);
  opd::cpu::lora_forward(out.data(), u.data(), inp.data(), A.data(), B.data(), N, K, R, M, 8.0f);
  EXPECT_EQ(0, std::memcmp(out.data(), out0.data(), out.size() * sizeof(float)));
}

TEST(Lora, BackwardMatchesFiniteDifferences) {
  for (auto [N, K, R, M] : {std::tuple{7, 13, 3, 5}, std::tuple{4, 6, 2, 9}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K << " R=" << R << " M=" << M);
    const float scale = 1.5f;
    auto inp = random_vector<double>(size_t(N) * K, 8), A = random_vector<double>(size_t(R) * K, 9);
    auto B = random_vector<double>(size_t(M) * R, 10);
    const auto Rw = random_vector<double>(size_t(N) * M, 11);
    std::vector<double> out(size_t(N) * M), u(size_t(N) * R), du(size_t(N) * R);
    auto loss = [&] {
      std::fill(out.begin(), out.end(), 0.0);
      opd::cpu::lora_forward(out.data(), u.data(), inp.data(), A.data(), B.data(), N, K, R, M, scale);
      double l = 0;
      for (size_t i = 0; i < out.size(); ++i) l += out[i] * Rw[i];
      return l;
    };
    const auto num_dinp = numeric_gradient(loss, inp), num_dA = numeric_gradient(loss, A);
    const auto num_dB = numeric_gradient(loss, B);
    // All three accumulate: start from nonzero values and subtract them again.
    const auto dinp0 = random_vector<double>(inp.size(), 12), dA0 = random_vector<double>(A.size(), 13),
               dB0 = random_vector<double>(B.size(), 14);
    auto dinp = dinp0, dA = dA0, dB = dB0;
    opd::cpu::lora_backward(dinp.data(), dA.data(), dB.data(), u.data(), du.data(), Rw.data(), inp.data(), A.data(),
                            B.data(), N, K, R, M, scale);
    for (size_t i = 0; i < dinp.size(); ++i) dinp[i] -= dinp0[i];
    for (size_t i = 0; i < dA.size(); ++i) dA[i] -= dA0[i];
    for (size_t i = 0; i < dB.size(); ++i) dB[i] -= dB0[i];
    expect_close(dinp, num_dinp, 1e-8, 1e-6, "dinp");
    expect_close(dA, num_dA, 1e-8, 1e-6, "dA");
    expect_close(dB, num_dB, 1e-8, 1e-6, "dB");

    // Without the input's gradient, the adapters' gradients are the same.
    auto dA2 = dA0, dB2 = dB0;
    opd::cpu::lora_backward<double>(nullptr, dA2.data(), dB2.data(), u.data(), du.data(), Rw.data(), inp.data(),
                                    A.data(), B.data(), N, K, R, M, scale);
    for (size_t i = 0; i < dA2.size(); ++i) EXPECT_EQ(dA2[i] - dA0[i], dA[i]);
    for (size_t i = 0; i < dB2.size(); ++i) EXPECT_EQ(dB2[i] - dB0[i], dB[i]);
  }
}

// inp (W + scale B A)^T equals inp W^T + scale (inp A^T) B^T: what opd merge relies on.
TEST(Lora, MergedWeightGivesTheAdaptedOutput) {
  const int N = 11, K = 20, R = 4, M = 12;
  const auto inp = random_vector<float>(size_t(N) * K, 15), W = random_vector<float>(size_t(M) * K, 16);
  const auto A = random_vector<float>(size_t(R) * K, 17), B = random_vector<float>(size_t(M) * R, 18);
  std::vector<float> adapted(size_t(N) * M), u(size_t(N) * R), merged_out(size_t(N) * M);
  opd::cpu::matmul_forward(adapted.data(), inp.data(), W.data(), N, K, M);
  opd::cpu::lora_forward(adapted.data(), u.data(), inp.data(), A.data(), B.data(), N, K, R, M, 2.0f);
  auto merged = W;
  opd::cpu::lora_merge(merged.data(), A.data(), B.data(), K, R, M, 2.0f);
  opd::cpu::matmul_forward(merged_out.data(), inp.data(), merged.data(), N, K, M);
  expect_close(merged_out, std::vector<double>(adapted.begin(), adapted.end()), 1e-5, 1e-5, "merged");
}

TEST(Lora, RankZeroIsRefused) {
  std::vector<float> x(4);
  EXPECT_THROW(opd::cpu::lora_forward(x.data(), x.data(), x.data(), x.data(), x.data(), 1, 2, 0, 2, 1.0f), opd::Error);
}
