#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "kernels/cpu/logprobs.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "vocab_gpu_util.h"

using opd::testing::DeviceBuffer;
using opd::testing::expect_near_all;
using opd::testing::to_double;

namespace {

struct Case {
  int N, V;
  size_t offset;  // nonzero: misaligned rows, the scalar path
};

// Vocabularies that are and are not multiples of the block and of the 16-byte pack, GPT-2's and
// Qwen3's among them.
const Case kCases[] = {{3, 1, 0},   {5, 17, 0},    {7, 1000, 0},   {4, 1000, 1}, {33, 4096, 0},
                       {5, 4096, 3}, {3, 50257, 0}, {3, 151936, 0}, {2, 151936, 2}};

class LogprobsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// T = float or bf16 logits; the CPU op runs in double on the very values the GPU reads.
template <typename T>
void check_case(const Case& k, uint32_t seed, double tol_out) {
  const int N = k.N, V = k.V;
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " offset=" << k.offset << " bf16="
                                    << (sizeof(T) == 2));
  const size_t NV = static_cast<size_t>(N) * V;
  auto xf = opd::testing::lm_logits(N, V, seed);
  std::vector<T> x(NV);
  if constexpr (sizeof(T) == 2) x = opd::testing::to_bf16(xf); else x = xf;
  const auto xd = to_double(x);
  const auto t = opd::testing::targets_with_skips(N, V, seed + 1);
  const auto dlogp = opd::testing::random_vector<float>(N, seed + 2);
  const auto dx0 = opd::testing::random_vector<float>(NV, seed + 3, -1e-3, 1e-3);
  std::vector<T> dx0t(NV);
  if constexpr (sizeof(T) == 2) dx0t = opd::testing::to_bf16(dx0); else dx0t = dx0;

  std::vector<double> logp(N), ent(N), dx = to_double(dx0t), ls(NV);
  const auto dlogpd = to_double(dlogp);
  opd::cpu::logprobs_forward(logp.data(), ent.data(), xd.data(), t.data(), N, V);
  opd::cpu::logprobs_backward(dx.data(), dlogpd.data(), xd.data(), t.data(), N, V);
  opd::cpu::log_softmax_forward(ls.data(), xd.data(), N, V);

  DeviceBuffer<T> d_x(x, k.offset), d_dx(dx0t, k.offset), d_ls(NV, k.offset);
  DeviceBuffer<int> d_t(t);
  DeviceBuffer<float> d_logp(N), d_ent(N), d_logp2(N), d_dlogp(dlogp);
  opd::cuda::logprobs_forward(d_logp.get(), d_ent.get(), d_x.get(), d_t.get(), N, V);
  opd::cuda::logprobs_forward(d_logp2.get(), static_cast<float*>(nullptr), d_x.get(), d_t.get(), N, V);
  opd::cuda::logprobs_backward(d_dx.get(), d_dlogp.get(), d_x.get(), d_t.get(), N, V);
  opd::cuda::log_softmax_forward(d_ls.get(), d_x.get(), N, V);
  CUDA_CHECK(cudaDeviceSynchronize());

  expect_near_all(d_logp.host(), logp, 2e-4, 1e-5, "logp");
  expect_near_all(d_logp2.host(), logp, 2e-4, 1e-5, "logp (no entropy)");
  expect_near_all(d_ent.host(), ent, 2e-4, 1e-4, "entropy");
  expect_near_all(d_dx.host(), dx, 2e-5, tol_out, "dlogits", V);
  expect_near_all(d_ls.host(), ls, 2e-4 + tol_out * 20, tol_out, "log_softmax", V);
}

}  // namespace

TEST_F(LogprobsGpu, Fp32MatchesCpu) {
  uint32_t seed = 10;
  for (const Case& k : kCases) check_case<float>(k, seed += 7, 1e-4);
}

// bf16 logits: the statistics are fp32, so only the bf16 outputs (dlogits, log_softmax) carry
// bf16 rounding (2^-9 relative).
TEST_F(LogprobsGpu, Bf16MatchesCpu) {
  uint32_t seed = 100;
  for (const Case& k : kCases) check_case<opd::cuda::bf16>(k, seed += 7, 8e-3);
}

// Top-K ids must be identical (ties to the lower id: every third row is rounded to whole numbers,
// so many logits tie); extras cover none, inside the top K and outside it, with and without skipping.
template <typename T>
void check_topk(int N, int V, int K, bool skip, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " K=" << K << " skip=" << skip << " bf16="
                                    << (sizeof(T) == 2));
  auto xf = opd::testing::lm_logits(N, V, seed);
  for (int n = 0; n < N; n += 3)
    for (int v = 0; v < V; ++v) xf[static_cast<size_t>(n) * V + v] = std::round(xf[static_cast<size_t>(n) * V + v]);
  std::vector<T> x(xf.size());
  if constexpr (sizeof(T) == 2) x = opd::testing::to_bf16(xf); else x = xf;
  const auto xd = to_double(x);
  auto extra = opd::testing::targets_with_skips(N, V, seed + 1);
  const int K1 = K + 1;
  std::vector<int> ids(static_cast<size_t>(N) * K1);
  std::vector<double> lp(ids.size());
  opd::cpu::topk_logprobs(ids.data(), lp.data(), xd.data(), extra.data(), skip, N, V, K);
  if (N > 3) {  // make row 3's extra one of its top K
    extra[3] = ids[3 * K1 + K / 2];
    opd::cpu::topk_logprobs(ids.data(), lp.data(), xd.data(), extra.data(), skip, N, V, K);
  }
  DeviceBuffer<T> d_x(x);
  DeviceBuffer<int> d_extra(extra), d_ids(ids.size());
  DeviceBuffer<float> d_lp(ids.size());
  opd::cuda::topk_logprobs(d_ids.get(), d_lp.get(), d_x.get(), d_extra.get(), skip, N, V, K);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = d_ids.host();
  int misses = 0;
  for (size_t i = 0; i < ids.size(); ++i)
    if (got[i] != ids[i] && ++misses <= 5)
      ADD_FAILURE() << "ids[" << i / K1 << ", " << i % K1 << "]: got " << got[i] << ", expected " << ids[i];
  EXPECT_EQ(misses, 0) << misses << " ids differ";
  expect_near_all(d_lp.host(), lp, 2e-4, 1e-5, "topk logp", K1);
}

TEST_F(LogprobsGpu, TopkMatchesCpu) {
  check_topk<float>(5, 1, 1, false, 1);
  check_topk<float>(11, 17, 5, false, 2);
  check_topk<float>(11, 17, 17, true, 3);
  check_topk<float>(9, 1000, 20, true, 4);
  check_topk<float>(4, 1003, 20, false, 5);
  check_topk<float>(3, 151936, 20, true, 6);
  check_topk<opd::cuda::bf16>(9, 1000, 20, false, 7);
  check_topk<opd::cuda::bf16>(2, 50257, 8, true, 8);
}

// A NaN logit (a diverging model) leaves its row NaN: no pick reads before the row or makes up an
// id; the other rows are untouched.
TEST_F(LogprobsGpu, TopkOfANanRowStaysNan) {
  const int N = 2, V = 300, K = 5;
  std::vector<float> x = opd::testing::lm_logits(N, V, 9);
  x[17] = NAN;  // row 0
  const std::vector<int> extra = {3, 4};
  std::vector<int> want_ids(size_t(N) * (K + 1));
  std::vector<float> want_lp(size_t(N) * (K + 1));
  opd::cpu::topk_logprobs(want_ids.data(), want_lp.data(), x.data() + V, extra.data() + 1, false, 1, V, K);
  DeviceBuffer<float> d_x(x), d_lp(size_t(N) * (K + 1));
  DeviceBuffer<int> d_extra(extra), d_ids(size_t(N) * (K + 1));
  opd::cuda::topk_logprobs(d_ids.get(), d_lp.get(), d_x.get(), d_extra.get(), false, N, V, K);
  const auto ids = d_ids.host();
  const auto lp = d_lp.host();
  for (int j = 0; j < K; ++j) {
    EXPECT_TRUE(ids[j] >= -1 && ids[j] < V) << "row 0 pick " << j << ": id " << ids[j];
    EXPECT_TRUE(std::isnan(lp[j])) << "row 0 pick " << j << ": log-prob " << lp[j];
  }
  for (int j = 0; j <= K; ++j) {
    EXPECT_EQ(ids[K + 1 + j], want_ids[j]) << "row 1 pick " << j;
    EXPECT_NEAR(lp[K + 1 + j], want_lp[j], 1e-4) << "row 1 pick " << j;
  }
}

// Shards of consecutive ids, each its own slab, combined on the GPU: the whole row's logp.
TEST_F(LogprobsGpu, ShardStatsCombineToWholeRow) {
  for (auto [N, V, R] : {std::tuple{5, 1000, 4}, std::tuple{3, 151936, 8}, std::tuple{7, 17, 3}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " R=" << R);
    const auto x = opd::testing::lm_logits(N, V, 7 + V);
    const auto t = opd::testing::targets_with_skips(N, V, 8);
    std::vector<double> want(N);
    const auto xd = to_double(x);
    opd::cpu::logprobs_forward(want.data(), static_cast<double*>(nullptr), xd.data(), t.data(), N, V);
    DeviceBuffer<float> mx(static_cast<size_t>(R) * N), se(static_cast<size_t>(R) * N), tl(static_cast<size_t>(R) * N);
    DeviceBuffer<int> d_t(t);
    for (int r = 0; r < R; ++r) {
      const int v0 = static_cast<int>(static_cast<long>(V) * r / R);
      const int Vl = static_cast<int>(static_cast<long>(V) * (r + 1) / R) - v0;
      std::vector<float> slab(static_cast<size_t>(N) * Vl);
      for (int n = 0; n < N; ++n)
        for (int v = 0; v < Vl; ++v) slab[static_cast<size_t>(n) * Vl + v] = x[static_cast<size_t>(n) * V + v0 + v];
      DeviceBuffer<float> d_slab(slab);
      opd::cuda::logprobs_shard_stats(mx.get() + r * N, se.get() + r * N, tl.get() + r * N, d_slab.get(), d_t.get(),
                                      N, Vl, v0);
      CUDA_CHECK(cudaDeviceSynchronize());
    }
    DeviceBuffer<float> logp(N), lse(N);
    opd::cuda::combine_shard_stats(logp.get(), lse.get(), mx.get(), se.get(), tl.get(), d_t.get(), R, N);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_near_all(logp.host(), want, 2e-4, 1e-5, "logp from shards");
  }
}

#else

TEST(LogprobsGpu, Fp32MatchesCpu) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
