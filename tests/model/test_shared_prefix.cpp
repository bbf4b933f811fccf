// Shared-prefix scoring: a prompt prefilled once and its samples run against that KV cache give
// the scores of the full forward (to float rounding, other GEMM shapes) in every KL mode, and
// spend fewer FLOPs when samples share a prompt.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/tiny_model.h"
#include "train/scoring.h"
#include "train/teacher.h"

namespace opd {
namespace {

// Two prompts with three samples each (different completion lengths, one of a single token),
// interleaved with a prompt of its own, so groups are found wherever their rows are.
SequenceBatch grouped_batch() {
  const std::vector<int> p1 = {2, 3, 4}, p2 = {5, 6}, p3 = {2, 3, 7, 8};
  std::vector<Sequence> seqs = {
      {p1, {4, 5, 6, 1}, 0, true},        {p2, {7, 7}, 1, true},       {p1, {9}, 0, true}, {p3, {3, 1}, 2, true},
      {p1, {5, 5, 5, 5, 5, 5}, 0, false}, {p2, {8, 2, 3, 1}, 1, true}, {p2, {1}, 1, true}};
  return make_batch(seqs, 0);
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, const SequenceBatch& batch, size_t width,
                  const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (batch.targets[i / width] < 0) continue;  // rows without a score
    EXPECT_NEAR(a[i], b[i], 2e-4 * (1 + std::abs(b[i]))) << what << " at " << i;
  }
}

TEST(SharedPrefix, SameScoresAsTheFullForwardInEveryMode) {
  auto teacher = testing::tiny_model(false, 5);
  ColocatedTeacher t(*teacher);
  const SequenceBatch b = grouped_batch();
  const size_t V = teacher->config().vocab;
  KlSpec modes[3];
  modes[1].mode = KlSpec::kFull;
  modes[2].mode = KlSpec::kTopK;
  modes[2].k = 3;
  for (const KlSpec& kl : modes) {
    double flops = 0;
    const TeacherScores shared = t.score_shared_prefix(b, kl, &flops);
    const TeacherScores full = t.score(b, kl);
    expect_close(shared.logp, full.logp, b, 1, "logp");
    expect_close(shared.full, full.full, b, V, "full rows");
    expect_close(shared.topk_logp, full.topk_logp, b, kl.k + 1, "top-K log-probs");
    for (size_t i = 0; i < full.topk_ids.size(); ++i)
      if (b.targets[i / (kl.k + 1)] >= 0) EXPECT_EQ(shared.topk_ids[i], full.topk_ids[i]) << "top-K id " << i;
    EXPECT_GT(flops, 0);
    EXPECT_LT(flops, scoring_flops(*teacher, b)) << "shared prompts must cost less than one forward per row";
  }
}

TEST(SharedPrefix, ExtendEqualsTheTrainingForward) {
  auto m = testing::tiny_model(false, 7);
  const std::vector<int> tokens = {2, 3, 4, 5, 6, 7, 8, 9, 10, 2};
  const int P = 4, T = static_cast<int>(tokens.size()), V = m->config().vocab;
  const std::vector<float> want(m->forward(tokens.data(), 1, T), m->forward(tokens.data(), 1, T) + size_t(T) * V);
  KVCache cache;
  m->reset_cache(cache, 1, T);
  m->prefill(cache, tokens.data(), 1, P);
  const int start = P;
  const float* got = m->extend(cache, tokens.data() + P, T - P, &start);
  for (int t = 0; t < T - P; ++t)
    for (int v = 0; v < V; ++v)
      EXPECT_NEAR(got[size_t(t) * V + v], want[size_t(P + t) * V + v],
                  2e-4 * (1 + std::abs(want[size_t(P + t) * V + v])))
          << "position " << P + t;
  const int bad = T - 2;
  EXPECT_THROW(m->extend(cache, tokens.data(), 3, &bad), Error);
}

}  // namespace
}  // namespace opd
