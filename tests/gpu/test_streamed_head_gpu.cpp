// The streamed LM head on the GPU (docs/ARCHITECTURE.md §2; model/logit_blocks.h) against the CPU
// reference: each objective's update with the head in blocks of rows that do not divide the batch
// (sums and every parameter's gradient), the teacher's scores, shared-prefix scoring and sampling's
// prefill with the head streamed, and a plan that holds one block of logits, not [N, V]. The CPU
// model gets the weights rounded to bf16, so what differs is the GPU's bf16 activations alone.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model/transformer.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "gpu/gpu_model_util.h"
#include "kernels/cuda/device.cuh"
#include "model/backend_cuda.h"
#include "model/logit_blocks.h"
#include "train/teacher.h"
#include "train/update.h"

using namespace opd;
using namespace opd::testing;

namespace {

constexpr int kBlock = 7;  // rows of the head's block: 7 does not divide the batches below

std::unique_ptr<Transformer> on_gpu(const Transformer& cpu, const MemoryPlanOptions& plan, int head_rows) {
  auto g = std::make_unique<Transformer>(cpu);
  g->set_head_rows(head_rows);
  g->use_gpu(plan, "test");
  return g;
}

std::vector<float> device_grads(Transformer& g) { return to_host(g.training_memory().grads, g.params().size()); }

// Six sequences of random tokens, prompts of 5..10 and completions of 12..27 tokens.
SequenceBatch random_batch(uint32_t seed) {
  std::vector<Sequence> seqs;
  const std::vector<int> t = random_tokens(6 * 40, seed);
  for (int i = 0; i < 6; ++i) {
    Sequence s;
    s.prompt.assign(t.begin() + i * 40, t.begin() + i * 40 + 5 + i);
    s.completion.assign(t.begin() + i * 40 + 10, t.begin() + i * 40 + 22 + 3 * i);
    s.group = i / 2;
    seqs.push_back(s);
  }
  return make_batch(seqs, 0);
}

class GpuStreamedHead : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

TEST_F(GpuStreamedHead, EveryObjectiveFollowsTheCpu) {
  const SequenceBatch b = random_batch(3);
  const std::vector<float> adv = {0.5f, -0.25f, 1.0f, 0.0f, -1.0f, 0.75f};
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied LM head" : "untied LM head");
    auto cpu = bf16_model(tied, 7);
    auto teacher = bf16_model(tied, 8);
    cpu->set_head_rows(kBlock);
    auto gpu = on_gpu(*cpu, training_plan(b.B, b.T), kBlock);
    ASSERT_TRUE(gpu->streams_head(size_t(b.B) * b.T));
    ColocatedTeacher scorer(*teacher);
    for (const std::string mode : {"sampled", "full", "topk:8", "rl", "sft"}) {
      SCOPED_TRACE(mode);
      const Method method = mode == "rl" ? Method::kRl : mode == "sft" ? Method::kSft : Method::kDistill;
      DistillOptions o;
      o.kl = parse_kl(method == Method::kDistill ? mode : "sampled", cpu->config().vocab);
      o.reward_coef = 0.5;
      const TeacherScores scores = scorer.score(b, o.kl);  // the same scores for both: the student alone differs
      const TeacherScores* s = method == Method::kDistill ? &scores : nullptr;
      const std::vector<float> a = method == Method::kSft ? std::vector<float>() : adv;
      cpu->zero_grad();
      const TokenSums want = update_micro_batch(*cpu, b, method, o, s, a);
      gpu->zero_grad();
      const TokenSums got = update_micro_batch(*gpu, b, method, o, s, a);
      EXPECT_NEAR(got.loss, want.loss, 3e-2 * std::abs(want.loss) + 1e-3);
      EXPECT_NEAR(got.entropy, want.entropy, 3e-2 * std::abs(want.entropy) + 1e-3);
      EXPECT_EQ(got.tokens, want.tokens);
      const std::vector<float> g = device_grads(*gpu);
      for (const ParamSpec& p : cpu->specs())
        EXPECT_LT(rel_l2(g.data() + p.offset, cpu->grads().data() + p.offset, p.size), 6e-2) << p.name;
    }
  }
}

// On one GPU, the streamed head and the whole rows differ only by how the head's GEMMs are split.
TEST_F(GpuStreamedHead, BlocksMatchTheWholeRowsOnTheGpu) {
  const SequenceBatch b = random_batch(5);
  auto cpu = bf16_model(false, 9);
  auto teacher = bf16_model(false, 10);
  DistillOptions o;
  o.kl = parse_kl("full", cpu->config().vocab);
  const TeacherScores scores = ColocatedTeacher(*teacher).score(b, o.kl);
  std::vector<float> grads[2];
  TokenSums sums[2];
  for (int i = 0; i < 2; ++i) {
    auto gpu = on_gpu(*cpu, training_plan(b.B, b.T), i == 0 ? kHeadRowsAll : kBlock);
    gpu->zero_grad();
    sums[i] = update_micro_batch(*gpu, b, Method::kDistill, o, &scores, {});
    grads[i] = device_grads(*gpu);
  }
  EXPECT_NEAR(sums[1].loss, sums[0].loss, 1e-3 * std::abs(sums[0].loss));
  EXPECT_LT(rel_l2(grads[1].data(), grads[0].data(), grads[0].size()), 1e-2);
}

TEST_F(GpuStreamedHead, TeacherScoresFollowTheCpu) {
  const SequenceBatch b = random_batch(7);
  auto cpu = bf16_model(true, 11);
  cpu->set_forward_only();
  MemoryPlanOptions plan;
  plan.batch = b.B;
  plan.seq = b.T;
  auto gpu = on_gpu(*cpu, plan, kBlock);
  cpu->set_head_rows(kBlock);
  ColocatedTeacher on_cpu(*cpu), on_device(*gpu);
  for (const std::string mode : {"sampled", "full", "topk:8"}) {
    SCOPED_TRACE(mode);
    const KlSpec kl = parse_kl(mode, cpu->config().vocab);
    const TeacherScores want = on_cpu.score(b, kl), got = on_device.score(b, kl);
    EXPECT_LT(rel_l2(got.logp.data(), want.logp.data(), want.logp.size()), 2e-2);
    EXPECT_LT(rel_l2(got.full.data(), want.full.data(), want.full.size()), 2e-2);
    EXPECT_LT(rel_l2(got.topk_logp.data(), want.topk_logp.data(), want.topk_logp.size()), 2e-2);
  }
}

TEST_F(GpuStreamedHead, SharedPrefixAndPrefillFollowTheCpu) {
  // Two prompts, three samples each: the teacher extends each prompt's cache by its completions.
  const std::vector<int> t = random_tokens(64, 13);
  const std::vector<int> p1(t.begin(), t.begin() + 6), p2(t.begin() + 6, t.begin() + 9);
  std::vector<Sequence> seqs;
  for (int i = 0; i < 6; ++i)
    seqs.push_back({i % 2 ? p2 : p1, std::vector<int>(t.begin() + 10 + i, t.begin() + 20 + 4 * i), i % 2, true});
  const SequenceBatch b = make_batch(seqs, 0);
  auto cpu = bf16_model(false, 12);
  cpu->set_forward_only();
  MemoryPlanOptions plan;
  plan.batch = b.B;
  plan.seq = b.T;
  plan.kv_batch = b.B;
  plan.kv_capacity = b.T;
  plan.extend = true;
  auto gpu = on_gpu(*cpu, plan, kBlock);
  cpu->set_head_rows(kBlock);
  const KlSpec kl = parse_kl("topk:8", cpu->config().vocab);
  double f0 = 0, f1 = 0;
  const TeacherScores want = ColocatedTeacher(*cpu).score_shared_prefix(b, kl, &f0);
  const TeacherScores got = ColocatedTeacher(*gpu).score_shared_prefix(b, kl, &f1);
  EXPECT_EQ(f0, f1);
  EXPECT_LT(rel_l2(got.logp.data(), want.logp.data(), want.logp.size()), 2e-2);
  EXPECT_LT(rel_l2(got.topk_logp.data(), want.topk_logp.data(), want.topk_logp.size()), 3e-2);

  // Sampling's prefill: the last rows of prompts longer than the block, [B, V].
  const int B = 3, T = 12, V = cpu->config().vocab;
  const std::vector<int> prompts = random_tokens(B * T, 17), len = {12, 9, 10};
  KVCache cc, gc;
  cpu->reset_cache(cc, B, T + 4);
  gpu->reset_cache(gc, B, T + 4);
  const float* w = cpu->prefill_last(cc, prompts.data(), B, T, len.data());
  const std::vector<float> want_rows(w, w + size_t(B) * V);
  const std::vector<float> got_rows = to_host(gpu->prefill_last(gc, prompts.data(), B, T, len.data()), size_t(B) * V);
  EXPECT_LT(rel_l2(got_rows.data(), want_rows.data(), want_rows.size()), 2e-2);
}

// The plan the model makes for itself: one block of logits, their gradient and its bf16 copy.
TEST_F(GpuStreamedHead, ThePlanHoldsOneBlock) {
  auto cpu = bf16_model(false, 1);
  cpu->set_head_rows(kBlock);
  MemoryPlanOptions plan = training_plan(4, 40);
  plan.head_rows = kBlock;
  const MemoryPlan p = plan_model_memory(cpu->config(), plan, gpu_workspace(cpu->config(), plan));
  const size_t V = cpu->config().vocab;
  EXPECT_LT(p.at("logits").bytes, kBlock * V * 4 + MemoryPlan::kAlign);
  EXPECT_LT(p.at("dlogits.bf16").bytes, kBlock * V * 2 + MemoryPlan::kAlign);
  auto gpu = on_gpu(*cpu, training_plan(4, 40), kBlock);
  const std::vector<int> tokens = random_tokens(4 * 40, 19);
  // The whole rows do not fit the plan: forward() is refused naming the block.
  EXPECT_THROW(gpu->forward(tokens.data(), 4, 40), Error);
}

}  // namespace
#endif  // OPD_WITH_CUDA
