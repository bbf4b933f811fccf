// opd bench step --device cuda: one distillation step on one GPU, phase by phase, on Qwen3-shaped
// student and teacher with random weights: the student samples (prefill + decode with a KV cache,
// sampling on the GPU), the teacher scores every position (forward + log-softmax rows), and the
// student is updated on the full reverse KL (forward, fused KL and logit gradient, backward,
// AdamW on fp32 master weights). Each phase is timed between stream synchronisations and read
// against ceilings measured in the same run: the update's FLOPs against the bf16 GEMM rate (and a
// nominal peak, for MFU), decode's bytes against the device-to-device copy rate.
#include "bench/step_gpu.h"

#include "core/error.h"

#ifdef OPD_WITH_CUDA
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "bench/cuda_ceilings.h"
#include "core/error.h"
#include "core/jsonl.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/logprobs.cuh"
#include "kernels/cuda/reverse_kl.cuh"
#include "kernels/cuda/sample.cuh"
#include "model/transformer.h"
#include "model/memory_plan.h"
#include "model/presets.h"
#include "train/optimizer.h"
#endif

namespace opd::bench {

#ifdef OPD_WITH_CUDA
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A random model of the preset's shape, on the GPU (its host copy stays for checkpoints).
std::unique_ptr<Transformer> random_gpu_model(const ModelConfig& cfg, uint64_t seed, const MemoryPlanOptions& plan,
                                              const std::string& who) {
  std::vector<std::string> pieces;
  pieces.reserve(cfg.vocab);
  for (int i = 0; i < cfg.vocab; ++i) pieces.push_back("<" + std::to_string(i) + ">");
  // No EOS: every sequence samples the full --new-tokens, so each step does the same work.
  auto model = std::make_unique<Transformer>(cfg, std::make_shared<CharTokenizer>(pieces, -1, -1));
  const auto t = Clock::now();
  std::cerr << "[bench step] " << who << ": " << cfg.num_parameters() / 1e9 << "B parameters, random init on the host"
            << std::flush;
  model->init_random(seed);
  std::cerr << " (" << since(t) << " s), uploading\n";
  model->use_gpu(plan, who);
  std::cerr << model->gpu_memory_report("[bench step] " + who + " device memory:");
  return model;
}

struct PhaseTimes {
  double rollout = 0, decode = 0, score = 0, update = 0;
};

}  // namespace

int run_bench_step_gpu(const GpuStepOptions& o) {
  OPD_REQUIRE(cuda::device_available(), "opd bench step --device cuda: no usable CUDA device (no driver or no GPU)");
  OPD_REQUIRE(o.batch >= 1 && o.prompt >= 1 && o.new_tokens >= 1, "opd bench step: --batch, --prompt and "
              "--new-tokens must be at least 1");
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  OpContext ctx;
  ctx.repeats = 5;
  CudaTimer timer;
  setup_cuda(ctx, timer);
  std::printf("gpu: %s; ceilings measured now: bf16 GEMM %.1f TFLOP/s, copy %.0f GB/s (read + write)\n", prop.name,
              ctx.gemm_tflops, ctx.copy_gbps);

  const int B = o.batch, MB = o.micro_batch, P = o.prompt, G = o.new_tokens, T = P + G;
  OPD_REQUIRE(MB >= 1 && B % MB == 0, "opd bench step: --batch ", B, " is not a multiple of --micro-batch ", MB);
  const ModelConfig sc = qwen3_preset(o.student, T, "--student-preset");
  const ModelConfig tc = qwen3_preset(o.teacher, T, "--teacher-preset");
  const int V = sc.vocab, NM = MB * T;
  OPD_REQUIRE(tc.vocab == V, "bench step: student and teacher vocabularies differ");
  // The rollout holds all B sequences' KV cache; forwards and backwards run a micro-batch at a time.
  MemoryPlanOptions splan;
  splan.train = true;
  splan.recompute = o.recompute;
  splan.batch = MB;
  splan.seq = T;
  splan.kv_batch = B;
  splan.kv_capacity = T;
  MemoryPlanOptions tplan;
  tplan.batch = MB;
  tplan.seq = T;
  auto teacher = random_gpu_model(tc, 2, tplan, "teacher " + o.teacher);
  auto student = random_gpu_model(sc, 1, splan, "student " + o.student);
  OptimizerOptions oo;
  oo.lr = 1e-5;
  AdamW opt(*student, oo);

  // Bench-owned device buffers: sampled ids and their random keys, per-row KL and loss weights.
  int* sampled = nullptr;
  uint32_t *seq_ids = nullptr, *positions = nullptr;
  float *kl = nullptr, *scale = nullptr;
  CUDA_CHECK(cudaMalloc(&sampled, sizeof(int) * B));
  CUDA_CHECK(cudaMalloc(&seq_ids, sizeof(uint32_t) * B));
  CUDA_CHECK(cudaMalloc(&positions, sizeof(uint32_t) * B));
  CUDA_CHECK(cudaMalloc(&kl, sizeof(float) * NM));
  CUDA_CHECK(cudaMalloc(&scale, sizeof(float) * NM));
  std::vector<uint32_t> ids(B);
  for (int b = 0; b < B; ++b) ids[b] = b;
  CUDA_CHECK(cudaMemcpy(seq_ids, ids.data(), sizeof(uint32_t) * B, cudaMemcpyHostToDevice));
  // Row t of a sequence predicts token t + 1: the completion's G tokens are rows P-1 .. T-2,
  // weighted to a mean over the step's completion tokens.
  std::vector<float> w(NM, 0.0f);
  for (int b = 0; b < MB; ++b)
    for (int t = P - 1; t < T - 1; ++t) w[size_t(b) * T + t] = 1.0f / (float(B) * G);
  CUDA_CHECK(cudaMemcpy(scale, w.data(), sizeof(float) * NM, cudaMemcpyHostToDevice));

  std::vector<int> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 2654435761u) % V);
  cpu::SampleParams sp;
  sp.temperature = 1.0f;
  sp.seed = 7;
  const auto ss = static_cast<cudaStream_t>(student->stream()), ts = static_cast<cudaStream_t>(teacher->stream());
  KVCache cache;
  student->reset_cache(cache, B, T);

  std::vector<PhaseTimes> times;
  for (int step = 1; step <= o.warmup + o.steps; ++step) {
    PhaseTimes pt;
    sp.step = step;
    // Rollout: prefill the prompts a micro-batch at a time, then one token per sequence per decode step.
    auto t0 = Clock::now();
    std::vector<int> prompts(size_t(MB) * P), next(B), pos(B);
    std::vector<uint32_t> hp(B, uint32_t(P));
    CUDA_CHECK(cudaMemcpyAsync(positions, hp.data(), sizeof(uint32_t) * B, cudaMemcpyHostToDevice, ss));
    for (int b0 = 0; b0 < B; b0 += MB) {
      for (int b = 0; b < MB; ++b)
        std::copy_n(tokens.begin() + size_t(b0 + b) * T, P, prompts.begin() + size_t(b) * P);
      const float* pl = student->prefill(cache, prompts.data(), MB, P, b0);
      for (int b = 0; b < MB; ++b)
        cuda::sample_tokens(sampled + b0 + b, pl + (size_t(b) * P + P - 1) * V, seq_ids + b0 + b,
                            positions + b0 + b, 1, V, sp, ss);
    }
    CUDA_CHECK(cudaMemcpyAsync(next.data(), sampled, sizeof(int) * B, cudaMemcpyDeviceToHost, ss));
    CUDA_CHECK(cudaStreamSynchronize(ss));
    const auto t_dec = Clock::now();
    for (int g = 0; g < G; ++g) {
      for (int b = 0; b < B; ++b) tokens[size_t(b) * T + P + g] = next[b];
      if (g + 1 == G) break;
      for (int b = 0; b < B; ++b) pos[b] = P + g, hp[b] = uint32_t(P + g + 1);
      const float* dl = student->decode(cache, next.data(), pos.data());
      CUDA_CHECK(cudaMemcpyAsync(positions, hp.data(), sizeof(uint32_t) * B, cudaMemcpyHostToDevice, ss));
      cuda::sample_tokens(sampled, dl, seq_ids, positions, B, V, sp, ss);
      CUDA_CHECK(cudaMemcpyAsync(next.data(), sampled, sizeof(int) * B, cudaMemcpyDeviceToHost, ss));
      CUDA_CHECK(cudaStreamSynchronize(ss));
    }
    pt.decode = since(t_dec);
    pt.rollout = since(t0);
    // Per micro-batch: the teacher's log-softmax rows (scoring), then the student's full reverse KL,
    // its logit gradient in place and backward (update); one AdamW step at the end.
    student->zero_grad();
    for (int b0 = 0; b0 < B; b0 += MB) {
      const int* mb_tokens = tokens.data() + size_t(b0) * T;
      t0 = Clock::now();
      // The bench owns both models: their logits buffers are rewritten in place (log-softmax rows,
      // then the logit gradient), as the fused losses do.
      float* teacher_rows = const_cast<float*>(teacher->forward(mb_tokens, MB, T));
      cuda::log_softmax_forward(teacher_rows, teacher_rows, NM, V, ts);
      CUDA_CHECK(cudaStreamSynchronize(ts));
      pt.score += since(t0);
      t0 = Clock::now();
      float* logits = const_cast<float*>(student->forward(mb_tokens, MB, T));
      cuda::reverse_kl_full(kl, logits, logits, static_cast<const float*>(teacher_rows), scale, NM, V, ss);
      student->backward(logits);
      CUDA_CHECK(cudaStreamSynchronize(ss));
      pt.update += since(t0);
    }
    t0 = Clock::now();
    opt.step(step);
    CUDA_CHECK(cudaStreamSynchronize(ss));
    pt.update += since(t0);
    if (step > o.warmup) times.push_back(pt);
    std::fprintf(stderr, "[bench step] step %d%s: rollout %.3f s, score %.3f s, update %.3f s\n", step,
                 step <= o.warmup ? " (warm-up)" : "", pt.rollout, pt.score, pt.update);
  }
  PhaseTimes m;
  for (const PhaseTimes& p : times) {
    m.rollout += p.rollout / times.size();
    m.decode += p.decode / times.size();
    m.score += p.score / times.size();
    m.update += p.update / times.size();
  }

  // FLOPs as Transformer::forward_flops counts them (matmuls and causal attention; 3x for training).
  const auto flops = [&](const ModelConfig& c, double n, double ctx_len) {
    const double C = c.d_model, F = c.ffn_dim, QD = c.q_dim(), KD = c.kv_dim();
    const double mm = c.n_layers * (C * QD + 2 * C * KD + QD * C + 3 * C * F) + double(c.vocab) * C;
    return n * (2 * mm + 4.0 * c.n_layers * ctx_len * QD);
  };
  const double N = double(B) * T;
  const double update_flops = 3 * flops(sc, N, (T + 1) / 2.0), score_flops = flops(tc, N, (T + 1) / 2.0);
  // Decode reads every bf16 weight and the KV cache written so far, once per step.
  double decode_bytes = 0;
  for (int g = 1; g < G; ++g)
    decode_bytes += 2.0 * sc.num_parameters() + 2.0 * sc.n_layers * B * double(P + g) * sc.kv_dim() * 2;
  const double decode_gbps = decode_bytes / m.decode / 1e9;
  const double update_tflops = update_flops / m.update / 1e12, score_tflops = score_flops / m.score / 1e12;
  std::printf("bench step --device cuda: student %s, teacher %s, batch %d x (prompt %d + new %d) = %.0f tokens in "
              "micro-batches of %d, --recompute %s, --kl full, mean of %zu steps after %d warm-up\n",
              o.student.c_str(), o.teacher.c_str(), B, P, G, N, MB, o.recompute ? "on" : "off", times.size(), o.warmup);
  std::printf("%-8s %9s %12s %10s  %s\n", "phase", "seconds", "tokens/s", "TFLOP/s", "against");
  std::printf("%-8s %9.3f %12.0f %10s  decode %.0f GB/s = %.0f%% of the copy rate (%d steps of %d sequences)\n",
              "rollout", m.rollout, B * G / m.rollout, "-", decode_gbps, 100 * decode_gbps / ctx.copy_gbps, G - 1, B);
  std::printf("%-8s %9.3f %12.0f %10.1f  %.0f%% of the GEMM rate\n", "score", m.score, N / m.score, score_tflops,
              100 * score_tflops / ctx.gemm_tflops);
  std::printf("%-8s %9.3f %12.0f %10.1f  MFU %.1f%% of %.0f TFLOP/s (nominal), %.0f%% of the GEMM rate\n", "update",
              m.update, N / m.update, update_tflops, 100 * update_tflops / o.peak_tflops, o.peak_tflops,
              100 * update_tflops / ctx.gemm_tflops);
  json j = {{"bench", "step"},          {"impl", "opd"},
            {"device", prop.name},      {"student", o.student},
            {"teacher", o.teacher},     {"batch", B},
            {"micro_batch", MB},        {"prompt", P},              {"new_tokens", G},
            {"recompute", o.recompute}, {"rollout_s", m.rollout},
            {"decode_s", m.decode},     {"score_s", m.score},
            {"update_s", m.update},     {"rollout_tokens_per_s", B * G / m.rollout},
            {"score_tokens_per_s", N / m.score}, {"update_tokens_per_s", N / m.update},
            {"update_mfu", update_tflops / o.peak_tflops}, {"decode_gbps", decode_gbps},
            {"gemm_tflops", ctx.gemm_tflops}, {"copy_gbps", ctx.copy_gbps}};
  std::printf("%s\n", j.dump().c_str());
  for (void* p : {static_cast<void*>(sampled), static_cast<void*>(seq_ids), static_cast<void*>(positions),
                  static_cast<void*>(kl), static_cast<void*>(scale)})
    CUDA_CHECK(cudaFree(p));
  return 0;
}
#else
int run_bench_step_gpu(const GpuStepOptions&) {
  throw Error("opd bench step --device cuda: this opd was built without CUDA (configure with -DOPD_CUDA=ON)");
}
#endif

}  // namespace opd::bench
