// Data parallelism's arithmetic: gradients of token-weighted shards summed over the DP group equal
// the single-process gradient of the union batch (within the rounding of summing in another order,
// tests/common/rounding.h), replicated AdamW updates keep every replica's parameters identical
// (bit for bit: one all-reduced gradient, one elementwise update), and one update from the same
// state as one process agrees with it within what AdamW makes of the gradients' gap.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/rounding.h"
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

// Tolerances, as fractions of the largest magnitude (tests/common/rounding.h). The replicas add
// the same per-token products as one process, but each over its own rows (other GEMM shapes, so
// possibly other kernels), and the all-reduce adds the ranks' partial sums. The tiny model's
// longest sum has 40 terms (ffn_dim) and the union batch at most 7 x 10 = 70 rows; the loss ends a
// chain of 24 sums (22 through the model, the log-sum-exp, the sum over rows), the gradients one
// of 45 (back through the model, then each weight's sum over the rows).
const double kLossTol = testing::chain_tolerance(24, 70);       // ~2e-4
const double kGradientsTol = testing::chain_tolerance(45, 70);  // ~3.8e-4

// Before each of 3 updates every replica takes the single process's state (parameters and AdamW
// moments); both compute the gradient of the step's tokens (the replicas of their shard, summed)
// and update. Not a 3-step trajectory compared at the end: AdamW divides by sqrt(v), so a gradient
// that rounds differently near 0 steps differently, and trajectories that part need not meet again.
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
    const std::string what = "dp " + std::to_string(n) + ": update " + std::to_string(step);
    replica->params() = single->params();
    opt_replica.restore(opt_single.m(), opt_single.v(), step - 1);
    single->zero_grad();
    const double loss_single = accumulate(*single, all, weight);
    replica->zero_grad();
    double loss = accumulate(*replica, mine, weight);
    w->all_reduce(replica->grads().data(), replica->grads().size(), ReduceOp::kSum);
    w->all_reduce(&loss, 1, ReduceOp::kSum);
    testing::expect_near_rel(loss, loss_single, kLossTol, what + ": loss");
    testing::expect_close_to_scale(replica->grads(), single->grads(), kGradientsTol, what + ": gradients");
    testing::AdamWState before{single->params(), opt_single.m(), opt_single.v(), single->grads(), {},
                               float(o.lr), float(o.beta1), float(o.beta2), float(o.eps), float(o.weight_decay),
                               step, 1.0f};
    for (const ParamSpec& s : single->specs()) before.decay.insert(before.decay.end(), s.size, s.decay ? 1 : 0);
    const std::vector<float> grads = replica->grads();
    const double norm_single = opt_single.step(step), norm = opt_replica.step(step);
    testing::expect_near_rel(norm, norm_single, kGradientsTol, what + ": gradient norm");
    EXPECT_TRUE(same_on_all_ranks(*w, replica->params().data(), replica->params().size() * sizeof(float)))
        << what << ": DP replicas differ";
    before.scale = testing::clip_scale(norm_single, o.grad_clip);
    testing::expect_same_update(before, {single->params(), opt_single.m(), opt_single.v(), single->grads(), before.scale},
                                {replica->params(), opt_replica.m(), opt_replica.v(), grads,
                                 testing::clip_scale(norm, o.grad_clip)},
                                what);
  }
  const auto start = testing::tiny_model(false, 9);
  double moved = 0;
  for (size_t i = 0; i < start->params().size(); ++i)
    moved = std::max(moved, double(std::abs(single->params()[i] - start->params()[i])));
  EXPECT_GT(moved, 1e-3) << "no update happened";
}

}  // namespace
}  // namespace opd
