#include "model/generate.h"

#include <algorithm>

#include "core/error.h"
#include "model/vocab_parallel.h"

namespace opd {

std::vector<Generation> generate(Transformer& model, const std::vector<std::vector<int>>& prompts,
                                 const std::vector<uint32_t>& seq_ids, const GenerateOptions& options) {
  const ModelConfig& cfg = model.config();
  const VocabShard& vs = model.vocab_shard();
  const int B = static_cast<int>(prompts.size());
  OPD_REQUIRE(B > 0, "generate: no prompts");
  OPD_REQUIRE(seq_ids.size() == prompts.size(), "generate: ", seq_ids.size(), " sequence ids for ", B, " prompts");
  OPD_REQUIRE(options.max_new_tokens > 0, "generate: max_new_tokens must be positive, got ", options.max_new_tokens);
  int longest = 0;
  for (int b = 0; b < B; ++b) {
    OPD_REQUIRE(!prompts[b].empty(), "generate: prompt ", b, " is empty");
    longest = std::max(longest, static_cast<int>(prompts[b].size()));
  }
  OPD_REQUIRE(longest < cfg.max_seq, "generate: a prompt of ", longest, " tokens leaves no room in max_seq = ",
              cfg.max_seq);
  const int capacity = std::min(cfg.max_seq, longest + options.max_new_tokens);

  // Right-padded prompts: causal attention keeps the padding invisible to the real tokens.
  const int pad = std::max(model.tokenizer().pad_id(), 0);
  std::vector<int> batch(size_t(B) * longest, pad), len(B);
  for (int b = 0; b < B; ++b) {
    len[b] = static_cast<int>(prompts[b].size());
    std::copy(prompts[b].begin(), prompts[b].end(), batch.begin() + size_t(b) * longest);
  }
  KVCache cache;
  model.reset_cache(cache, B, capacity);
  // Each step's logits rows [B, V], where the model keeps them (device memory on the GPU path).
  const float* logits = model.prefill_last(cache, batch.data(), B, longest, len.data());

  std::vector<Generation> out(B);
  std::vector<int> next(B), pos(B);
  std::vector<uint32_t> seq(seq_ids), sample_pos(B);
  std::vector<float> logp(B);
  std::vector<char> done(B, 0);
  const Tokenizer& tok = model.tokenizer();  // any of the model's EOS tokens ends a sequence
  for (int s = 0;; ++s) {
    for (int b = 0; b < B; ++b) sample_pos[b] = static_cast<uint32_t>(len[b] + s);
    vocab_parallel::sample(vs, next.data(), logits, seq.data(), sample_pos.data(), B, options.sampling);
    vocab_parallel::logprobs(vs, logp.data(), nullptr, nullptr, logits, next.data(), B);
    bool all_done = true;
    for (int b = 0; b < B; ++b) {
      if (done[b]) continue;
      out[b].tokens.push_back(next[b]);
      out[b].logp.push_back(logp[b]);
      if (tok.is_eos(next[b])) {
        out[b].eos = true;
        done[b] = 1;
      } else if (len[b] + s + 1 >= capacity || s + 1 >= options.max_new_tokens) {
        done[b] = 1;  // truncated
      }
      all_done = all_done && done[b];
    }
    if (all_done) break;
    // Finished sequences still step (their rows are ignored) so the batch keeps its shape.
    for (int b = 0; b < B; ++b) pos[b] = std::min(len[b] + s, capacity - 1);
    logits = model.decode(cache, next.data(), pos.data());
  }
  return out;
}

}  // namespace opd
