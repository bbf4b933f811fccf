// fp32 <-> bf16 on the GPU against the CPU reference (kernels/cpu/convert.h), bit for bit: NaNs
// (quiet, signalling, negative, with payloads), infinities, overflow, denormals, ties, random bit
// patterns; sizes around the 8-element pack and pointers at every alignment, with guard elements
// around the output to catch a write past either end.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/convert.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/device.cuh"

using namespace opd::testing;

namespace {

class ConvertGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The special values first, then random bit patterns (every exponent, NaNs and denormals among
// them), then values near bf16's rounding points, to n in all.
std::vector<float> test_floats(size_t n, uint32_t seed) {
  const uint32_t special[] = {
      0x00000000, 0x80000000, 0x7F800000, 0xFF800000,  // zeros, infinities
      0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,  // NaNs: quiet, signalling (payload only in low bits)
      0x7FA00000, 0x7FFFFFFF, 0x7F80FFFF,              // NaN payloads
      0x00000001, 0x00008000, 0x00018000, 0x0000FFFF,  // denormals: smallest, ties to even, below a tie
      0x007FFFFF, 0x807FFFFF, 0x00800000,              // the largest denormals (round up to normal), smallest normal
      0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  // ties at 1 (down, up), just off them
      0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0xFF7FFFFF,  // round past bf16's max to inf, or stay
  };
  std::vector<float> v;
  for (uint32_t b : special) v.push_back(from_bits(b));
  std::mt19937 gen(seed);
  while (v.size() < n) {
    const uint32_t r = gen();
    v.push_back(from_bits(v.size() % 2 ? r : (r & 0xFFFF0000u) | (0x7FFF + (r & 3))));  // odd: anything; even: ~ties
  }
  v.resize(n);
  return v;
}

constexpr size_t kGuard = 16;  // elements of sentinel either side of the output
struct Case {
  size_t n, in_offset, out_offset;  // offsets in elements: 16-byte aligned or not
};
// n: empty, under one pack, a pack, a pack and a tail, many grid strides. Offsets: both aligned
// (packs), both misaligned, and one of each (the scalar path).
const Case kCases[] = {{0, 0, 0},    {1, 0, 0},     {7, 0, 0},     {8, 0, 0},    {9, 0, 0},
                       {4099, 0, 0}, {300007, 0, 0}, {4099, 1, 1}, {4099, 0, 3}, {4099, 3, 0},
                       {4101, 4, 8}, {26, 0, 0}};

TEST_F(ConvertGpu, NarrowingMatchesCpuBitForBit) {
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "n=" << k.n << " in_offset=" << k.in_offset << " out_offset=" << k.out_offset);
    const auto in = test_floats(k.n, 1);
    std::vector<uint16_t> want(k.n);
    opd::cpu::convert(want.data(), in.data(), k.n);
    const uint16_t sentinel = 0xABCD;
    std::vector<uint16_t> out_host(k.out_offset + k.n + kGuard, sentinel);
    DeviceBuffer<float> d_in(in, k.in_offset);
    DeviceBuffer<uint16_t> d_out(out_host);
    opd::cuda::convert(reinterpret_cast<bf16*>(d_out.get() + k.out_offset), d_in.get(), k.n);
    const auto got = d_out.host();
    expect_bitwise_equal(std::vector<uint16_t>(got.begin() + k.out_offset, got.begin() + k.out_offset + k.n), want,
                         "bf16 bits");
    for (size_t i = 0; i < got.size(); ++i) {
      const bool inside = i >= k.out_offset && i < k.out_offset + k.n;
      if (!inside) {
        ASSERT_EQ(got[i], sentinel) << "written outside, at " << i;
      }
    }
  }
}

TEST_F(ConvertGpu, WideningMatchesCpuBitForBit) {
  std::vector<uint16_t> every(65536);  // every bf16 value, NaNs and denormals included
  for (uint32_t h = 0; h < every.size(); ++h) every[h] = uint16_t(h);
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "n=" << k.n << " in_offset=" << k.in_offset << " out_offset=" << k.out_offset);
    std::vector<uint16_t> in(k.n);
    for (size_t i = 0; i < k.n; ++i) in[i] = every[(i * 40503u) % every.size()];  // a stride coprime to 2^16
    std::vector<float> want(k.n);
    opd::cpu::convert(want.data(), in.data(), k.n);
    const float sentinel = from_bits(0x7FABCDEF);
    std::vector<float> out_host(k.out_offset + k.n + kGuard, sentinel);
    DeviceBuffer<uint16_t> d_in(in, k.in_offset);
    DeviceBuffer<float> d_out(out_host);
    opd::cuda::convert(d_out.get() + k.out_offset, reinterpret_cast<const bf16*>(d_in.get()), k.n);
    const auto got = d_out.host();
    expect_bitwise_equal(std::vector<float>(got.begin() + k.out_offset, got.begin() + k.out_offset + k.n), want,
                         "float bits");
    for (size_t i = 0; i < got.size(); ++i) {
      const bool inside = i >= k.out_offset && i < k.out_offset + k.n;
      if (!inside) {
        ASSERT_EQ(std::memcmp(&got[i], &sentinel, 4), 0) << "written outside, at " << i;
      }
    }
  }
  // All 2^16 values in one aligned call, and back again: narrowing an exact bf16 value is exact.
  std::vector<float> wide(every.size());
  opd::cpu::convert(wide.data(), every.data(), every.size());
  DeviceBuffer<uint16_t> d_every(every);
  DeviceBuffer<float> d_wide(std::vector<float>(every.size()));
  DeviceBuffer<uint16_t> d_back(std::vector<uint16_t>(every.size()));
  opd::cuda::convert(d_wide.get(), reinterpret_cast<const bf16*>(d_every.get()), every.size());
  opd::cuda::convert(reinterpret_cast<bf16*>(d_back.get()), d_wide.get(), every.size());
  expect_bitwise_equal(d_wide.host(), wide, "all bf16 values widened");
  std::vector<uint16_t> back(every.size());
  opd::cpu::convert(back.data(), wide.data(), wide.size());
  expect_bitwise_equal(d_back.host(), back, "all bf16 values narrowed back");
}

TEST_F(ConvertGpu, RunsOnTheGivenStream) {
  const size_t n = 100003;
  const auto in = test_floats(n, 2);
  std::vector<uint16_t> want(n);
  opd::cpu::convert(want.data(), in.data(), n);
  DeviceBuffer<float> d_in(in), d_wide{std::vector<float>(n)};
  DeviceBuffer<uint16_t> d_out{std::vector<uint16_t>(n)};
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaDeviceSynchronize());  // the uploads, which ran on the default stream
  opd::cuda::convert(reinterpret_cast<bf16*>(d_out.get()), d_in.get(), n, stream);
  opd::cuda::convert(d_wide.get(), reinterpret_cast<const bf16*>(d_out.get()), n, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaStreamDestroy(stream));
  expect_bitwise_equal(d_out.host(), want, "bf16 bits");
  std::vector<float> wide(n);
  opd::cpu::convert(wide.data(), want.data(), n);
  expect_bitwise_equal(d_wide.host(), wide, "widened");
}

}  // namespace

#else

TEST(ConvertGpu, NarrowingMatchesCpuBitForBit) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
