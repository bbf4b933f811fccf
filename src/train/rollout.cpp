#include "train/rollout.h"

#include <algorithm>

#include "core/error.h"
#include "tasks/arith.h"

namespace opd {

void check_vocabulary(const Transformer& model, const std::vector<Example>& examples) {
  for (const Example& e : examples) {
    const std::string where = e.origin.empty() ? std::string() : e.origin + ": ";
    model.tokenizer().encode(e.prompt, where + "prompt '" + e.prompt + "'");
    model.tokenizer().encode(e.completion, where + "completion");
  }
}

int drop_long_examples(const Transformer& model, std::vector<Example>& examples, bool completions, bool skip,
                       const std::string& hint) {
  const Tokenizer& tok = model.tokenizer();
  const size_t max_seq = model.config().max_seq;
  std::vector<Example> kept;
  int dropped = 0;
  for (Example& e : examples) {
    const size_t prompt = tok.encode(e.prompt, "prompt").size();
    const size_t tail = completions ? tok.encode(e.completion, "completion").size() + (tok.eos_id() >= 0) : 1;
    if (prompt + tail <= max_seq) {
      kept.push_back(std::move(e));
      continue;
    }
    const std::string where = e.origin.empty() ? std::string("an example") : e.origin;
    OPD_REQUIRE(skip, where, ": ",
                completions ? str("the prompt (", prompt, " tokens) and its completion (", tail, " with EOS) make ",
                                  prompt + tail, " tokens, more than the model's max_seq = ", max_seq)
                            : str("the prompt has ", prompt, " tokens; the model's max_seq = ", max_seq,
                                  " leaves no room for a sampled token after it"),
                hint);
    ++dropped;
  }
  examples = std::move(kept);
  return dropped;
}

std::vector<int> encode_prompt(const Transformer& model, const std::string& prompt) {
  return model.tokenizer().encode(prompt, "prompt '" + prompt + "'");
}

int longest_sequence(const Tokenizer& tok, int max_seq, const std::vector<Example>& examples, int new_tokens,
                     bool completions) {
  size_t longest = 0;
  for (const Example& e : examples) {
    const size_t tail = completions ? tok.encode(e.completion, "completion").size() + 1 : size_t(new_tokens);
    longest = std::max(longest, tok.encode(e.prompt, "prompt '" + e.prompt + "'").size() + tail);
  }
  return static_cast<int>(std::min<size_t>(longest, max_seq));
}

double sampling_flops(const Transformer& model, const Sequence& s) {
  const double len = double(s.prompt.size() + s.completion.size());
  return model.forward_flops(len, len / 2);
}

std::string decode_completion(const Transformer& model, const std::vector<int>& tokens) {
  std::vector<int> t = tokens;
  if (!t.empty() && model.tokenizer().is_eos(t.back())) t.pop_back();
  return model.tokenizer().decode(t);
}

Rollout sample_rollouts(Transformer& model, const std::vector<Example>& prompts, int samples_per_prompt,
                        const GenerateOptions& options, int gen_batch, int first_seq, int last_seq,
                        int prompt_base) {
  OPD_REQUIRE(samples_per_prompt > 0 && gen_batch > 0, "rollout: samples_per_prompt and gen_batch must be positive");
  Rollout r;
  std::vector<std::vector<int>> encoded;
  for (const auto& e : prompts) encoded.push_back(encode_prompt(model, e.prompt));
  const int total = last_seq < 0 ? static_cast<int>(prompts.size()) * samples_per_prompt : last_seq;
  OPD_REQUIRE(first_seq >= 0 && first_seq <= total && total <= static_cast<int>(prompts.size()) * samples_per_prompt,
              "rollout: sequences [", first_seq, ", ", total, ") are outside the ", prompts.size(), " x ",
              samples_per_prompt, " of the prompts");
  const int id_base = prompt_base * samples_per_prompt;
  for (int first = first_seq; first < total; first += gen_batch) {
    const int last = std::min(total, first + gen_batch);
    std::vector<std::vector<int>> batch;
    std::vector<uint32_t> ids;
    for (int i = first; i < last; ++i) {
      batch.push_back(encoded[i / samples_per_prompt]);
      ids.push_back(static_cast<uint32_t>(id_base + i));
    }
    auto gens = generate(model, batch, ids, options);
    for (int i = first; i < last; ++i) {
      Generation& g = gens[i - first];
      const int p = i / samples_per_prompt;
      Sequence s{encoded[p], std::move(g.tokens), prompt_base + p, g.eos};
      r.truncated += !s.eos;
      r.prompt_tokens += s.prompt.size();
      r.completion_tokens += s.completion.size();
      r.completions.push_back(decode_completion(model, s.completion));
      r.rewards.push_back(is_correct(r.completions.back(), prompts[p].answer) ? 1.0f : 0.0f);
      r.logp.push_back(std::move(g.logp));
      r.flops += sampling_flops(model, s);
      r.seqs.push_back(std::move(s));
    }
  }
  return r;
}

}  // namespace opd

namespace opd {

void append_rollout(Rollout& into, Rollout&& more) {
  for (auto& s : more.seqs) into.seqs.push_back(std::move(s));
  for (auto& c : more.completions) into.completions.push_back(std::move(c));
  for (auto& l : more.logp) into.logp.push_back(std::move(l));
  into.rewards.insert(into.rewards.end(), more.rewards.begin(), more.rewards.end());
  into.truncated += more.truncated;
  into.prompt_tokens += more.prompt_tokens;
  into.completion_tokens += more.completion_tokens;
  into.flops += more.flops;
}

}  // namespace opd
