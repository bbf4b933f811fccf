// The distillation step's invariants on a small model: an identical teacher gives reverse KL 0
// and no update; the student's log-probs in the update are those it sampled with, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu/logprobs.h"
#include "model/generate.h"
#include "tiny_model.h"
#include "train/objectives.h"
#include "train/optimizer.h"
#include "train/teacher.h"

namespace opd {
namespace {

std::vector<Sequence> sampled_sequences(Transformer& m) {
  GenerateOptions g;
  g.max_new_tokens = 9;
  g.sampling.seed = 3;
  std::vector<std::vector<int>> prompts = {{2, 3, 4}, {5, 6}, {7}, {8, 2, 9, 3}};
  auto gens = generate(m, prompts, {0, 1, 2, 3}, g);
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < prompts.size(); ++i) seqs.push_back({prompts[i], gens[i].tokens, int(i) / 2, gens[i].eos});
  return seqs;
}

class IdenticalTeacher : public ::testing::TestWithParam<std::string> {};

TEST_P(IdenticalTeacher, ReverseKlIsExactlyZeroAndTheUpdateIsZero) {
  auto student = testing::tiny_model();
  auto teacher = testing::tiny_model();  // same seed: the same weights
  const SequenceBatch b = make_batch(sampled_sequences(*student), 0);
  const int V = student->config().vocab, N = b.B * b.T;
  DistillOptions o;
  o.kl = parse_kl(GetParam(), V);
  ColocatedTeacher scorer(*teacher);
  const TeacherScores scores = scorer.score(b, o.kl);
  std::vector<float> dlogits(size_t(N) * V, 1.0f);
  const float* logits = student->forward(b.tokens.data(), b.B, b.T);
  const TokenSums s = distill_objective(dlogits.data(), logits, b, V, scores, o, {}, 1.0f / b.trained_rows);
  EXPECT_GT(s.tokens, 0);
  EXPECT_EQ(s.kl, 0.0);
  EXPECT_EQ(s.kl_exact, 0.0);
  for (float g : dlogits) ASSERT_EQ(g, 0.0f);

  student->zero_grad();
  student->backward(dlogits.data());
  const std::vector<float> before = student->params();
  AdamW opt(*student, OptimizerOptions{});
  opt.step(1);
  EXPECT_EQ(0, std::memcmp(before.data(), student->params().data(), before.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(KlModes, IdenticalTeacher, ::testing::Values("sampled", "full"));

TEST(Distill, TopKWithIdenticalTeacherIsZeroToRounding) {
  auto student = testing::tiny_model();
  auto teacher = testing::tiny_model();
  const SequenceBatch b = make_batch(sampled_sequences(*student), 0);
  const int V = student->config().vocab, N = b.B * b.T;
  DistillOptions o;
  o.kl = parse_kl("topk:3", V);
  ColocatedTeacher scorer(*teacher);
  const TeacherScores scores = scorer.score(b, o.kl);
  std::vector<float> dlogits(size_t(N) * V);
  const TokenSums s = distill_objective(dlogits.data(), student->forward(b.tokens.data(), b.B, b.T), b, V, scores, o,
                                        {}, 1.0f / b.trained_rows);
  EXPECT_EQ(s.kl, 0.0);
  EXPECT_NEAR(s.kl_exact, 0.0, 1e-6);
  for (float g : dlogits) ASSERT_NEAR(g, 0.0f, 1e-7);
}

// logp_old comes from a forward pass of the same ops and shapes as the update's, so the update's
// log-probs equal it bit for bit and the importance ratio is exactly 1; the per-token values
// recorded during KV-cache decoding agree to rounding.
TEST(Distill, LogpOldEqualsTrainingLogprobsBitForBit) {
  auto m = testing::tiny_model();
  GenerateOptions g;
  g.max_new_tokens = 9;
  g.sampling.seed = 3;
  std::vector<std::vector<int>> prompts = {{2, 3, 4}, {5, 6}, {7}, {8, 2, 9, 3}};
  auto gens = generate(*m, prompts, {0, 1, 2, 3}, g);
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < prompts.size(); ++i) seqs.push_back({prompts[i], gens[i].tokens, int(i), gens[i].eos});
  const SequenceBatch b = make_batch(seqs, 0);
  const int V = m->config().vocab, N = b.B * b.T;
  std::vector<float> logp_old(N), logp(N);
  cpu::logprobs_forward(logp_old.data(), static_cast<float*>(nullptr), m->forward(b.tokens.data(), b.B, b.T),
                        b.targets.data(), N, V);
  // ... an unrelated forward in between, as the teacher's or another micro-batch's would be ...
  std::vector<int> other(3 * 5, 4);
  m->forward(other.data(), 3, 5);
  const float* logits = m->forward(b.tokens.data(), b.B, b.T);
  cpu::logprobs_forward(logp.data(), static_cast<float*>(nullptr), logits, b.targets.data(), N, V);
  EXPECT_EQ(0, std::memcmp(logp_old.data(), logp.data(), N * sizeof(float)));
  for (int i = 0; i < b.B; ++i) {
    const int p = static_cast<int>(seqs[i].prompt.size());
    for (size_t j = 0; j < seqs[i].completion.size(); ++j)
      EXPECT_NEAR(gens[i].logp[j], logp[size_t(i) * b.T + p - 1 + j], 1e-5);
  }
}

TEST(Distill, GroupAdvantages) {
  auto a = group_advantages({1, 0, 0, 0, 1, 1}, {0, 0, 0, 1, 1, 1}, false);
  EXPECT_NEAR(a[0], 2.0 / 3, 1e-6);
  EXPECT_NEAR(a[1], -1.0 / 3, 1e-6);
  EXPECT_NEAR(a[3], -2.0 / 3, 1e-6);
  EXPECT_NEAR(a[4], 1.0 / 3, 1e-6);
  auto same = group_advantages({1, 1}, {0, 0}, true);
  EXPECT_EQ(same[0], 0.0f);
}

TEST(Distill, KlOptionParsing) {
  EXPECT_EQ(parse_kl("sampled", 10).mode, KlSpec::kSampled);
  EXPECT_EQ(parse_kl("full", 10).mode, KlSpec::kFull);
  EXPECT_EQ(parse_kl("topk:4", 10).k, 4);
  EXPECT_THROW(parse_kl("topk:0", 10), Error);
  EXPECT_THROW(parse_kl("topk:11", 10), Error);
  EXPECT_THROW(parse_kl("topk:x", 10), Error);
  EXPECT_THROW(parse_kl("forward", 10), Error);
}

}  // namespace
}  // namespace opd

namespace opd {
namespace {
TEST(Distill, NonFiniteGradientStopsNamingTheStep) {
  auto m = testing::tiny_model();
  AdamW opt(*m, OptimizerOptions{});
  m->zero_grad();
  m->grads()[5] = std::nanf("");
  try {
    opt.step(7);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 7"), std::string::npos) << e.what();
  }
}
}  // namespace
}  // namespace opd

namespace opd {
namespace {
// Sequences flagged for the anchor teacher get its scores, the others the main teacher's.
TEST(Distill, MergedScoresTakeEachSequenceFromItsTeacher) {
  auto student = testing::tiny_model();
  auto other = testing::tiny_model(false, 4);  // a different teacher
  auto same = testing::tiny_model();           // identical to the student
  const SequenceBatch b = make_batch(sampled_sequences(*student), 0);
  const int V = student->config().vocab;
  for (const std::string mode : {"sampled", "full", "topk:3"}) {
    const KlSpec kl = parse_kl(mode, V);
    ColocatedTeacher main_teacher(*other), anchor(*same);
    const TeacherScores a = main_teacher.score(b, kl), s = anchor.score(b, kl);
    const std::vector<char> use_anchor = {1, 0, 1, 0};
    const TeacherScores m = merge_scores(a, s, use_anchor, b.T, V, kl);
    for (int i = 0; i < b.B; ++i)
      for (int t = 0; t < b.T; ++t) {
        const size_t r = size_t(i) * b.T + t;
        EXPECT_EQ(m.logp[r], use_anchor[i] ? s.logp[r] : a.logp[r]) << mode;
        if (kl.mode == KlSpec::kFull) EXPECT_EQ(m.full[r * V + 2], use_anchor[i] ? s.full[r * V + 2] : a.full[r * V + 2]);
        if (kl.mode == KlSpec::kTopK)
          EXPECT_EQ(m.topk_ids[r * 4 + 1], use_anchor[i] ? s.topk_ids[r * 4 + 1] : a.topk_ids[r * 4 + 1]);
      }
  }
}
}  // namespace
}  // namespace opd
