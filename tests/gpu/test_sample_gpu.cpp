#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/sample.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/sample.cuh"
#include "vocab_gpu_util.h"

using opd::testing::DeviceBuffer;

namespace {

class SampleGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Language-model-like rows, plus rows built to exercise the tie rules: every logit equal, logits
// rounded to bf16 (many equal values), and a row whose two top logits are equal.
std::vector<float> sample_logits(int N, int V, uint32_t seed) {
  auto x = opd::testing::lm_logits(N, V, seed, 2.0f);
  std::mt19937 gen(seed + 1);
  for (int n = 0; n < N; ++n) {
    float* r = x.data() + static_cast<size_t>(n) * V;
    if (n % 11 == 5)
      for (int v = 0; v < V; ++v) r[v] = 0.5f;
    if (n % 11 == 7)
      for (int v = 0; v < V; ++v) r[v] = __bfloat162float(__float2bfloat16_rn(r[v]));
    if (n % 11 == 9 && V > 2) {
      const int a = static_cast<int>(gen() % V), b = static_cast<int>(gen() % V);
      r[a] = r[b] = 40.0f;
    }
  }
  return x;
}

void check_same_tokens(int N, int V, const opd::cpu::SampleParams& p, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " T=" << p.temperature << " top_p=" << p.top_p
                                    << " top_k=" << p.top_k);
  const auto x = sample_logits(N, V, seed);
  std::mt19937 gen(seed + 2);
  std::vector<uint32_t> seq(N), pos(N);
  for (int n = 0; n < N; ++n) seq[n] = gen() % 64, pos[n] = gen() % 4096;
  std::vector<int> want(N);
  opd::cpu::sample_tokens(want.data(), x.data(), seq.data(), pos.data(), N, V, p);
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<uint32_t> d_seq(seq), d_pos(pos);
  DeviceBuffer<int> d_tok(N);
  opd::cuda::sample_tokens(d_tok.get(), d_x.get(), d_seq.get(), d_pos.get(), N, V, p);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_tok.host();
  int misses = 0;
  for (int n = 0; n < N; ++n)
    if (got[n] != want[n] && ++misses <= 5)
      ADD_FAILURE() << "row " << n << " (seq " << seq[n] << ", pos " << pos[n] << "): GPU token " << got[n]
                    << " (logit " << (got[n] >= 0 && got[n] < V ? x[static_cast<size_t>(n) * V + got[n]] : NAN)
                    << "), CPU token " << want[n] << " (logit " << x[static_cast<size_t>(n) * V + want[n]] << ")";
  EXPECT_EQ(misses, 0) << misses << " of " << N << " rows differ";
}

opd::cpu::SampleParams params(float t, float top_p, int top_k, uint64_t seed) {
  opd::cpu::SampleParams p;
  p.temperature = t;
  p.top_p = top_p;
  p.top_k = top_k;
  p.seed = seed;
  p.step = static_cast<uint32_t>(seed * 3 + 1);
  return p;
}

}  // namespace

TEST_F(SampleGpu, SameTokenAsCpuSmallVocab) {
  const opd::cpu::SampleParams sets[] = {params(0.0f, 1.0f, 0, 1),   params(1.0f, 1.0f, 0, 2),
                                         params(0.7f, 0.9f, 0, 3),   params(1.0f, 1.0f, 50, 4),
                                         params(0.8f, 0.8f, 50, 5),  params(1.0f, 1.0f, 1, 6),
                                         params(1.3f, 0.95f, 0, 7),  params(0.6f, 0.05f, 0, 8),
                                         params(1.0f, 1.0f, 999, 9), params(2.0f, 1.0f, 1000, 10)};
  uint32_t seed = 40;
  for (const auto& p : sets) {
    check_same_tokens(777, 1000, p, seed += 3);
    check_same_tokens(301, 17, p, seed += 3);
    check_same_tokens(5, 1, p, seed += 3);
  }
}

TEST_F(SampleGpu, SameTokenAsCpuQwenVocab) {
  const opd::cpu::SampleParams sets[] = {params(0.0f, 1.0f, 0, 11), params(1.0f, 1.0f, 0, 12),
                                         params(0.7f, 0.95f, 0, 13), params(1.0f, 0.9f, 20, 14)};
  uint32_t seed = 80;
  for (const auto& p : sets) check_same_tokens(23, 151936, p, seed += 3);
}

#else

TEST(SampleGpu, SameTokenAsCpuSmallVocab) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
