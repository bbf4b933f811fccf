// SFT loss masks (no_loss spans) take exactly the marked tokens out of the loss and the gradient;
// sampled evaluation scores the mean over several samples per problem.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "io/model_file.h"
#include "tasks/builtin.h"
#include "tiny_model.h"
#include "train/eval.h"
#include "train/objectives.h"
#include "train/rollout.h"
#include "train/sft_data.h"

namespace opd {
namespace {

TEST(SftLossMask, SpansBecomeAPerTokenMask) {
  auto m = testing::tiny_model();
  Example e{"abc", "", "defgh"};
  e.no_loss = {{1, 3}};
  const Sequence s = sft_sequence(m->tokenizer(), e, 0);
  EXPECT_EQ(s.prompt, m->tokenizer().encode("abc"));
  std::vector<int> want = m->tokenizer().encode("defgh");
  want.push_back(m->tokenizer().eos_id());
  EXPECT_EQ(s.completion, want);  // encoding span by span = encoding whole, for characters
  EXPECT_EQ(s.no_loss, (std::vector<char>{0, 1, 1, 0, 0, 0}));
  EXPECT_EQ(trained_completion_tokens(s), 4);
  // Without spans: no mask at all.
  const Sequence plain = sft_sequence(m->tokenizer(), Example{"abc", "", "defgh"}, 0);
  EXPECT_TRUE(plain.no_loss.empty());
  EXPECT_EQ(trained_completion_tokens(plain), 6);
  // Spans are checked again where they are used (examples may be built in code).
  Example out_of_range{"abc", "", "de"};
  out_of_range.no_loss = {{1, 5}};
  EXPECT_THROW(sft_sequence(m->tokenizer(), out_of_range, 0), Error);
  // A mask whose length does not match its completion is refused by the batch.
  Sequence bad = s;
  bad.no_loss.pop_back();
  EXPECT_THROW(make_batch({bad}, 0), Error);
}

TEST(SftLossMask, MarkedTokensCarryNoLossAndNoGradient) {
  auto m = testing::tiny_model();
  const Example whole{"abc", "", "defgh"};
  Example masked = whole;
  masked.no_loss = {{1, 3}};
  const Sequence other = sft_sequence(m->tokenizer(), Example{"ba", "", "ccd"}, 1);
  const SequenceBatch bm = make_batch({sft_sequence(m->tokenizer(), masked, 0), other}, 0);
  const SequenceBatch bw = make_batch({sft_sequence(m->tokenizer(), whole, 0), other}, 0);
  ASSERT_EQ(bm.tokens, bw.tokens);  // the same text; only the targets differ
  // The marked tokens "ef" are completion tokens 1 and 2: predicted at rows 3 and 4 of sequence 0.
  std::vector<int> marked_rows;
  for (size_t n = 0; n < bw.targets.size(); ++n)
    if (bm.targets[n] != bw.targets[n]) {
      EXPECT_EQ(bm.targets[n], -1);
      marked_rows.push_back(static_cast<int>(n));
    }
  EXPECT_EQ(marked_rows, (std::vector<int>{3, 4}));
  EXPECT_EQ(bm.trained_rows, bw.trained_rows - 2);

  const int N = bw.B * bw.T, V = m->config().vocab;
  const std::vector<float> logits(m->forward(bw.tokens.data(), bw.B, bw.T),
                                  m->forward(bw.tokens.data(), bw.B, bw.T) + size_t(N) * V);
  std::vector<float> gm(size_t(N) * V), gw(size_t(N) * V), gx(size_t(N) * V);
  const TokenSums sm = sft_objective(gm.data(), logits.data(), bm, m->vocab_shard(), 1.0f);
  const TokenSums sw = sft_objective(gw.data(), logits.data(), bw, m->vocab_shard(), 1.0f);
  // The marked rows alone: the whole loss is the masked loss plus theirs.
  SequenceBatch only = bw;
  for (size_t n = 0; n < only.targets.size(); ++n)
    if (n != 3 && n != 4) only.targets[n] = -1;
  const TokenSums sx = sft_objective(gx.data(), logits.data(), only, m->vocab_shard(), 1.0f);
  EXPECT_EQ(sm.tokens, sw.tokens - 2);
  EXPECT_GT(sx.loss, 0.0);
  EXPECT_NEAR(sm.loss + sx.loss, sw.loss, 1e-5 * std::abs(sw.loss));
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < V; ++v) {
      const size_t i = size_t(n) * V + v;
      if (n == 3 || n == 4) EXPECT_EQ(gm[i], 0.0f) << "row " << n;
      else EXPECT_EQ(gm[i], gw[i]) << "row " << n;
    }
}

// The shipped teacher (0.99 greedy on arith:general) sampled at temperature 1, 3 samples of 12 problems.
TEST(SampledEval, AccuracyIsTheMeanOverSamplesPerProblem) {
  auto m = load_model(std::string(OPD_SOURCE_DIR) + "/models/teacher.h5");
  const std::vector<Example> problems = builtin_task_sets("arith:general", 12, 5)[0].examples;
  EvalOptions o;
  o.temperature = 1.0f;
  o.samples = 3;
  o.seed = 9;
  const EvalResult r = evaluate(*m, static_cast<Transformer*>(nullptr), problems, o);
  EXPECT_EQ(r.n, 12);
  EXPECT_EQ(r.sequences, 36);
  // The same draws as a rollout of 3 samples per prompt: its rewards' mean is the accuracy.
  GenerateOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.sampling.temperature = 1.0f;
  g.sampling.seed = 9;
  const Rollout roll = sample_rollouts(*m, problems, 3, g, o.batch);
  double correct = 0;
  for (float x : roll.rewards) correct += x;
  EXPECT_EQ(r.correct, static_cast<int>(correct));
  EXPECT_DOUBLE_EQ(r.accuracy, correct / 36);
  EXPECT_GT(r.accuracy, 0.8);
  // Its chains write every computed number: 3 per completion, none erased (no recovery training).
  EXPECT_GE(r.erase.numbers, 3 * 36 - 3);
  EXPECT_EQ(r.erase.erasures, 0);
  // Greedy stays one completion per problem; samples of a greedy decoder are refused.
  const EvalResult greedy = evaluate(*m, static_cast<Transformer*>(nullptr), problems, EvalOptions{});
  EXPECT_EQ(greedy.sequences, 12);
  EvalOptions bad;
  bad.samples = 2;
  EXPECT_THROW(evaluate(*m, static_cast<Transformer*>(nullptr), problems, bad), Error);
  // Shards merge into the accuracy over all their completions.
  EvalResult a = evaluate(*m, static_cast<Transformer*>(nullptr), {problems.begin(), problems.begin() + 5}, o);
  const EvalResult b = evaluate(*m, static_cast<Transformer*>(nullptr), {problems.begin() + 5, problems.end()}, o);
  const int correct_ab = a.correct + b.correct;
  merge_eval(a, b);
  EXPECT_EQ(a.sequences, 36);
  EXPECT_DOUBLE_EQ(a.accuracy, correct_ab / 36.0);
  const json rep = sampled_report(r, o);
  EXPECT_DOUBLE_EQ(rep["accuracy_sampled"].get<double>(), r.accuracy);
  EXPECT_EQ(rep["samples"], 3);
  EXPECT_DOUBLE_EQ(rep["erasures"].get<double>(), 0.0);
}

}  // namespace
}  // namespace opd
