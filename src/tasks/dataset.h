// Prompt and SFT data sets as JSON Lines, shared by every task: {"prompt", "answer", "completion"}.
#pragma once
#include <string>
#include <vector>

namespace opd {

// Bytes [begin, end) of a text.
struct TextSpan {
  int begin = 0, end = 0;
  bool operator==(const TextSpan& o) const { return begin == o.begin && end == o.end; }
};

struct Example {
  std::string prompt;
  std::string answer;      // what the verifier compares against; empty for SFT-only data
  std::string completion;  // the target text for SFT; empty when only prompts are needed
  int source = 0;          // which prompt set it came from (distillation: which teacher scores it)
  std::string origin{};    // "path:line" of a loaded example, for messages; empty for generated ones
  std::vector<TextSpan> no_loss{};  // spans of completion that SFT does not train on (sorted, disjoint)
};

// Prompts with answers, for RL, distillation and evaluation: every line needs non-empty string
// fields "prompt" and "answer"; "completion" is optional. Errors name path:line.
std::vector<Example> load_prompts(const std::string& path);

// Supervised pairs: every line needs non-empty string fields "prompt" and "completion"; "answer"
// is optional. Errors name path:line.
// Optional "no_loss": [[begin, end], ...] marks spans of the completion that carry no loss in SFT
// (e.g. a slip that a correction follows; like assistant-only loss in chat data): byte offsets
// into the completion's UTF-8 text, begin < end, in increasing order, not overlapping, not
// splitting a character. The completion is encoded span by span (so the marked tokens are
// exactly the span's), which for the character tokenizer is the same as encoding it whole.
std::vector<Example> load_sft(const std::string& path);

// Checks spans against a completion; the error says which span and why.
void validate_no_loss(const std::vector<TextSpan>& spans, const std::string& completion);

// One {"prompt", "answer", "completion"} object per example (empty fields written as ""), with
// "no_loss" where an example has spans.
void write_examples(const std::string& path, const std::vector<Example>& examples);

}  // namespace opd
