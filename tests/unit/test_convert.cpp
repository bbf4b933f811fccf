// The host's fp32 <-> bf16 conversions, the reference of the CUDA convert op: round to nearest
// even at every kind of value (ties, overflow, denormals, NaN), and exact widening.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/convert.h"

namespace {

using opd::cpu::bf16_from_float;
using opd::cpu::float_from_bf16;

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

TEST(Convert, WideningIsExact) {
  EXPECT_EQ(float_from_bf16(0x3F80), 1.0f);
  EXPECT_EQ(float_from_bf16(0xC020), -2.5f);
  EXPECT_EQ(float_from_bf16(0x0001), std::ldexp(1.0f, -133));  // smallest bf16 denormal
  EXPECT_TRUE(std::signbit(float_from_bf16(0x8000)));
  EXPECT_EQ(float_from_bf16(0x7F80), std::numeric_limits<float>::infinity());
  // Every bf16 value survives the round trip bit for bit; a signalling NaN comes back quiet.
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const bool nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F);
    ASSERT_EQ(bf16_from_float(float_from_bf16(uint16_t(h))), nan ? (h | 0x40) : h) << h;
  }
}

TEST(Convert, RoundsToNearestEven) {
  const float one = 1.0f, ulp = std::ldexp(1.0f, -7);  // bf16's ulp at 1
  EXPECT_EQ(bf16_from_float(one + ulp / 2), 0x3F80);      // tie, even below
  EXPECT_EQ(bf16_from_float(one + 3 * ulp / 2), 0x3F82);  // tie, even above
  EXPECT_EQ(bf16_from_float(from_bits(0x3F808001)), 0x3F81);  // just above a tie
  EXPECT_EQ(bf16_from_float(from_bits(0x3F807FFF)), 0x3F80);  // just below one
  EXPECT_EQ(bf16_from_float(-(one + ulp / 2)), 0xBF80);
  // Ties in the denormals round the same way.
  EXPECT_EQ(bf16_from_float(from_bits(0x00008000)), 0x0000);
  EXPECT_EQ(bf16_from_float(from_bits(0x00018000)), 0x0002);
  EXPECT_EQ(bf16_from_float(from_bits(0x00000001)), 0x0000);  // the smallest float denormal
  EXPECT_EQ(bf16_from_float(from_bits(0x807FFFFF)), 0x8080);  // the largest rounds up to a normal
}

TEST(Convert, OverflowInfinityAndNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bf16_from_float(inf), 0x7F80);
  EXPECT_EQ(bf16_from_float(-inf), 0xFF80);
  EXPECT_EQ(bf16_from_float(std::numeric_limits<float>::max()), 0x7F80);  // rounds past bf16's max
  EXPECT_EQ(bf16_from_float(from_bits(0x7F7F7FFF)), 0x7F7F);             // bf16's max stays
  EXPECT_EQ(bf16_from_float(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  // A signalling NaN whose payload lies only in the dropped bits must not become an inf.
  EXPECT_EQ(bf16_from_float(from_bits(0x7F800001)), 0x7FC0);
  EXPECT_EQ(bf16_from_float(from_bits(0xFFA00000)), 0xFFE0);  // sign and top payload kept
}

TEST(Convert, ArraysMatchTheScalars) {
  std::vector<float> in = {0.0f, -0.0f, 1.0f / 3, -7.25e-39f, 3.0e38f, 65504.0f, -1e-3f};
  std::vector<uint16_t> half(in.size());
  std::vector<float> back(in.size());
  opd::cpu::convert(half.data(), in.data(), in.size());
  opd::cpu::convert(back.data(), half.data(), half.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(half[i], bf16_from_float(in[i])) << i;
    EXPECT_EQ(back[i], float_from_bf16(half[i])) << i;
  }
}

}  // namespace
