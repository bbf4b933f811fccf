#include "train/sft_data.h"

#include "core/error.h"

namespace opd {

std::vector<int> encode_completion(const Tokenizer& tok, const Example& e, std::vector<char>& no_loss) {
  const std::string where = (e.origin.empty() ? std::string() : e.origin + ": ") + "completion";
  no_loss.clear();
  if (e.no_loss.empty()) return tok.encode(e.completion, where);
  validate_no_loss(e.no_loss, e.completion);
  std::vector<int> ids;
  auto add = [&](int begin, int end, bool masked) {
    if (begin >= end) return;
    const std::vector<int> part = tok.encode(e.completion.substr(begin, end - begin), where);
    ids.insert(ids.end(), part.begin(), part.end());
    no_loss.insert(no_loss.end(), part.size(), masked ? 1 : 0);
  };
  int at = 0;
  for (const TextSpan& s : e.no_loss) {
    add(at, s.begin, false);
    add(s.begin, s.end, true);
    at = s.end;
  }
  add(at, static_cast<int>(e.completion.size()), false);
  return ids;
}

Sequence sft_sequence(const Tokenizer& tok, const Example& e, int group) {
  Sequence s;
  s.prompt = tok.encode(e.prompt, "prompt '" + e.prompt + "'");
  s.completion = encode_completion(tok, e, s.no_loss);
  s.group = group;
  s.eos = true;
  if (tok.eos_id() >= 0) {
    s.completion.push_back(tok.eos_id());
    if (!s.no_loss.empty()) s.no_loss.push_back(0);
  }
  return s;
}

}  // namespace opd
