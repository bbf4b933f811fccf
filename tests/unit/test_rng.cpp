// Philox4x32-10 against the known-answer vectors of the Random123 distribution, and uniform01.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace {

void expect_kat(opd::Philox4 ctr, uint32_t k0, uint32_t k1, opd::Philox4 want) {
  const opd::Philox4 got = opd::philox4x32_10(ctr, k0, k1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], want.v[i]) << "word " << i;
}

TEST(Rng, PhiloxKnownAnswerZero) {
  expect_kat({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
}

TEST(Rng, PhiloxKnownAnswerAllOnes) {
  expect_kat({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
             {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
}

TEST(Rng, PhiloxKnownAnswerPi) {
  expect_kat({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
             {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

// philox_draw puts the counter's low word first, then its high word, then the stream; the seed is the key.
TEST(Rng, DrawLayout) {
  const uint64_t seed = 0x299f31d0a4093822ull, counter = 0x85a308d3243f6a88ull;
  const opd::Philox4 a = opd::philox_draw(seed, 0x13198a2eu, counter);
  const opd::Philox4 b = opd::philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0}}, 0xa4093822u, 0x299f31d0u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(a.v[i], b.v[i]);
  // Neighbouring counters, streams and seeds give different draws.
  EXPECT_NE(opd::philox_draw(1, 0, 0).v[0], opd::philox_draw(1, 0, 1).v[0]);
  EXPECT_NE(opd::philox_draw(1, 0, 0).v[0], opd::philox_draw(1, 1, 0).v[0]);
  EXPECT_NE(opd::philox_draw(1, 0, 0).v[0], opd::philox_draw(2, 0, 0).v[0]);
  EXPECT_NE(opd::philox_draw(1, 0, 1ull << 32).v[0], opd::philox_draw(1, 0, 1).v[0]);
}

TEST(Rng, Uniform01Range) {
  EXPECT_EQ(opd::uniform01(0u), 0.0f);
  EXPECT_EQ(opd::uniform01(0xffffffffu), 1.0f - 1.0f / 16777216.0f);
  EXPECT_LT(opd::uniform01(0xffffffffu), 1.0f);
  EXPECT_EQ(opd::uniform01(0x80000000u), 0.5f);
}

TEST(Rng, Uniform01RoughlyUniform) {
  const int M = 200000, B = 16;
  std::vector<int> bins(B, 0);
  double sum = 0;
  for (int i = 0; i < M; ++i) {
    const opd::Philox4 r = opd::philox_draw(42, 7, static_cast<uint64_t>(i));
    for (int w = 0; w < 4; ++w) {
      const float u = opd::uniform01(r.v[w]);
      ASSERT_GE(u, 0.0f);
      ASSERT_LT(u, 1.0f);
      ++bins[static_cast<int>(u * B)];
      sum += u;
    }
  }
  const double n = 4.0 * M, expected = n / B;
  double chi2 = 0;
  for (int b = 0; b < B; ++b) chi2 += (bins[b] - expected) * (bins[b] - expected) / expected;
  // 15 degrees of freedom: the 99.99% quantile is about 44.
  EXPECT_LT(chi2, 44.0);
  // Mean 1/2, standard error sqrt(1/12 / n).
  EXPECT_NEAR(sum / n, 0.5, 5 * std::sqrt(1.0 / 12.0 / n));
}

}  // namespace
