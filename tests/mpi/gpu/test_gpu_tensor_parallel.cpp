// The GPU model under tensor parallelism, two ranks: each puts its shards of the same model on its
// GPU and must follow the CPU model of the same shards (itself checked against the whole model in
// tests/mpi/test_tensor_parallel.cpp): logits (its vocabulary slab), every gradient after the
// partial-gradient sum, KV-cache decode, and one AdamW step (the gradient norm over the group).
// Runs wherever the ranks see a GPU, even one between them: the sums then go through host memory
// (parallel/device_group.h), with a GPU each over NCCL. Skips on one rank or without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gpu/gpu_model_util.h"
#include "model/transformer.h"
#include "parallel/mpi_communicator.h"
#include "train/optimizer.h"

namespace opd {
namespace {

using namespace testing;

int visible_gpus() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  return count;
}

class GpuTensorParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::world();
    if (world_->size() < 2) GTEST_SKIP() << "tensor parallelism needs 2 ranks (run under mpirun -n 2)";
    int64_t without = visible_gpus() > 0 ? 0 : 1;
    world_->all_reduce(&without, 1, ReduceOp::kSum);
    if (without > 0) GTEST_SKIP() << "needs a CUDA device visible to every rank (" << without << " see none)";
    CUDA_CHECK(cudaSetDevice(node_share().rank % visible_gpus()));
    tp_ = world_->split(world_->rank() < 2 ? 0 : -1, world_->rank(), "tp");
    if (!tp_) GTEST_SKIP() << "this rank sits out: TP groups of 2";
  }
  std::unique_ptr<MpiCommunicator> world_;
  std::unique_ptr<Communicator> tp_;
};

TEST_F(GpuTensorParallel, LogitsAndGradientsFollowTheCpuShards) {
  for (bool tied : {false, true}) {
    const bool recompute = tied;  // the second run also recomputes each layer in backward, sums included
    SCOPED_TRACE(tied ? "tied LM head, --recompute" : "untied LM head");
    auto cpu = bf16_model(tied, 7, tp_.get());
    Transformer gpu = *cpu;  // the same shards, to go on the GPU
    const int B = 3, T = 40, N = B * T, V = cpu->vocab_shard().size;
    gpu.use_gpu(training_plan(B, T, recompute), str("rank ", tp_->rank()));
    const std::vector<int> tokens = random_tokens(N, 11);
    const std::vector<float> logits = to_host(gpu.forward(tokens.data(), B, T), size_t(N) * V);
    const float* ref = cpu->forward(tokens.data(), B, T);
    EXPECT_LT(rel_l2(logits.data(), ref, logits.size()), 2e-2);

    // dL/dlogits a function of the global (row, id), so the ranks' slabs make one whole gradient.
    std::vector<float> dlogits(size_t(N) * V);
    for (int n = 0; n < N; ++n)
      for (int v = 0; v < V; ++v)
        dlogits[size_t(n) * V + v] =
            float(std::sin(0.37 * (double(n) * cpu->config().vocab + cpu->vocab_shard().begin + v))) / N;
    cpu->zero_grad();
    cpu->backward(dlogits.data());
    cpu->reduce_partial_grads();
    float* d = gpu.dlogits_buffer(dlogits.size());
    CUDA_CHECK(cudaMemcpy(d, dlogits.data(), dlogits.size() * sizeof(float), cudaMemcpyHostToDevice));
    gpu.zero_grad();
    gpu.backward(d);
    gpu.reduce_partial_grads();
    const std::vector<float> g = to_host(gpu.training_memory().grads, gpu.params().size());
    for (const ParamSpec& s : cpu->specs())
      EXPECT_LT(rel_l2(g.data() + s.offset, cpu->grads().data() + s.offset, s.size), 5e-2) << s.name;

    // One AdamW step: the norm spans the group (split tensors summed, replicated ones once).
    OptimizerOptions oo;
    oo.lr = 1e-3;
    AdamW cpu_opt(*cpu, oo), gpu_opt(gpu, oo);
    const double cpu_norm = cpu_opt.step(1), gpu_norm = gpu_opt.step(1);
    EXPECT_NEAR(gpu_norm, cpu_norm, 3e-2 * cpu_norm);
    gpu.sync_to_host();
    EXPECT_LT(rel_l2(gpu.params().data(), cpu->params().data(), gpu.params().size()), 1e-3);
  }
}

TEST_F(GpuTensorParallel, DecodeFollowsTheCpuCache) {
  auto cpu = bf16_model(false, 9, tp_.get());
  Transformer gpu = *cpu;
  // Prompts of different lengths, prefilled two at a time into a cache planned for more sequences
  // than this batch uses.
  const int B = 4, P = 12, steps = 6, V = cpu->vocab_shard().size;
  const std::vector<int> len = {12, 9, 11, 7};
  MemoryPlanOptions o;
  o.batch = 2;
  o.seq = P;
  o.kv_batch = B + 2;
  o.kv_capacity = P + steps;
  gpu.use_gpu(o, str("rank ", tp_->rank()));
  KVCache cpu_cache, gpu_cache;
  cpu->reset_cache(cpu_cache, B, P + steps);
  gpu.reset_cache(gpu_cache, B, P + steps);
  const std::vector<int> prompt = random_tokens(size_t(B) * P, 21);
  const std::vector<float> first = to_host(gpu.prefill_last(gpu_cache, prompt.data(), B, P, len.data()), size_t(B) * V);
  EXPECT_LT(rel_l2(first.data(), cpu->prefill_last(cpu_cache, prompt.data(), B, P, len.data()), first.size()), 2e-2);
  for (int s = 0; s < steps; ++s) {
    const std::vector<int> next = random_tokens(B, 100 + s);
    std::vector<int> pos(B);
    for (int b = 0; b < B; ++b) pos[b] = len[b] + s;
    const std::vector<float> got = to_host(gpu.decode(gpu_cache, next.data(), pos.data()), size_t(B) * V);
    EXPECT_LT(rel_l2(got.data(), cpu->decode(cpu_cache, next.data(), pos.data()), got.size()), 3e-2)
        << "step " << s;
  }
}

TEST_F(GpuTensorParallel, TheStartUpReportSaysHowActivationsAreSummed) {
  auto m = bf16_model(false, 1, tp_.get());
  m->use_gpu(training_plan(1, 8), "rank");
  const std::string report = m->gpu_memory_report("student:");
  const bool own_gpus = visible_gpus() >= 2;
  EXPECT_NE(report.find(own_gpus ? "over NCCL" : "share a GPU"), std::string::npos) << report;
}

}  // namespace
}  // namespace opd
