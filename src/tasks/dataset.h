// Prompt and SFT data sets as JSON Lines, shared by every task: {"prompt", "answer", "completion"}.
#pragma once
#include <string>
#include <vector>

namespace opd {

struct Example {
  std::string prompt;
  std::string answer;      // what the verifier compares against; empty for SFT-only data
  std::string completion;  // the target text for SFT; empty when only prompts are needed
  int source = 0;          // which prompt set it came from (distillation: which teacher scores it)
  std::string origin{};    // "path:line" of a loaded example, for messages; empty for generated ones
};

// Prompts with answers, for RL, distillation and evaluation: every line needs non-empty string
// fields "prompt" and "answer"; "completion" is optional. Errors name path:line.
std::vector<Example> load_prompts(const std::string& path);

// Supervised pairs: every line needs non-empty string fields "prompt" and "completion"; "answer"
// is optional. Errors name path:line.
std::vector<Example> load_sft(const std::string& path);

// One {"prompt", "answer", "completion"} object per example (empty fields written as "").
void write_examples(const std::string& path, const std::vector<Example>& examples);

}  // namespace opd
