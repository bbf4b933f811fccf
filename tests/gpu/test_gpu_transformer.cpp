// The model on the GPU (the decoder's CUDA backend) against the CPU backend (the reference) on one
// random model with the GPU attention's head size: logits, every parameter's gradient, recompute
// giving the same gradients, KV-cache decode and extend (shared-prefix scoring), and a few
// distillation steps (full-vocabulary reverse KL against a teacher on the same
// GPU, AdamW with fp32 master weights) whose losses follow the CPU run's. The CPU model gets the
// weights rounded to bf16, so what differs is the GPU's bf16 activations alone.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model/transformer.h"

#ifdef OPD_WITH_CUDA
#include "gpu/device_buffer.h"
#include "gpu/gpu_model_util.h"
#include "kernels/cpu/logprobs.h"
#include "kernels/cpu/reverse_kl.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "model/backend_cuda.h"
#include "train/optimizer.h"

using namespace opd;
using namespace opd::testing;

namespace {

// A copy of `cpu` on the GPU, planned for `plan`.
std::unique_ptr<Transformer> on_gpu(const Transformer& cpu, const MemoryPlanOptions& plan) {
  auto g = std::make_unique<Transformer>(cpu);
  g->use_gpu(plan, "test");
  return g;
}

std::vector<float> device_grads(Transformer& g) { return to_host(g.training_memory().grads, g.params().size()); }

class GpuModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no usable CUDA device (no driver or no GPU)";
  }
};

TEST_F(GpuModel, LogitsAndGradientsFollowTheCpuModel) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied LM head" : "untied LM head");
    auto cpu = bf16_model(tied, 7);
    const int B = 3, T = 40, N = B * T, V = cpu->config().vocab;
    const std::vector<int> tokens = random_tokens(N, 11);
    auto gpu = on_gpu(*cpu, training_plan(B, T));
    const std::vector<float> logits = to_host(gpu->forward(tokens.data(), B, T), size_t(N) * V);
    const float* ref = cpu->forward(tokens.data(), B, T);
    EXPECT_LT(rel_l2(logits.data(), ref, logits.size()), 2e-2);

    // The same dL/dlogits into both; every tensor's gradient compared on its own.
    std::vector<float> dlogits(size_t(N) * V);
    for (size_t i = 0; i < dlogits.size(); ++i) dlogits[i] = float(std::sin(0.37 * double(i))) / N;
    cpu->zero_grad();
    cpu->backward(dlogits.data());
    opd::testing::DeviceBuffer<float> d(dlogits);
    gpu->forward(tokens.data(), B, T);
    gpu->backward(d.get());
    const std::vector<float> g = device_grads(*gpu);
    for (const ParamSpec& s : cpu->specs())
      EXPECT_LT(rel_l2(g.data() + s.offset, cpu->grads().data() + s.offset, s.size), 5e-2) << s.name;
  }
}

TEST_F(GpuModel, RecomputeGivesTheSameGradientsBitForBit) {
  auto cpu = bf16_model(false, 3);
  const int B = 2, T = 64, N = B * T, V = cpu->config().vocab;
  const std::vector<int> tokens = random_tokens(N, 5);
  std::vector<float> dlogits(size_t(N) * V);
  for (size_t i = 0; i < dlogits.size(); ++i) dlogits[i] = float(std::cos(0.11 * double(i))) / N;
  opd::testing::DeviceBuffer<float> d(dlogits);
  std::vector<float> grads[2];
  size_t activations[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    const MemoryPlanOptions plan = training_plan(B, T, recompute);
    auto gpu = on_gpu(*cpu, plan);
    gpu->forward(tokens.data(), B, T);
    gpu->backward(d.get());
    grads[recompute] = device_grads(*gpu);
    activations[recompute] =
        plan_model_memory(cpu->config(), plan, gpu_workspace(cpu->config(), plan)).bytes(MemoryKind::kActivations);
  }
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_LT(activations[1], activations[0]);
}

TEST_F(GpuModel, DecodeFollowsTheCpuCache) {
  auto cpu = bf16_model(false, 9);
  const int B = 4, P = 12, steps = 6, V = cpu->config().vocab;
  MemoryPlanOptions o;
  o.batch = B;
  o.seq = P;
  o.kv_batch = B;
  o.kv_capacity = P + steps;
  auto gpu = on_gpu(*cpu, o);
  KVCache cache, gpu_cache;
  cpu->reset_cache(cache, B, P + steps);
  gpu->reset_cache(gpu_cache, B, P + steps);
  const std::vector<int> prompt = random_tokens(size_t(B) * P, 21);
  const std::vector<float> first = to_host(gpu->prefill(gpu_cache, prompt.data(), B, P), size_t(B) * P * V);
  EXPECT_LT(rel_l2(first.data(), cpu->prefill(cache, prompt.data(), B, P), first.size()), 2e-2);
  for (int s = 0; s < steps; ++s) {
    const std::vector<int> next = random_tokens(B, 100 + s);
    std::vector<int> pos(B, P + s);
    const std::vector<float> got = to_host(gpu->decode(gpu_cache, next.data(), pos.data()), size_t(B) * V);
    EXPECT_LT(rel_l2(got.data(), cpu->decode(cache, next.data(), pos.data()), got.size()), 3e-2) << "step " << s;
  }
}

TEST_F(GpuModel, ExtendAfterAForkedPromptFollowsTheCpuCache) {
  // Shared-prefix scoring: one prompt prefilled once, forked to G sequences, each extended by its
  // own completion of E tokens at once.
  auto cpu = bf16_model(false, 13);
  const int G = 3, P = 10, E = 7, V = cpu->config().vocab;
  MemoryPlanOptions o;
  o.batch = G;
  o.seq = P + E;
  o.kv_batch = G;
  o.kv_capacity = P + E;
  o.extend = true;
  auto gpu = on_gpu(*cpu, o);
  const std::vector<int> prompt = random_tokens(P, 31), completions = random_tokens(size_t(G) * E, 32);
  const std::vector<int> start(G, P);
  KVCache cache, gpu_cache;
  cpu->reset_cache(cache, G, P + E);
  gpu->reset_cache(gpu_cache, G, P + E);
  const std::vector<float> first = to_host(gpu->prefill(gpu_cache, prompt.data(), 1, P), size_t(P) * V);
  EXPECT_LT(rel_l2(first.data(), cpu->prefill(cache, prompt.data(), 1, P), first.size()), 2e-2);
  cpu->fork_cache(cache, P);
  gpu->fork_cache(gpu_cache, P);
  const std::vector<float> got =
      to_host(gpu->extend(gpu_cache, completions.data(), E, start.data()), size_t(G) * E * V);
  EXPECT_LT(rel_l2(got.data(), cpu->extend(cache, completions.data(), E, start.data()), got.size()), 3e-2);
}

TEST_F(GpuModel, DistillationStepsFollowTheCpuLossCurve) {
  // Student and teacher on one GPU: the teacher forward-only, the student trained on the full
  // reverse KL of fixed sequences for a few AdamW steps, on both devices from the same weights.
  auto student = bf16_model(false, 1), teacher = bf16_model(false, 2);
  const int B = 4, T = 32, N = B * T, V = student->config().vocab, steps = 6;
  const std::vector<int> tokens = random_tokens(N, 42);
  OptimizerOptions oo;
  oo.lr = 3e-3;
  oo.grad_clip = 1.0;

  std::vector<float> cpu_loss, gpu_loss;
  {
    Transformer s = *student;
    AdamW opt(s, oo);
    std::vector<float> lt(size_t(N) * V), kl(N), scale(N, 1.0f / N);
    cpu::log_softmax_forward(lt.data(), teacher->forward(tokens.data(), B, T), N, V);
    for (int step = 1; step <= steps; ++step) {
      s.zero_grad();
      std::vector<float> dlogits(size_t(N) * V);
      cpu::reverse_kl_full(kl.data(), dlogits.data(), s.forward(tokens.data(), B, T), lt.data(), scale.data(), N, V);
      s.backward(dlogits.data());
      opt.step(step);
      double sum = 0;
      for (float k : kl) sum += k;
      cpu_loss.push_back(float(sum / N));
    }
  }
  {
    MemoryPlanOptions to;
    to.batch = B;
    to.seq = T;
    auto t = on_gpu(*teacher, to);
    auto s = on_gpu(*student, training_plan(B, T));
    AdamW opt(*s, oo);
    opd::testing::DeviceBuffer<float> lt{std::vector<float>(size_t(N) * V)}, kl{std::vector<float>(N)},
        scale{std::vector<float>(N, 1.0f / N)};
    const float* tl = t->forward(tokens.data(), B, T);
    CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(t->stream())));
    cuda::log_softmax_forward(lt.get(), tl, N, V);
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int step = 1; step <= steps; ++step) {
      s->zero_grad();
      float* logits = const_cast<float*>(s->forward(tokens.data(), B, T));
      CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s->stream())));
      cuda::reverse_kl_full(kl.get(), logits, logits, lt.get(), scale.get(), N, V);  // dlogits in place
      CUDA_CHECK(cudaDeviceSynchronize());
      s->backward(logits);
      opt.step(step);
      double sum = 0;
      for (float k : kl.host()) sum += k;
      gpu_loss.push_back(float(sum / N));
    }
    s->sync_to_host();
    EXPECT_NE(s->params(), student->params()) << "the GPU updates never reached the master weights";
  }
  for (int i = 0; i < steps; ++i) EXPECT_NEAR(gpu_loss[i], cpu_loss[i], 0.03 * cpu_loss[i] + 1e-3) << "step " << i + 1;
  EXPECT_LT(gpu_loss.back(), gpu_loss.front()) << "the GPU run did not learn";
}

TEST_F(GpuModel, ShapesTheKernelsCannotRunAreRefusedByName) {
  ModelConfig c = small_gpu_config(false);
  c.head_dim = 96;
  c.d_model = 128;
  Transformer m(c, numbered_tokenizer(256));
  try {
    m.use_gpu(training_plan(1, 8), "test");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim = 96"), std::string::npos) << e.what();
  }
  // 2^17 sequences of 128 tokens: hundreds of GiB of activations and logits.
  auto ok = bf16_model(false, 1);
  try {
    ok->use_gpu(training_plan(1 << 17, 128), "test");
    ADD_FAILURE() << "a plan beyond the device's memory was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lower with"), std::string::npos) << e.what();
  }
}

}  // namespace
#endif  // OPD_WITH_CUDA
