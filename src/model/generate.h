// Batched sampling with a KV cache: prompts of different lengths, EOS, max_new_tokens.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cpu/sample.h"
#include "model/transformer.h"

namespace opd {

struct GenerateOptions {
  int max_new_tokens = 64;
  cpu::SampleParams sampling;
};

struct Generation {
  std::vector<int> tokens;  // the completion, EOS included when one was drawn
  std::vector<float> logp;  // log-probability of each completion token under the model (temperature 1)
  bool eos = false;         // stopped at EOS; otherwise truncated at max_new_tokens or max_seq
};

// seq_ids[b] keys the random draws of prompt b (with the options' seed and step), so a sequence's
// completion does not depend on which other prompts share its batch.
std::vector<Generation> generate(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                 const std::vector<uint32_t>& seq_ids, const GenerateOptions& options);

}  // namespace opd
