// vocab_parallel's split path with the rows on the GPU, under a real split: the world's ranks form
// one TP group, each holding its slab [N, V / R] of the rows in device memory, and every function
// (log-probs and their backward, cross-entropy, log-softmax, top-K, both reverse KLs, sampling,
// zeroing) must give what the same function gives on the whole rows on the CPU. The first test
// puts all ranks on GPU 0 (a one-GPU machine runs it under mpirun -n 2), so the TP group has no
// device twin (VocabShard::device_tp null) and the rows that sampling gathers go through host
// memory; the second gives each rank a GPU of its own and gathers over NCCL. Each skips on every
// rank alike with one rank, or where a rank sees no CUDA device (the second: no GPU of its own).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/check.h"
#include "gpu/device_buffer.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cuda/device.cuh"
#include "model/vocab_parallel.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace opd {
namespace {

using testing::DeviceBuffer;

class VocabParallelGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::world();
    if (world_->size() < 2)
      GTEST_SKIP() << "a split vocabulary needs 2 or more ranks (this job has " << world_->size()
                   << "; the test runs under mpirun -n 2)";
    const int64_t missing = all_reduce_value<int64_t>(*world_, cuda::device_available() ? 0 : 1, ReduceOp::kSum);
    if (missing > 0)
      GTEST_SKIP() << "no usable CUDA device (no driver or no GPU) on " << missing << " of " << world_->size()
                   << " ranks: the rows of this test live in device memory";
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  // Selects the device the rows live on and makes the stream they are read on.
  void use_device(int device) {
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaStreamCreate(&stream_));
  }

  // This rank's shard of a vocabulary of R * Vl ids, with its rows on the GPU; device_tp: the TP
  // group over device buffers, or null (row payloads through host memory).
  VocabShard shard(int Vl, Communicator* device_tp = nullptr) const {
    VocabShard vs(Vl * world_->size());
    vs.tp = world_.get();
    vs.size = Vl;
    vs.begin = Vl * world_->rank();
    vs.device = true;
    vs.stream = stream_;
    vs.device_tp = device_tp;
    return vs;
  }

  std::unique_ptr<MpiCommunicator> world_;
  cudaStream_t stream_ = nullptr;
};

// This rank's columns of whole rows [N, vs.vocab].
std::vector<float> slab(const std::vector<float>& rows, int N, const VocabShard& vs) {
  std::vector<float> s(size_t(N) * vs.size);
  for (int n = 0; n < N; ++n)
    std::copy_n(rows.begin() + size_t(n) * vs.vocab + vs.begin, vs.size, s.begin() + size_t(n) * vs.size);
  return s;
}

// Logits with some shape: a uniform bulk, a few strong tokens per row (in either shard).
std::vector<float> logits_rows(int N, int V, uint32_t seed) {
  auto x = testing::random_vector<float>(size_t(N) * V, seed, -4.0, 4.0);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < 3; ++j) x[size_t(n) * V + (size_t(n) * 7919 + size_t(j) * 104729 + seed) % V] += 6.0f;
  return x;
}

// Targets in both shards, the first and last ids, and every 5th row skipped (-1).
std::vector<int> targets_of(int N, int V) {
  std::vector<int> t(N);
  for (int n = 0; n < N; ++n) t[n] = n % 5 == 2 ? -1 : int((size_t(n) * 2654435761u) % V);
  t[0] = V - 1;
  t[1] = 0;
  return t;
}

template <typename A, typename B>
void expect_near(const std::vector<A>& got, const std::vector<B>& want, double atol, double rtol,
                 const std::string& what) {
  testing::expect_near_all(got, want, atol, rtol, what.c_str());
}

void split_matches_whole_rows(const VocabShard& vs, uint32_t seed) {
  const int N = 13, V = vs.vocab, Vl = vs.size;
  const VocabShard whole(V);
  const std::string at = " (V " + std::to_string(V) + ", rank " + std::to_string(vs.tp->rank()) + ")";
  const auto x = logits_rows(N, V, seed);
  const auto targets = targets_of(N, V);
  DeviceBuffer<float> d_x(slab(x, N, vs));

  // logprobs: log-probs, entropy and the rows' log-sum-exp (against double).
  std::vector<float> logp(N), ent(N), lse(N), want_logp(N), want_ent(N);
  vocab_parallel::logprobs(vs, logp.data(), ent.data(), lse.data(), d_x.get(), targets.data(), N);
  vocab_parallel::logprobs(whole, want_logp.data(), want_ent.data(), nullptr, x.data(), targets.data(), N);
  std::vector<double> want_lse(N);
  for (int n = 0; n < N; ++n) {
    const float* r = x.data() + size_t(n) * V;
    const double m = *std::max_element(r, r + V);
    double s = 0;
    for (int v = 0; v < V; ++v) s += std::exp(r[v] - m);
    want_lse[n] = m + std::log(s);
  }
  expect_near(logp, want_logp, 1e-4, 1e-5, "logprobs: logp" + at);
  expect_near(ent, want_ent, 2e-4, 1e-4, "logprobs: entropy" + at);
  expect_near(lse, want_lse, 1e-4, 1e-6, "logprobs: lse" + at);

  // logprobs_backward accumulates into what dlogits holds.
  const auto dlogp = testing::random_vector<float>(N, seed + 1);
  auto want_dx = testing::random_vector<float>(size_t(N) * V, seed + 2, -1e-3, 1e-3);
  DeviceBuffer<float> d_dx(slab(want_dx, N, vs));
  vocab_parallel::logprobs_backward(vs, d_dx.get(), dlogp.data(), d_x.get(), lse.data(), targets.data(), N);
  vocab_parallel::logprobs_backward(whole, want_dx.data(), dlogp.data(), x.data(), nullptr, targets.data(), N);
  expect_near(d_dx.host(), slab(want_dx, N, vs), 2e-5, 1e-4, "logprobs_backward" + at);

  // cross_entropy overwrites dlogits (0 on skipped rows); zero_rows clears a slab.
  std::vector<float> losses(N), want_losses(N), want_ce(size_t(N) * V);
  DeviceBuffer<float> d_ce(testing::random_vector<float>(size_t(N) * Vl, seed + 3));
  vocab_parallel::cross_entropy(vs, losses.data(), d_ce.get(), d_x.get(), targets.data(), 0.25f, N);
  vocab_parallel::cross_entropy(whole, want_losses.data(), want_ce.data(), x.data(), targets.data(), 0.25f, N);
  expect_near(losses, want_losses, 1e-4, 1e-5, "cross_entropy: losses" + at);
  expect_near(d_ce.host(), slab(want_ce, N, vs), 2e-5, 1e-4, "cross_entropy: dlogits" + at);
  vocab_parallel::zero_rows(vs, d_ce.get(), N);
  EXPECT_EQ(d_ce.host(), std::vector<float>(size_t(N) * Vl, 0.0f)) << "zero_rows" << at;

  // log_softmax: this rank's columns, on the host.
  std::vector<float> ls(size_t(N) * Vl), want_ls(size_t(N) * V);
  vocab_parallel::log_softmax(vs, ls.data(), d_x.get(), N);
  vocab_parallel::log_softmax(whole, want_ls.data(), x.data(), N);
  expect_near(ls, slab(want_ls, N, vs), 1e-4, 1e-5, "log_softmax" + at);

  // topk_logprobs with an extra (sampled) token: in the top K, outside it, none (-1).
  const int K = 6;
  std::vector<int> extra(N);
  for (int n = 0; n < N; ++n) extra[n] = n % 4 == 1 ? -1 : n % 4 == 2 ? (V / 2 + n) % V : targets[n];
  for (const bool skip : {false, true}) {
    std::vector<int> ids(size_t(N) * (K + 1)), want_ids(ids.size());
    std::vector<float> tlp(ids.size()), want_tlp(ids.size());
    vocab_parallel::topk_logprobs(vs, ids.data(), tlp.data(), d_x.get(), extra.data(), skip, N, K);
    vocab_parallel::topk_logprobs(whole, want_ids.data(), want_tlp.data(), x.data(), extra.data(), skip, N, K);
    EXPECT_EQ(ids, want_ids) << "topk_logprobs ids, skip_without_extra " << skip << at;
    expect_near(tlp, want_tlp, 1e-4, 1e-5, "topk_logprobs logp" + at);
  }

  // The teacher: other logits, its full log-softmax rows and its top K plus the sampled token.
  const auto xt = logits_rows(N, V, seed + 4);
  std::vector<float> teacher_ls(size_t(N) * V);
  cpu::log_softmax_forward(teacher_ls.data(), xt.data(), N, V);
  auto scale = testing::random_vector<float>(N, seed + 5, 0.1, 1.0);
  scale[3] = 0.0f;  // kl still, no gradient
  const auto teacher_slab = slab(teacher_ls, N, vs);

  // reverse_kl_full: dlogits overwritten, and nullable.
  for (const bool grad : {true, false}) {
    std::vector<float> kl(N), want_kl(N), want_g(size_t(N) * V);
    DeviceBuffer<float> d_g(testing::random_vector<float>(size_t(N) * Vl, seed + 6));
    vocab_parallel::reverse_kl_full(vs, kl.data(), grad ? d_g.get() : nullptr, d_x.get(), teacher_slab.data(),
                                    scale.data(), N);
    vocab_parallel::reverse_kl_full(whole, want_kl.data(), want_g.data(), x.data(), teacher_ls.data(), scale.data(),
                                    N);
    expect_near(kl, want_kl, 3e-4, 1e-4, "reverse_kl_full: kl" + at);
    if (grad) expect_near(d_g.host(), slab(want_g, N, vs), 2e-5, 1e-4, "reverse_kl_full: dlogits" + at);
  }

  // reverse_kl_topk over the teacher's top K plus the sampled token (absent entries -1; a row whose
  // set is empty, with skip_without_extra).
  std::vector<int> kl_ids(size_t(N) * (K + 1));
  std::vector<float> kl_lt(kl_ids.size());
  cpu::topk_logprobs(kl_ids.data(), kl_lt.data(), xt.data(), extra.data(), true, N, V, K);
  for (const bool grad : {true, false}) {
    std::vector<float> kl(N), want_kl(N), want_g(size_t(N) * V);
    DeviceBuffer<float> d_g(testing::random_vector<float>(size_t(N) * Vl, seed + 7));
    vocab_parallel::reverse_kl_topk(vs, kl.data(), grad ? d_g.get() : nullptr, d_x.get(), kl_ids.data(),
                                    kl_lt.data(), scale.data(), N, K + 1);
    vocab_parallel::reverse_kl_topk(whole, want_kl.data(), want_g.data(), x.data(), kl_ids.data(), kl_lt.data(),
                                    scale.data(), N, K + 1);
    expect_near(kl, want_kl, 3e-4, 1e-4, "reverse_kl_topk: kl" + at);
    if (grad) expect_near(d_g.host(), slab(want_g, N, vs), 2e-5, 1e-4, "reverse_kl_topk: dlogits" + at);
  }

  // sample: the token one process draws from the whole row, for every kind of truncation.
  std::vector<uint32_t> seq(N), pos(N);
  for (int n = 0; n < N; ++n) seq[n] = n / 3, pos[n] = 5 + n % 3;
  struct Case {
    float temperature, top_p;
    int top_k;
  } cases[] = {{1.0f, 1.0f, 0}, {0.7f, 1.0f, 0}, {1.0f, 1.0f, 5}, {1.0f, 0.9f, 0}, {0.8f, 0.8f, 5}, {0.0f, 1.0f, 0}};
  for (const Case& c : cases) {
    cpu::SampleParams p;
    p.temperature = c.temperature;
    p.top_p = c.top_p;
    p.top_k = c.top_k;
    p.seed = seed;
    p.step = 2;
    std::vector<int> tokens(N), want(N);
    vocab_parallel::sample(vs, tokens.data(), d_x.get(), seq.data(), pos.data(), N, p);
    vocab_parallel::sample(whole, want.data(), x.data(), seq.data(), pos.data(), N, p);
    EXPECT_EQ(tokens, want) << "sample: temperature " << c.temperature << " top_p " << c.top_p << " top_k "
                            << c.top_k << at;
  }
}

// All ranks on GPU 0, the row payloads (sampling's gathered rows) through host memory. An odd slab
// (501 ids: no 16-byte packs, not a multiple of a block) and a packed one.
TEST_F(VocabParallelGpu, SplitDeviceRowsMatchWholeRowsOnTheCpu) {
  use_device(0);
  split_matches_whole_rows(shard(501), 11);
  split_matches_whole_rows(shard(1024), 12);
}

// One GPU per rank and the TP group's NCCL twin as device_tp, so that sampling gathers the rows
// over NCCL: returning with the result in place, and stream-ordered on the rows' stream.
TEST_F(VocabParallelGpu, SplitDeviceRowsWithNcclMatchWholeRowsOnTheCpu) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear it, so that a later check does not report it as its own
    count = 0;
  }
  const int64_t short_of = all_reduce_value<int64_t>(*world_, node_share().rank < count ? 0 : 1, ReduceOp::kSum);
  if (short_of > 0)
    GTEST_SKIP() << "NCCL needs one CUDA device per rank: " << short_of << " of " << world_->size()
                 << " ranks have none of their own";
  use_device(node_share().rank);
  NcclCommunicator nccl(*world_, "tp (device)");
  for (const bool ordered : {false, true}) {
    SCOPED_TRACE(ordered ? "stream-ordered NCCL" : "NCCL waiting for its result");
    nccl.set_stream_ordered(ordered);
    if (ordered) nccl.set_stream(stream_);
    split_matches_whole_rows(shard(501, &nccl), 21);
  }
}

}  // namespace
}  // namespace opd
