// The embedding on the GPU against the CPU op. Both directions are exact: the forward copies
// rows, and the backward adds each token's rows in the CPU op's order (ascending position) in
// fp32, so its result is the CPU's bit for bit, for float and for bf16 gradients alike.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/embedding.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/embedding.cuh"

using namespace opd::testing;

namespace {

class EmbeddingGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

struct Case {
  int N, V, C;
  size_t offset;  // nonzero: misaligned rows, the scalar copy
};
// Few distinct tokens (long runs of one id), a Qwen-sized vocabulary (mostly distinct ids),
// widths below and above one block of threads, and misaligned rows.
const Case kCases[] = {{3000, 7, 40, 0}, {300, 151936, 1024, 0}, {17, 50, 13, 0}, {1000, 100, 600, 1}, {1, 1, 1, 0}};

std::vector<int> random_tokens(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  // A skewed draw: many repeats of the low ids, as with real text.
  for (int& x : t) x = int(std::min<double>(V - 1, std::abs(std::normal_distribution<double>(0, V / 3.0)(gen))));
  return t;
}

template <typename T>
void matches_cpu() {
  uint32_t seed = 11;
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " V=" << k.V << " C=" << k.C << " offset=" << k.offset);
    const size_t NC = size_t(k.N) * k.C, VC = size_t(k.V) * k.C;
    const auto tokens = random_tokens(k.N, k.V, seed++);
    const auto table = Storage<T>::to(random_vector<float>(VC, seed++));
    const auto dout = Storage<T>::to(random_vector<float>(NC, seed++));
    const auto dtable0 = random_vector<float>(VC, seed++);

    std::vector<float> want_out(NC);
    const auto table_f = Storage<T>::back(table);
    opd::cpu::embedding_forward(want_out.data(), tokens.data(), table_f.data(), k.N, k.C);
    auto want_dtable = dtable0;
    const auto dout_f = Storage<T>::back(dout);
    opd::cpu::embedding_backward(want_dtable.data(), dout_f.data(), tokens.data(), k.N, k.V, k.C);

    DeviceBuffer<int> d_tokens(tokens);
    DeviceBuffer<T> d_table(table, k.offset), d_out(std::vector<T>(NC), k.offset), d_dout(dout, k.offset);
    DeviceBuffer<float> d_dtable(dtable0, k.offset);
    opd::cuda::embedding_forward(d_out.get(), d_tokens.get(), d_table.get(), k.N, k.C);
    opd::cuda::embedding_backward(d_dtable.get(), d_dout.get(), d_tokens.get(), k.N, k.V, k.C);
    expect_bitwise_equal(Storage<T>::back(d_out.host()), want_out, "out");
    expect_bitwise_equal(d_dtable.host(), want_dtable, "dtable");
  }
}

}  // namespace

TEST_F(EmbeddingGpu, FloatMatchesCpuBitForBit) { matches_cpu<float>(); }
TEST_F(EmbeddingGpu, Bf16MatchesCpuBitForBit) { matches_cpu<bf16>(); }

TEST_F(EmbeddingGpu, BackwardIsBitwiseDeterministic) {
  const int N = 16384, V = 1000, C = 1024;
  const auto tokens = random_tokens(N, V, 5);
  const auto dout = to_bf16(random_vector<float>(size_t(N) * C, 6));
  DeviceBuffer<int> d_tokens(tokens);
  DeviceBuffer<bf16> d_dout(dout);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_dtable{std::vector<float>(size_t(V) * C)};
    opd::cuda::embedding_backward(d_dtable.get(), d_dout.get(), d_tokens.get(), N, V, C);
    const auto got = d_dtable.host();
    if (run == 0)
      first = got;
    else
      expect_bitwise_equal(got, first, "dtable, second run");
  }
}

#else

TEST(EmbeddingGpu, FloatMatchesCpuBitForBit) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
