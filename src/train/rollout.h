// Rollout: the student samples completions for a step's prompts; the task's verifier scores them.
#pragma once
#include <string>
#include <vector>

#include "model/generate.h"
#include "tasks/dataset.h"
#include "train/batch.h"

namespace opd {

struct Rollout {
  std::vector<Sequence> seqs;             // samples_per_prompt per prompt, grouped by prompt
  std::vector<std::string> completions;   // decoded text, EOS left out
  std::vector<std::vector<float>> logp;   // per-token log-probs recorded while decoding
  std::vector<float> rewards;             // 1 when the verifier accepts the final answer
  int truncated = 0;                      // completions cut at max_new_tokens / max_seq
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double flops = 0;                       // forward FLOPs spent sampling
};

// Generates `gen_batch` sequences at a time. Sampling randomness is keyed by (seed, step,
// prompt index * samples_per_prompt + sample), so it does not depend on batching.
Rollout sample_rollouts(Transformer& model, const std::vector<Example>& prompts, int samples_per_prompt,
                        const GenerateOptions& options, int gen_batch);

// Checks, before any work starts, that every prompt and completion is made of the model's
// tokens; the error names the example's file and line.
void check_vocabulary(const Transformer& model, const std::vector<Example>& examples);
// Encodes a prompt with the model's tokenizer; the error names the prompt.
std::vector<int> encode_prompt(const Transformer& model, const std::string& prompt);
// Decodes a completion, leaving out a final EOS.
std::string decode_completion(const Transformer& model, const std::vector<int>& tokens);

}  // namespace opd
