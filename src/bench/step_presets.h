// opd bench step --device cpu --student-preset ...: distillation steps at the real shapes of Qwen3
// (model/presets.h, random weights) on the CPU, through the trainer's own paths — rollout
// (model/generate.h), the teacher's scores (train/teacher.h) and the update (train/update.h), with
// the LM head streamed or not (--head-chunk) — so that the memory and time of a real vocabulary
// can be measured on a machine without a GPU. Prints each step's phase times, their mean after the
// first step, the logits the models hold at once and the peak resident memory.
#pragma once
#include <string>

namespace opd::bench {

struct PresetStepOptions {
  std::string student = "qwen3-0.6b", teacher = "qwen3-1.7b";
  int batch = 4, micro_batch = 4, prompt = 128, new_tokens = 64;  // sequences of prompt + new tokens
  int steps = 2;
  std::string kl = "full";
  int head_rows = -1;  // --head-chunk: kHeadRowsAuto, 0 (every row) or rows
};

int run_bench_step_presets(const PresetStepOptions& options);

}  // namespace opd::bench
