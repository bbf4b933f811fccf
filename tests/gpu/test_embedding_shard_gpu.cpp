// The vocabulary-parallel (tensor-parallel) embedding on the GPU against the CPU op, shard by
// shard: embedding_forward_shard and embedding_backward_shard. Both are exact (a copy, and each
// token's rows added in ascending position in fp32), so they must match bit for bit. Shards of
// consecutive ids, uneven ones included (V % R != 0, one-row shards, half of Qwen3's 151936), with
// ids outside every shard (-1, V + 5) that must give zero rows and add nothing.
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

using opd::testing::DeviceBuffer;
using opd::testing::Storage;

namespace {

class EmbeddingShardGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!opd::cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

// Shard r of R holds global ids [V r / R, V (r + 1) / R): uneven when R does not divide V.
int shard_start(int V, int R, int r) { return static_cast<int>(static_cast<long long>(V) * r / R); }

// ---- embedding -----------------------------------------------------------------------------

struct EmbeddingCase {
  int N, V, C, R;
  size_t offset;  // nonzero: misaligned rows, the scalar copy
};
// Long runs of few ids with uneven shards, a Qwen-sized vocabulary in two halves, widths below and
// above one block of threads (C 13: no 16-byte packs), misaligned rows, one-row shards.
const EmbeddingCase kEmbeddingCases[] = {
    {3000, 7, 40, 3, 0}, {300, 151936, 64, 2, 0}, {17, 50, 13, 4, 0}, {1000, 100, 600, 3, 1}, {9, 3, 8, 3, 0}};

// Skewed ids (many repeats of the low ones, as with real text), plus ids that no shard holds:
// -1 (padding) and V + 5.
std::vector<int> shard_tokens(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int> t(N);
  for (int& x : t) x = int(std::min<double>(V - 1, std::abs(std::normal_distribution<double>(0, V / 3.0)(gen))));
  for (int n = 3; n < N; n += 11) t[n] = -1;
  for (int n = 5; n < N; n += 13) t[n] = V + 5;
  if (N > 0) t[0] = V - 1;  // the last id: the last row of the last shard
  return t;
}

template <typename T>
void embedding_matches_cpu() {
  uint32_t seed = 21;
  for (const EmbeddingCase& k : kEmbeddingCases) {
    const auto tokens = shard_tokens(k.N, k.V, seed++);
    const size_t NC = size_t(k.N) * k.C;
    const auto dout = Storage<T>::to(opd::testing::random_vector<float>(NC, seed++));
    const auto dout_f = Storage<T>::back(dout);
    DeviceBuffer<int> d_tokens(tokens);
    DeviceBuffer<T> d_dout(dout, k.offset);
    for (int r = 0; r < k.R; ++r) {
      const int v0 = shard_start(k.V, k.R, r), Vl = shard_start(k.V, k.R, r + 1) - v0;
      SCOPED_TRACE(::testing::Message() << "N=" << k.N << " V=" << k.V << " C=" << k.C << " shard " << r << " of "
                                        << k.R << " [" << v0 << ", " << v0 + Vl << ") offset=" << k.offset);
      const size_t VlC = size_t(Vl) * k.C;
      const auto table = Storage<T>::to(opd::testing::random_vector<float>(VlC, seed++));
      const auto table_f = Storage<T>::back(table);
      const auto dtable0 = opd::testing::random_vector<float>(VlC, seed++);

      // A poisoned output: every row must be written, the zero rows included.
      std::vector<float> want_out(NC, 7.0f);
      opd::cpu::embedding_forward_shard(want_out.data(), tokens.data(), table_f.data(), k.N, k.C, v0, Vl);
      auto want_dtable = dtable0;
      opd::cpu::embedding_backward_shard(want_dtable.data(), dout_f.data(), tokens.data(), k.N, k.C, v0, Vl);

      DeviceBuffer<T> d_table(table, k.offset), d_out(Storage<T>::to(std::vector<float>(NC, 7.0f)), k.offset);
      DeviceBuffer<float> d_dtable(dtable0, k.offset);
      opd::cuda::embedding_forward_shard(d_out.get(), d_tokens.get(), d_table.get(), k.N, k.C, v0, Vl);
      opd::cuda::embedding_backward_shard(d_dtable.get(), d_dout.get(), d_tokens.get(), k.N, k.C, v0, Vl);
      opd::testing::expect_bitwise_equal(Storage<T>::back(d_out.host()), want_out, "out");
      opd::testing::expect_bitwise_equal(d_dtable.host(), want_dtable, "dtable");
    }
  }
}

}  // namespace


TEST_F(EmbeddingShardGpu, FloatMatchesCpuBitForBit) { embedding_matches_cpu<float>(); }
TEST_F(EmbeddingShardGpu, Bf16MatchesCpuBitForBit) { embedding_matches_cpu<opd::testing::bf16>(); }

// The shards of one lookup give the whole table's: their forwards sum to embedding_forward (each
// row comes from one shard, the others add zeros) and their gradients, side by side, are
// embedding_backward's, bit for bit.
TEST_F(EmbeddingShardGpu, ShardsMakeUpTheWholeTable) {
  const int N = 500, V = 1001, C = 96, R = 3;
  auto tokens = shard_tokens(N, V, 3);
  for (int& t : tokens) t = t < 0 || t >= V ? 1 : t;  // the whole-table ops take in-vocabulary ids only
  const auto table = opd::testing::random_vector<float>(size_t(V) * C, 4);
  const auto dout = opd::testing::random_vector<float>(size_t(N) * C, 5);
  DeviceBuffer<int> d_tokens(tokens);
  DeviceBuffer<float> d_table(table), d_dout(dout), d_out(std::vector<float>(size_t(N) * C));
  DeviceBuffer<float> d_whole_out(std::vector<float>(size_t(N) * C)), d_whole_dtable(std::vector<float>(size_t(V) * C));
  opd::cuda::embedding_forward(d_whole_out.get(), d_tokens.get(), d_table.get(), N, C);
  opd::cuda::embedding_backward(d_whole_dtable.get(), d_dout.get(), d_tokens.get(), N, V, C);
  std::vector<float> sum_out(size_t(N) * C, 0.0f), dtable(size_t(V) * C, 0.0f);
  for (int r = 0; r < R; ++r) {
    const int v0 = shard_start(V, R, r), Vl = shard_start(V, R, r + 1) - v0;
    DeviceBuffer<float> d_dtable(std::vector<float>(size_t(Vl) * C));
    opd::cuda::embedding_forward_shard(d_out.get(), d_tokens.get(), d_table.get() + size_t(v0) * C, N, C, v0, Vl);
    opd::cuda::embedding_backward_shard(d_dtable.get(), d_dout.get(), d_tokens.get(), N, C, v0, Vl);
    const auto out = d_out.host(), part = d_dtable.host();
    for (size_t i = 0; i < out.size(); ++i) sum_out[i] += out[i];
    std::copy(part.begin(), part.end(), dtable.begin() + size_t(v0) * C);
  }
  opd::testing::expect_bitwise_equal(sum_out, d_whole_out.host(), "sum of the shards' lookups");
  opd::testing::expect_bitwise_equal(dtable, d_whole_dtable.host(), "the shards' gradients side by side");
}

TEST_F(EmbeddingShardGpu, BackwardIsBitwiseDeterministic) {
  const int N = 16384, V = 1000, C = 512, v0 = 400, Vl = 333;
  const auto tokens = shard_tokens(N, V, 5);
  const auto dout = opd::testing::to_bf16(opd::testing::random_vector<float>(size_t(N) * C, 6));
  DeviceBuffer<int> d_tokens(tokens);
  DeviceBuffer<opd::testing::bf16> d_dout(dout);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_dtable{std::vector<float>(size_t(Vl) * C)};
    opd::cuda::embedding_backward_shard(d_dtable.get(), d_dout.get(), d_tokens.get(), N, C, v0, Vl);
    const auto got = d_dtable.host();
    if (run == 0)
      first = got;
    else
      opd::testing::expect_bitwise_equal(got, first, "dtable, second run");
  }
}

TEST_F(EmbeddingShardGpu, RejectsBadShards) {
  float* none = nullptr;
  EXPECT_THROW(opd::cuda::embedding_forward_shard(none, static_cast<const int*>(nullptr), none, 1, 4, 0, 0),
               opd::Error);
  EXPECT_THROW(opd::cuda::embedding_backward_shard(none, none, static_cast<const int*>(nullptr), 1, 4, -3, 5),
               opd::Error);
}

#else

TEST(EmbeddingShardGpu, FloatMatchesCpuBitForBit) { GTEST_SKIP() << "opd was built without CUDA (OPD_CUDA=OFF)"; }

#endif
