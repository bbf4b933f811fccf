// Sequences (prompt + completion) laid out for one forward pass: right-padded token ids and, per
// row, the token that row predicts where it is trained on.
#pragma once
#include <cstdint>
#include <vector>

namespace opd {

struct Sequence {
  std::vector<int> prompt;
  std::vector<int> completion;  // EOS included when one was drawn
  int group = 0;                // prompt index within the step: samples of one prompt share it
  bool eos = false;             // false: the completion was truncated
  std::vector<char> no_loss{};  // per completion token, 1: not trained on (SFT loss mask); empty: all trained
};

// Completion tokens a sequence is trained on (those without no_loss).
int trained_completion_tokens(const Sequence& s);

struct SequenceBatch {
  int B = 0, T = 0;
  std::vector<int> tokens;   // [B*T], right-padded
  std::vector<int> targets;  // [B*T]: row (b, t) predicts targets[b*T + t]; -1 where not trained
  int trained_rows = 0;      // rows with a target
  std::vector<int> lengths;  // [B] real tokens of each row (prompt + completion)
};

// all_tokens=false: targets on completion tokens only (prompt tokens get no gradient);
// all_tokens=true: every next token (pretraining on plain text). Either way a completion token
// marked no_loss is not a target.
SequenceBatch make_batch(const std::vector<Sequence>& seqs, int pad_id, bool all_tokens = false);

}  // namespace opd
