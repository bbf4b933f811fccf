// Device memory planned up front: sizes per kind follow the model's shape and the batch, options
// that should shrink a kind do, and a plan that does not fit is refused naming what to lower.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "model/memory_plan.h"
#include "model/presets.h"

using opd::MemoryKind;
using opd::MemoryPlanOptions;

namespace {

opd::ModelConfig qwen3_06b() { return opd::qwen3_preset("qwen3-0.6b", 4096); }

}  // namespace

TEST(MemoryPlan, WeightsAndOptimizerStateFollowTheParameterCount) {
  const opd::ModelConfig c = qwen3_06b();
  const size_t P = size_t(c.num_parameters());
  MemoryPlanOptions o;
  o.train = true;
  o.batch = 4;
  o.seq = 2048;
  const opd::MemoryPlan plan = opd::plan_model_memory(c, o, {1 << 20, 32 << 20});
  const auto near = [](size_t got, size_t want) { return got >= want && got < want + 4096; };
  EXPECT_TRUE(near(plan.bytes(MemoryKind::kWeights), 2 * P)) << plan.bytes(MemoryKind::kWeights);
  EXPECT_TRUE(near(plan.bytes(MemoryKind::kMaster), 4 * P));
  EXPECT_TRUE(near(plan.bytes(MemoryKind::kGrads), 4 * P));
  EXPECT_TRUE(near(plan.bytes(MemoryKind::kOptimizer), 9 * P));  // m, v and the weight-decay mask
  // fp32 logits over 8192 tokens, their fp32 gradient and its bf16 copy.
  EXPECT_EQ(plan.bytes(MemoryKind::kLogits), size_t(8192) * 151936 * 10);
  EXPECT_EQ(plan.total(), plan.arena_bytes() + (32 << 20));  // cuBLASLt's workspace is counted, not carved
  for (const opd::MemoryBlock& b : plan.blocks()) EXPECT_EQ(b.offset % opd::MemoryPlan::kAlign, 0u) << b.name;
  EXPECT_TRUE(plan.has("L27.h"));
  EXPECT_EQ(plan.at("L3.q").bytes, size_t(8192) * 16 * 128 * 2);
  EXPECT_THROW(plan.at("L28.h"), opd::Error);
  const std::string r = plan.report("student");
  EXPECT_NE(r.find("optimizer state"), std::string::npos) << r;
  EXPECT_NE(r.find("total"), std::string::npos) << r;
}

TEST(MemoryPlan, RecomputeAndTensorParallelismShrinkWhatTheyShould) {
  const opd::ModelConfig c = qwen3_06b();
  MemoryPlanOptions o;
  o.train = true;
  o.batch = 4;
  o.seq = 2048;
  const opd::MemoryPlan full = opd::plan_model_memory(c, o, {});
  o.recompute = true;
  const opd::MemoryPlan rec = opd::plan_model_memory(c, o, {});
  EXPECT_LT(rec.bytes(MemoryKind::kActivations) * 5, full.bytes(MemoryKind::kActivations));
  EXPECT_FALSE(rec.has("L3.q"));
  EXPECT_TRUE(rec.has("layer.q") && rec.has("L3.resid"));
  EXPECT_EQ(rec.bytes(MemoryKind::kOptimizer), full.bytes(MemoryKind::kOptimizer));
  o.tp = 2;
  const opd::MemoryPlan tp2 = opd::plan_model_memory(c, o, {});
  EXPECT_EQ(tp2.bytes(MemoryKind::kLogits) * 2, rec.bytes(MemoryKind::kLogits));
  EXPECT_LT(tp2.bytes(MemoryKind::kOptimizer), rec.bytes(MemoryKind::kOptimizer));
  o.tp = 3;
  EXPECT_THROW(opd::plan_model_memory(c, o, {}), opd::Error);
}

TEST(MemoryPlan, ForwardOnlyAndGenerationNeedNoTrainingState) {
  const opd::ModelConfig c = qwen3_06b();
  MemoryPlanOptions o;  // a teacher: forward only
  o.batch = 8;
  o.seq = 2048;
  const opd::MemoryPlan teacher = opd::plan_model_memory(c, o, {});
  EXPECT_EQ(teacher.bytes(MemoryKind::kMaster) + teacher.bytes(MemoryKind::kOptimizer) +
                teacher.bytes(MemoryKind::kGrads),
            0u);
  EXPECT_TRUE(teacher.has("stream.resid"));
  EXPECT_FALSE(teacher.has("L0.resid"));
  o.batch = 0;
  o.seq = 0;
  o.kv_batch = 64;
  o.kv_capacity = 2048;
  const opd::MemoryPlan sampler = opd::plan_model_memory(c, o, {});
  // 28 layers x (k, v) x 64 sequences x 2048 positions x 8 kv heads x 128 x bf16.
  EXPECT_EQ(sampler.bytes(MemoryKind::kKVCache), size_t(28) * 2 * 64 * 2048 * 1024 * 2);
  o.train = true;
  EXPECT_THROW(opd::plan_model_memory(c, o, {}), opd::Error);  // training needs a forward batch
}

TEST(MemoryPlan, ARunThatDoesNotFitNamesWhatToLower) {
  const opd::ModelConfig c = qwen3_06b();
  MemoryPlanOptions o;
  o.train = true;
  o.batch = 64;
  o.seq = 4096;
  const opd::MemoryPlan plan = opd::plan_model_memory(c, o, {});
  EXPECT_NO_THROW(plan.check_fits(plan.total(), "rank 0"));
  try {
    plan.check_fits(size_t(80) << 30, "rank 3 (student) on GPU 1");
    ADD_FAILURE() << "a plan of " << plan.total() << " bytes fit in 80 GiB";
  } catch (const opd::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rank 3 (student) on GPU 1: the planned device memory is "), std::string::npos) << m;
    EXPECT_NE(m.find("but only 80.00 GiB is free"), std::string::npos) << m;
    EXPECT_NE(m.find("--recompute"), std::string::npos) << m;
    EXPECT_NE(m.find("--micro-batch"), std::string::npos) << m;
  }
}

// LoRA: the base weights stay bf16 only; master weights, gradients and AdamW state are the
// adapters' (a few percent of the model's), plus their rank-R scratch.
TEST(MemoryPlan, LoraKeepsTrainingStateForTheAdaptersOnly) {
  const opd::ModelConfig c = qwen3_06b();
  MemoryPlanOptions o;
  o.train = true;
  o.batch = 4;
  o.seq = 2048;
  const opd::MemoryPlan full = opd::plan_model_memory(c, o, {});
  o.lora.rank = 32;
  const opd::MemoryPlan lora = opd::plan_model_memory(c, o, {});
  const size_t P = size_t(c.num_parameters()), A = opd::total_size(opd::lora_specs(c, o.lora));
  // Rank 32 on every projection of 28 layers: 32 x (in + out) per projection.
  EXPECT_EQ(A, size_t(28) * 32 * ((1024 + 2048) + 2 * (1024 + 1024) + (2048 + 1024) + 3 * (1024 + 3072)));
  const auto near = [](size_t got, size_t want) { return got >= want && got < want + 8192; };
  EXPECT_TRUE(near(lora.bytes(MemoryKind::kWeights), 2 * P + 2 * A)) << lora.bytes(MemoryKind::kWeights);
  EXPECT_TRUE(near(lora.bytes(MemoryKind::kMaster), 4 * A));
  EXPECT_TRUE(near(lora.bytes(MemoryKind::kGrads), 4 * A));
  EXPECT_TRUE(near(lora.bytes(MemoryKind::kOptimizer), 9 * A));
  EXPECT_FALSE(lora.has("weights.master"));
  EXPECT_TRUE(lora.has("lora.master") && lora.has("lora.u") && lora.has("lora.du"));
  EXPECT_EQ(lora.at("lora.u").bytes, size_t(8192) * 32 * 2);
  const size_t state_full = full.bytes(MemoryKind::kGrads) + full.bytes(MemoryKind::kOptimizer);
  const size_t state_lora = lora.bytes(MemoryKind::kGrads) + lora.bytes(MemoryKind::kOptimizer);
  EXPECT_LT(state_lora * 20, state_full);
  EXPECT_EQ(lora.bytes(MemoryKind::kLogits), full.bytes(MemoryKind::kLogits));
  // Under TP each rank holds its shards of the adapters (half of each split tensor).
  o.tp = 2;
  const opd::MemoryPlan tp2 = opd::plan_model_memory(c, o, {});
  EXPECT_LT(tp2.bytes(MemoryKind::kGrads), lora.bytes(MemoryKind::kGrads));
  EXPECT_GT(tp2.bytes(MemoryKind::kGrads) * 2, lora.bytes(MemoryKind::kGrads));  // the replicated halves stay
  o.lora.rank = 2048;
  EXPECT_THROW(opd::plan_model_memory(c, o, {}), opd::Error);
}

// The streamed LM head (docs/ARCHITECTURE.md §2): logits, their gradient and its bf16 copy for one
// block of rows, nothing of [batch x seq, V]; a teacher extending completions assembles no rows.
TEST(MemoryPlan, AStreamedHeadPlansOneBlockOfLogits) {
  const opd::ModelConfig c = qwen3_06b();
  const size_t V = 151936;
  MemoryPlanOptions o;
  o.train = true;
  o.batch = 8;
  o.seq = 1024;
  const opd::MemoryPlan whole = opd::plan_model_memory(c, o, {});
  EXPECT_EQ(whole.bytes(MemoryKind::kLogits), size_t(8192) * V * 10);  // 12.4 GB
  o.head_rows = 883;
  const opd::MemoryPlan streamed = opd::plan_model_memory(c, o, {});
  const auto near = [](size_t got, size_t want) { return got >= want && got < want + opd::MemoryPlan::kAlign; };
  EXPECT_TRUE(near(streamed.at("logits").bytes, 883 * V * 4));
  EXPECT_TRUE(near(streamed.at("dlogits").bytes, 883 * V * 4));
  EXPECT_TRUE(near(streamed.at("dlogits.bf16").bytes, 883 * V * 2));
  EXPECT_LT(streamed.bytes(MemoryKind::kLogits) * 9, whole.bytes(MemoryKind::kLogits));
  EXPECT_EQ(streamed.bytes(MemoryKind::kActivations), whole.bytes(MemoryKind::kActivations));
  o.head_rows = 100000;  // a block larger than the forward: the forward's rows
  EXPECT_EQ(opd::plan_model_memory(c, o, {}).bytes(MemoryKind::kLogits), whole.bytes(MemoryKind::kLogits));

  MemoryPlanOptions t;  // a shared-prefix teacher: extends by completions, its head streamed
  t.batch = 8;
  t.seq = 1024;
  t.kv_batch = 8;
  t.kv_capacity = 1024;
  t.extend = true;
  const opd::MemoryPlan assembled = opd::plan_model_memory(c, t, {});
  EXPECT_TRUE(assembled.has("scores.logits"));
  t.head_rows = 883;
  const opd::MemoryPlan teacher = opd::plan_model_memory(c, t, {});
  EXPECT_FALSE(teacher.has("scores.logits"));
  EXPECT_TRUE(near(teacher.at("dec.logits").bytes, 883 * V * 4));
  EXPECT_TRUE(near(teacher.at("logits").bytes, 883 * V * 4));
  EXPECT_TRUE(teacher.has("dec.last"));
  t.head_rows = -1;
  EXPECT_THROW(opd::plan_model_memory(c, t, {}), opd::Error);
}
