// Data parallelism's arithmetic: gradients of token-weighted shards summed over the DP group equal
// the single-process gradient of the union batch, and replicated AdamW steps keep every replica's
// parameters identical (and on the single-process trajectory).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model/tiny_model.h"
#include "parallel/mpi_communicator.h"
#include "train/objectives.h"
#include "train/optimizer.h"

namespace opd {
namespace {

// 7 sequences of different lengths (an odd count: shards differ in size).
std::vector<Sequence> sequences() {
  std::vector<Sequence> seqs;
  for (int i = 0; i < 7; ++i) {
    Sequence s;
    for (int t = 0; t < 2 + i % 3; ++t) s.prompt.push_back(2 + (i * 3 + t) % 9);
    for (int t = 0; t < 1 + (i * 5) % 6; ++t) s.completion.push_back(2 + (i * 7 + t * 2) % 9);
    s.group = i;
    seqs.push_back(s);
  }
  return seqs;
}

int64_t trained_tokens(const std::vector<Sequence>& seqs) {
  int64_t n = 0;
  for (const auto& s : seqs) n += s.completion.size();
  return n;
}

// Accumulates the SFT gradient of `seqs` with the given per-token weight.
double accumulate(Transformer& m, const std::vector<Sequence>& seqs, float weight) {
  if (seqs.empty()) return 0;
  const SequenceBatch b = make_batch(seqs, 0);
  std::vector<float> dlogits(size_t(b.B) * b.T * m.config().vocab);
  const float* logits = m.forward(b.tokens.data(), b.B, b.T);
  const TokenSums s = sft_objective(dlogits.data(), logits, b, m.config().vocab, weight);
  m.backward(dlogits.data());
  return s.loss;
}

TEST(DataParallel, ShardedGradientsSumToTheUnionBatchAndReplicasStayIdentical) {
  auto w = MpiCommunicator::world();
  const int r = w->rank(), n = w->size();
  const std::vector<Sequence> all = sequences();
  const size_t per = all.size() / n, extra = all.size() % n;
  const size_t begin = r * per + std::min<size_t>(r, extra), end = begin + per + (size_t(r) < extra);
  const std::vector<Sequence> mine(all.begin() + begin, all.begin() + end);
  const float weight = 1.0f / float(trained_tokens(all));

  auto single = testing::tiny_model(false, 9);
  auto replica = testing::tiny_model(false, 9);
  OptimizerOptions o;
  o.lr = 1e-2;
  o.total_steps = 3;
  AdamW opt_single(*single, o), opt_replica(*replica, o);
  for (int step = 1; step <= 3; ++step) {
    single->zero_grad();
    const double loss_single = accumulate(*single, all, weight);
    replica->zero_grad();
    double loss = accumulate(*replica, mine, weight);
    w->all_reduce(replica->grads().data(), replica->grads().size(), ReduceOp::kSum);
    w->all_reduce(&loss, 1, ReduceOp::kSum);
    EXPECT_NEAR(loss, loss_single, 1e-5 * std::abs(loss_single)) << "step " << step;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < single->grads().size(); ++i) {
      worst = std::max(worst, double(std::abs(single->grads()[i] - replica->grads()[i])));
      scale = std::max(scale, double(std::abs(single->grads()[i])));
    }
    EXPECT_LE(worst, 1e-5 * scale) << "step " << step;
    const double norm_single = opt_single.step(step), norm = opt_replica.step(step);
    EXPECT_NEAR(norm, norm_single, 1e-5 * norm_single);
    EXPECT_TRUE(same_on_all_ranks(*w, replica->params().data(), replica->params().size() * sizeof(float)))
        << "step " << step << ": DP replicas differ";
  }
  double worst = 0;
  for (size_t i = 0; i < single->params().size(); ++i)
    worst = std::max(worst, double(std::abs(single->params()[i] - replica->params()[i])));
  EXPECT_LE(worst, 1e-4) << "parameters after 3 steps: DP vs one process";
  const auto start = testing::tiny_model(false, 9);
  double moved = 0;
  for (size_t i = 0; i < start->params().size(); ++i)
    moved = std::max(moved, double(std::abs(single->params()[i] - start->params()[i])));
  EXPECT_GT(moved, 1e-3) << "no update happened";
}

}  // namespace
}  // namespace opd
