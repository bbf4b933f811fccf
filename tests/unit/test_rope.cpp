#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "core/error.h"
#include "kernels/cpu/rope.h"

using opd::testing::expect_close;
using opd::testing::numeric_gradient;
using opd::testing::random_vector;

namespace {

// Hugging Face's Qwen3 rotary embedding written out as transformers computes it in float32:
// inv_freq = 1 / theta ** (arange(0, D, 2) / D), angle = pos * inv_freq, then rotate_half.
std::vector<float> hf_rope(const std::vector<float>& x, const std::vector<int>& pos, int N, int H, int D,
                           float theta) {
  std::vector<float> out(x.size());
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < D / 2; ++i) {
        const float inv_freq = 1.0f / std::pow(theta, float(2 * i) / float(D));
        const float angle = float(pos[n]) * inv_freq;
        const float c = std::cos(angle), s = std::sin(angle);
        const size_t base = (size_t(n) * H + h) * D;
        const float x1 = x[base + i], x2 = x[base + i + D / 2];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + D / 2] = x2 * c + x1 * s;
      }
  return out;
}

std::vector<int> positions(int N, int stride, int offset) {
  std::vector<int> p(N);
  for (int n = 0; n < N; ++n) p[n] = offset + n * stride;
  return p;
}

}  // namespace

TEST(Rope, ForwardMatchesHuggingFaceFloat) {
  // Positions far into a long context: a double-precision angle would be off by ~1e-3 there.
  for (auto [N, H, D, offset, theta] : {std::tuple{7, 3, 6, 0, 10000.0f}, std::tuple{5, 2, 128, 31000, 1e6f},
                                        std::tuple{64, 4, 64, 3, 1e6f}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " H=" << H << " D=" << D << " offset=" << offset);
    const auto pos = positions(N, 13, offset);
    const auto x = random_vector<float>(size_t(N) * H * D, 1);
    const auto expected = hf_rope(x, pos, N, H, D, theta);
    auto out = x;
    opd::cpu::rope_forward(out.data(), pos.data(), N, H, D, theta);
    expect_close(out, expected, 2e-6, 1e-5, "out");
  }
}

TEST(Rope, DoubleUsesDoubleAngles) {
  const int N = 3, H = 2, D = 10;
  const float theta = 10000.0f;
  const auto pos = positions(N, 7777, 5);
  const auto x = random_vector<double>(size_t(N) * H * D, 2);
  auto out = x;
  opd::cpu::rope_forward(out.data(), pos.data(), N, H, D, theta);
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < D / 2; ++i) {
        const double angle = pos[n] / std::pow(double(theta), 2.0 * i / D);
        const size_t base = (size_t(n) * H + h) * D;
        EXPECT_NEAR(out[base + i], x[base + i] * std::cos(angle) - x[base + i + D / 2] * std::sin(angle), 1e-12);
        EXPECT_NEAR(out[base + i + D / 2], x[base + i + D / 2] * std::cos(angle) + x[base + i] * std::sin(angle),
                    1e-12);
      }
}

TEST(Rope, BackwardInvertsForward) {
  const int N = 9, H = 3, D = 14;
  const auto pos = positions(N, 101, 17);
  const auto x = random_vector<double>(size_t(N) * H * D, 3);
  auto y = x;
  opd::cpu::rope_forward(y.data(), pos.data(), N, H, D, 1e6f);
  opd::cpu::rope_backward(y.data(), pos.data(), N, H, D, 1e6f);
  expect_close(y, x, 1e-13, 0.0, "x");
}

// Loss sum(rope(x) * R): its gradient in x is rope_backward(R).
TEST(Rope, BackwardMatchesFiniteDifferences) {
  const int N = 7, H = 2, D = 6;
  const auto pos = positions(N, 3, 2);
  auto x = random_vector<double>(size_t(N) * H * D, 4);
  const auto R = random_vector<double>(x.size(), 5);
  auto loss = [&] {
    auto y = x;
    opd::cpu::rope_forward(y.data(), pos.data(), N, H, D, 10000.0f);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * R[i];
    return l;
  };
  const auto expected = numeric_gradient(loss, x);
  auto dx = R;
  opd::cpu::rope_backward(dx.data(), pos.data(), N, H, D, 10000.0f);
  expect_close(dx, expected, 1e-8, 1e-6, "dx");
}

TEST(Rope, PositionZeroIsIdentity) {
  const int N = 1, H = 2, D = 8;
  const std::vector<int> pos = {0};
  const auto x = random_vector<float>(size_t(H) * D, 6);
  auto y = x;
  opd::cpu::rope_forward(y.data(), pos.data(), N, H, D, 1e6f);
  EXPECT_EQ(y, x);
}

TEST(Rope, RejectsOddHeadDimension) {
  std::vector<float> x(5);
  const std::vector<int> pos = {0};
  EXPECT_THROW(opd::cpu::rope_forward(x.data(), pos.data(), 1, 1, 5, 1e4f), opd::Error);
  EXPECT_THROW(opd::cpu::rope_backward(x.data(), pos.data(), 1, 1, 5, 1e4f), opd::Error);
}

// Llama 3.1-8B's inverse frequencies as transformers' _compute_llama3_parameters gives them in
// float32 (theta 500000, D 128, factor 8, low/high freq factors 1/4, original context 8192): kept
// (i <= 28), interpolated (29..34) and stretched by 8 (35..63).
TEST(Rope, Llama3InverseFrequenciesMatchTransformers) {
  const opd::RopeScaling s{8.0, 1.0, 4.0, 8192};
  const std::vector<float> f = opd::cpu::rope_inv_freq<float>(128, 500000.0f, s);
  ASSERT_EQ(f.size(), 64u);
  const std::pair<int, float> want[] = {{0, 0x1p+0f},           {20, 0x1.0f5386p-6f},  {30, 0x1.67a23ap-10f},
                                        {32, 0x1.132ba4p-11f}, {34, 0x1.765ba4p-13f}, {35, 0x1.90d10cp-14f},
                                        {63, 0x1.4985fep-22f}};
  for (auto [i, v] : want) EXPECT_EQ(f[i], v) << "inv_freq[" << i << "]";
  // Scaling only ever lowers a frequency, and leaves the high ones as plain RoPE has them.
  const std::vector<float> plain = opd::cpu::rope_inv_freq<float>(128, 500000.0f);
  for (int i = 0; i < 64; ++i) {
    EXPECT_LE(f[i], plain[i]) << i;
    if (i <= 28) EXPECT_EQ(f[i], plain[i]) << i;
    if (i >= 35) EXPECT_EQ(f[i], plain[i] / 8.0f) << i;
  }
}

TEST(Rope, Llama3BackwardInvertsForwardAndMatchesFiniteDifferences) {
  const opd::RopeScaling s{8.0, 1.0, 4.0, 16};
  const int N = 7, H = 2, D = 10;
  const auto pos = positions(N, 5, 3);
  auto x = random_vector<double>(size_t(N) * H * D, 7);
  auto y = x;
  opd::cpu::rope_forward(y.data(), pos.data(), N, H, D, 10000.0f, s);
  auto plain = x;
  opd::cpu::rope_forward(plain.data(), pos.data(), N, H, D, 10000.0f);
  EXPECT_NE(y, plain) << "the scaling should change some angles at this head dim";
  opd::cpu::rope_backward(y.data(), pos.data(), N, H, D, 10000.0f, s);
  expect_close(y, x, 1e-13, 0.0, "x");

  const auto R = random_vector<double>(x.size(), 8);
  auto loss = [&] {
    auto z = x;
    opd::cpu::rope_forward(z.data(), pos.data(), N, H, D, 10000.0f, s);
    double l = 0;
    for (size_t i = 0; i < z.size(); ++i) l += z[i] * R[i];
    return l;
  };
  const auto expected = numeric_gradient(loss, x);
  auto dx = R;
  opd::cpu::rope_backward(dx.data(), pos.data(), N, H, D, 10000.0f, s);
  expect_close(dx, expected, 1e-8, 1e-6, "dx");
}

TEST(Rope, RejectsInvalidLlama3Scaling) {
  std::vector<float> x(8);
  const std::vector<int> pos = {1};
  for (const opd::RopeScaling& s : {opd::RopeScaling{0.5, 1.0, 4.0, 64}, opd::RopeScaling{8.0, 4.0, 4.0, 64},
                                    opd::RopeScaling{8.0, 1.0, 4.0, 0}})
    EXPECT_THROW(opd::cpu::rope_forward(x.data(), pos.data(), 1, 1, 8, 1e4f, s), opd::Error);
}
