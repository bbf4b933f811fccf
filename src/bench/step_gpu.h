// opd bench step --device cuda: a distillation step's phases on one GPU at Qwen3 shapes.
#pragma once
#include <string>

namespace opd::bench {

struct GpuStepOptions {
  std::string student = "qwen3-0.6b", teacher = "qwen3-1.7b";  // model/presets.h
  int batch = 64, micro_batch = 4, prompt = 1024, new_tokens = 1024;  // sequence 2k, as bench/torch_step.py
  int steps = 3, warmup = 1;
  bool recompute = false;
  double peak_tflops = 989;  // dense bf16 of an H100 / H200 SXM, the MFU's denominator
};

// Prints the phase table and one JSON line; errors without a GPU or in a build without CUDA.
int run_bench_step_gpu(const GpuStepOptions& options);

}  // namespace opd::bench
