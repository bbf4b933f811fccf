// The streamed LM head (docs/ARCHITECTURE.md §2; model/logit_blocks.h) against the [N, V] rows of
// one forward, the reference: every objective's sums and every parameter's gradient, tied and
// untied heads, blocks that do not divide the rows; the teacher's scores (plain and shared-prefix);
// prefill for sampling; and the streamed update's gradients against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "common/check.h"
#include "model/logit_blocks.h"
#include "model/tiny_model.h"
#include "train/teacher.h"
#include "train/update.h"

namespace opd {
namespace {

// Five sequences of different prompt and completion lengths: 5 x 9 = 45 rows, of which the
// trained ones are spread over every block size below.
SequenceBatch batch() {
  std::vector<Sequence> seqs;
  for (int i = 0; i < 5; ++i) {
    Sequence s;
    for (int t = 0; t < 2 + i % 3; ++t) s.prompt.push_back(2 + (i * 3 + t) % 9);
    for (int t = 0; t < 1 + (i * 5) % 6; ++t) s.completion.push_back(2 + (i * 7 + t * 2) % 9);
    s.group = i / 2;
    seqs.push_back(s);
  }
  return make_batch(seqs, 0);
}

struct Update {
  TokenSums sums;
  std::vector<float> grads;
};

// One micro-batch's update of `model` with its head block set to `rows` (0: the [N, V] rows).
Update run_update(Transformer& model, int rows, const SequenceBatch& b, Method method, const DistillOptions& o,
                  const TeacherScores* scores, const std::vector<float>& adv) {
  model.set_head_rows(rows);
  model.zero_grad();
  Update u;
  u.sums = update_micro_batch(model, b, method, o, scores, adv);
  u.grads = model.grads();
  return u;
}

void expect_close(double a, double b, double rel, const std::string& what) {
  EXPECT_NEAR(a, b, rel * std::max(1.0, std::abs(b))) << what;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double rel, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  EXPECT_LE(worst, rel * scale) << what << ": worst difference " << worst << " of scale " << scale;
}

void expect_same_update(const Update& got, const Update& want, const std::string& what) {
  expect_close(got.sums.loss, want.sums.loss, 1e-5, what + ": loss");
  expect_close(got.sums.kl, want.sums.kl, 1e-5, what + ": kl");
  expect_close(got.sums.kl_exact, want.sums.kl_exact, 1e-5, what + ": kl_exact");
  expect_close(got.sums.entropy, want.sums.entropy, 1e-5, what + ": entropy");
  expect_close(got.sums.logp_student, want.sums.logp_student, 1e-5, what + ": logp_student");
  EXPECT_EQ(got.sums.tokens, want.sums.tokens) << what;
  expect_close(got.grads, want.grads, 1e-5, what + ": gradients");
}

struct Objective {
  std::string name;
  Method method;
  std::string kl;
  double discount = 0, reward_coef = 0;
};

const Objective kObjectives[] = {
    {"distill sampled", Method::kDistill, "sampled"},
    {"distill sampled, discounted", Method::kDistill, "sampled", 0.5},
    {"distill sampled + reward", Method::kDistill, "sampled", 0, 0.5},
    {"distill full", Method::kDistill, "full"},
    {"distill full + reward", Method::kDistill, "full", 0, 0.5},
    {"distill topk:3", Method::kDistill, "topk:3"},
    {"distill topk:3 + reward", Method::kDistill, "topk:3", 0, 0.5},
    {"rl", Method::kRl, ""},
    {"sft", Method::kSft, ""},
};

TEST(StreamedHead, EveryObjectiveMatchesTheRowsInMemory) {
  const SequenceBatch b = batch();
  const int N = b.B * b.T;
  const std::vector<float> adv = {0.5f, -0.25f, 1.0f, 0.0f, -1.0f};
  for (bool tied : {false, true}) {
    auto student = testing::tiny_model(tied, 9);
    auto teacher = testing::tiny_model(tied, 10);
    ColocatedTeacher scorer(*teacher);
    for (const Objective& obj : kObjectives) {
      DistillOptions o;
      o.kl = parse_kl(obj.kl.empty() ? "sampled" : obj.kl, student->config().vocab);
      o.kl_discount = obj.discount;
      o.reward_coef = obj.reward_coef;
      const TeacherScores scores = scorer.score(b, o.kl);
      const TeacherScores* s = obj.method == Method::kDistill ? &scores : nullptr;
      const std::vector<float>& a = obj.method == Method::kSft ? std::vector<float>() : adv;
      const Update want = run_update(*student, kHeadRowsAll, b, obj.method, o, s, a);
      for (int rows : {1, 4, 7, N - 1}) {  // 45 rows: blocks of 7 leave 3, of 44 leave 1
        const Update got = run_update(*student, rows, b, obj.method, o, s, a);
        expect_same_update(got, want, obj.name + (tied ? " (tied)" : "") + ", blocks of " + std::to_string(rows));
      }
    }
  }
}

TEST(StreamedHead, AutoBlockStreamsOnlyLargeVocabularies) {
  auto small = testing::tiny_model();
  EXPECT_EQ(small->head_rows(), int(kHeadBlockBytes / (4 * 11)));
  EXPECT_FALSE(small->streams_head(100000));
  EXPECT_EQ(resolve_head_rows(kHeadRowsAuto, 151936), 883);  // 512 MiB of fp32 rows of Qwen3's vocabulary
  EXPECT_EQ(resolve_head_rows(kHeadRowsAuto, 151936 / 4), 3533);  // a tp = 4 shard
  EXPECT_EQ(resolve_head_rows(kHeadRowsAll, 151936), 0);
  EXPECT_EQ(resolve_head_rows(5, 151936), 5);
  EXPECT_EQ(resolve_head_rows(kHeadRowsAuto, 1 << 30), 1);
  EXPECT_THROW(resolve_head_rows(-2, 10), Error);
  small->set_head_rows(kHeadRowsAll);
  EXPECT_FALSE(small->streams_head(100000));
  small->set_head_rows(8);
  EXPECT_TRUE(small->streams_head(9));
  EXPECT_FALSE(small->streams_head(8));
}

TEST(StreamedHead, TeacherScoresMatchTheRowsInMemory) {
  const SequenceBatch b = batch();
  for (bool tied : {false, true}) {
    auto teacher = testing::tiny_model(tied, 10);
    teacher->set_forward_only();
    ColocatedTeacher scorer(*teacher);
    for (const std::string mode : {"sampled", "full", "topk:3"}) {
      const KlSpec kl = parse_kl(mode, teacher->config().vocab);
      teacher->set_head_rows(kHeadRowsAll);
      const TeacherScores want = scorer.score(b, kl);
      for (int rows : {1, 7}) {
        teacher->set_head_rows(rows);
        const TeacherScores got = scorer.score(b, kl);
        const std::string what = mode + ", blocks of " + std::to_string(rows);
        expect_close(got.logp, want.logp, 1e-5, what + ": log-probs");
        expect_close(got.full, want.full, 1e-5, what + ": full rows");
        EXPECT_EQ(got.topk_ids, want.topk_ids) << what;
        expect_close(got.topk_logp, want.topk_logp, 1e-5, what + ": top-K log-probs");
      }
    }
  }
}

// The same groups as test_shared_prefix.cpp: the streamed shared-prefix scores are the in-memory
// ones on every row with a target (rows without one are never read).
TEST(StreamedHead, SharedPrefixScoresMatchTheRowsInMemory) {
  const std::vector<int> p1 = {2, 3, 4}, p2 = {5, 6}, p3 = {2, 3, 7, 8};
  const SequenceBatch b = make_batch({{p1, {4, 5, 6, 1}, 0, true},
                                      {p2, {7, 7}, 1, true},
                                      {p1, {9}, 0, true},
                                      {p3, {3, 1}, 2, true},
                                      {p1, {5, 5, 5, 5, 5, 5}, 0, false},
                                      {p2, {8, 2, 3, 1}, 1, true},
                                      {p2, {1}, 1, true}},
                                     0);
  auto teacher = testing::tiny_model(false, 5);
  ColocatedTeacher scorer(*teacher);
  const size_t V = teacher->config().vocab;
  for (const std::string mode : {"sampled", "full", "topk:3"}) {
    const KlSpec kl = parse_kl(mode, int(V));
    teacher->set_head_rows(kHeadRowsAll);
    double want_flops = 0, got_flops = 0;
    const TeacherScores want = scorer.score_shared_prefix(b, kl, &want_flops);
    teacher->set_head_rows(3);  // fewer than a group's completion rows
    const TeacherScores got = scorer.score_shared_prefix(b, kl, &got_flops);
    EXPECT_EQ(got_flops, want_flops);
    const size_t K1 = size_t(kl.k) + 1;
    for (size_t r = 0; r < b.targets.size(); ++r) {
      if (b.targets[r] < 0) {
        EXPECT_EQ(got.logp[r], 0.0f) << mode << " row " << r;
        continue;
      }
      EXPECT_NEAR(got.logp[r], want.logp[r], 1e-5 * (1 + std::abs(want.logp[r]))) << mode << " row " << r;
      for (size_t v = 0; v < (kl.mode == KlSpec::kFull ? V : 0); ++v)
        EXPECT_NEAR(got.full[r * V + v], want.full[r * V + v], 1e-5 * (1 + std::abs(want.full[r * V + v])));
      for (size_t j = 0; j < (kl.mode == KlSpec::kTopK ? K1 : 0); ++j) {
        EXPECT_EQ(got.topk_ids[r * K1 + j], want.topk_ids[r * K1 + j]) << mode << " row " << r;
        EXPECT_NEAR(got.topk_logp[r * K1 + j], want.topk_logp[r * K1 + j], 1e-5);
      }
    }
  }
}

// Sampling's prefill keeps [B, V] rows: with the head streamed they come from the prompts' last
// hidden rows alone.
TEST(StreamedHead, PrefillLastRowsMatch) {
  auto m = testing::tiny_model(true, 4);
  const int B = 3, T = 5, V = m->config().vocab;
  const std::vector<int> tokens = {2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 2, 3, 4, 0}, len = {5, 2, 4};
  KVCache cache;
  m->set_head_rows(kHeadRowsAll);
  m->reset_cache(cache, B, 8);
  const float* w = m->prefill_last(cache, tokens.data(), B, T, len.data());
  const std::vector<float> want(w, w + B * V);
  m->set_head_rows(4);  // 15 prompt rows: streamed
  m->reset_cache(cache, B, 8);
  const float* g = m->prefill_last(cache, tokens.data(), B, T, len.data());
  expect_close(std::vector<float>(g, g + B * V), want, 1e-5, "last-token logits");
  const std::vector<int> next = {3, 4, 5}, pos = {5, 2, 4};
  const float* d = m->decode(cache, next.data(), pos.data());
  EXPECT_TRUE(std::all_of(d, d + B * V, [](float x) { return std::isfinite(x); }));
}

// The streamed update's gradient of the head, the final norm and an embedding row against central
// differences of its loss (whose value is the objective for these: full and top-K KL, SFT).
TEST(StreamedHead, GradientsMatchFiniteDifferences) {
  const SequenceBatch b = batch();
  for (bool tied : {false, true}) {
    auto student = testing::tiny_model(tied, 9);
    for (float& w : student->params()) w *= 0.05f;  // logits of order 1: smooth losses
    auto teacher = testing::tiny_model(tied, 10);
    ColocatedTeacher scorer(*teacher);
    for (const std::string mode : {"full", "topk:3", "sft"}) {
      DistillOptions o;
      const bool sft = mode == "sft";
      o.kl = parse_kl(sft ? "sampled" : mode, student->config().vocab);
      const TeacherScores scores = scorer.score(b, o.kl);
      const Method method = sft ? Method::kSft : Method::kDistill;
      const auto loss = [&] {
        student->zero_grad();
        return update_micro_batch(*student, b, method, o, sft ? nullptr : &scores, {}).loss;
      };
      student->set_head_rows(4);
      loss();
      const std::vector<float> grads = student->grads();
      ModelOffsets off = model_offsets(student->config(), student->specs());
      const int C = student->config().d_model;
      std::vector<size_t> probe;
      for (int i = 0; i < 6; ++i) probe.push_back(off.lm_head + size_t(i * 37 % 11) * C + i * 5);
      for (int i = 0; i < 3; ++i) probe.push_back(off.final_norm + size_t(i * 7));
      probe.push_back(off.embed + size_t(4) * C + 3);
      for (size_t p : probe) {
        float& w = student->params()[p];
        const float saved = w, h = 3e-3f;
        w = saved + h;
        const double up = loss();
        w = saved - h;
        const double down = loss();
        w = saved;
        const double fd = (up - down) / (double(saved + h) - double(saved - h));
        EXPECT_NEAR(grads[p], fd, 2e-3 * std::abs(fd) + 1e-3)
            << mode << (tied ? " (tied)" : "") << ", parameter " << p;
      }
    }
  }
}

}  // namespace
}  // namespace opd
