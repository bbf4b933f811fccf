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
// A part of a step: sequences [first_seq, last_seq) of these prompts (last_seq < 0: all), where
// the prompts are the step's prompts from index `prompt_base` on (a data-parallel shard): random
// draws and groups use the step-wide indices, so a shard samples what one process would.
Rollout sample_rollouts(Transformer& model, const std::vector<Example>& prompts, int samples_per_prompt,
                        const GenerateOptions& options, int gen_batch, int first_seq = 0, int last_seq = -1,
                        int prompt_base = 0);
// Appends `more` (a later part of the same step) to `into`.
void append_rollout(Rollout& into, Rollout&& more);

// Checks, before any work starts, that every prompt and completion is made of the model's
// tokens; the error names the example's file and line.
void check_vocabulary(const Transformer& model, const std::vector<Example>& examples);
// The longest sequence these examples make, in tokens: a prompt plus `new_tokens` sampled ones,
// or with `completions` the prompt, its completion and an EOS; at most the model's max_seq. What
// the GPU path plans its memory for.
int longest_sequence(const Tokenizer& tok, int max_seq, const std::vector<Example>& examples, int new_tokens,
                     bool completions);
// Examples too long for the model's context: a prompt that leaves no room for one sampled token
// in max_seq, or with `completions` (SFT on given completions) a prompt, completion and EOS longer
// than max_seq. Without `skip` the first is an error naming its file and line, ending with
// `hint` (e.g. the option that skips them); with `skip` they are removed, and the count returned.
int drop_long_examples(const Transformer& model, std::vector<Example>& examples, bool completions, bool skip,
                       const std::string& hint = "");
// Encodes a prompt with the model's tokenizer; the error names the prompt.
std::vector<int> encode_prompt(const Transformer& model, const std::string& prompt);
// The forward FLOPs a rollout counts for sampling one sequence (what Rollout::flops adds up).
double sampling_flops(const Transformer& model, const Sequence& s);
// Decodes a completion, leaving out a final EOS.
std::string decode_completion(const Transformer& model, const std::vector<int>& tokens);

}  // namespace opd
