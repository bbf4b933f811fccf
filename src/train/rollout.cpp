#include "train/rollout.h"

#include <algorithm>

#include "core/error.h"
#include "tasks/arith.h"

namespace opd {

std::vector<int> encode_prompt(const Transformer& model, const std::string& prompt) {
  return model.tokenizer().encode(prompt, "prompt '" + prompt + "'");
}

std::string decode_completion(const Transformer& model, const std::vector<int>& tokens) {
  std::vector<int> t = tokens;
  if (!t.empty() && model.tokenizer().is_eos(t.back())) t.pop_back();
  return model.tokenizer().decode(t);
}

Rollout sample_rollouts(Transformer& model, const std::vector<Example>& prompts, int samples_per_prompt,
                        const GenerateOptions& options, int gen_batch) {
  OPD_REQUIRE(samples_per_prompt > 0 && gen_batch > 0, "rollout: samples_per_prompt and gen_batch must be positive");
  Rollout r;
  std::vector<std::vector<int>> encoded;
  for (const auto& e : prompts) encoded.push_back(encode_prompt(model, e.prompt));
  const int total = static_cast<int>(prompts.size()) * samples_per_prompt;
  for (int first = 0; first < total; first += gen_batch) {
    const int last = std::min(total, first + gen_batch);
    std::vector<std::vector<int>> batch;
    std::vector<uint32_t> ids;
    for (int i = first; i < last; ++i) {
      batch.push_back(encoded[i / samples_per_prompt]);
      ids.push_back(static_cast<uint32_t>(i));
    }
    auto gens = generate(model, batch, ids, options);
    for (int i = first; i < last; ++i) {
      Generation& g = gens[i - first];
      const int p = i / samples_per_prompt;
      Sequence s{encoded[p], std::move(g.tokens), p, g.eos};
      r.truncated += !s.eos;
      r.prompt_tokens += s.prompt.size();
      r.completion_tokens += s.completion.size();
      r.completions.push_back(decode_completion(model, s.completion));
      r.rewards.push_back(is_correct(r.completions.back(), prompts[p].answer) ? 1.0f : 0.0f);
      r.logp.push_back(std::move(g.logp));
      const double len = double(s.prompt.size() + s.completion.size());
      r.flops += model.forward_flops(len, len / 2);
      r.seqs.push_back(std::move(s));
    }
  }
  return r;
}

}  // namespace opd
