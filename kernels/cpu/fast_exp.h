// A branch-free exp for float that the compiler vectorizes (libm's expf is a scalar call). Within
// 2 ulp of expf on [-87, 88]; below that it returns exactly 0 and above it +inf, as expf does.
// It also makes results independent of the libm version. Doubles keep std::exp: the double
// instantiations exist for finite-difference tests, where accuracy is the point.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>

namespace opd::cpu {

inline float exp_fast(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447504019f;
  const float xc = std::min(std::max(x, lo), hi);
  // x = n ln2 + r with |r| <= ln2/2, ln2 split in two so n*ln2 is exact.
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = x < lo ? 0.0f : er * scale;
  return x > hi ? HUGE_VALF : y;
}

inline double exp_fast(double x) { return std::exp(x); }

}  // namespace opd::cpu
