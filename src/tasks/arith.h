// The built-in task `arith`: arithmetic chains as text, answered with a worked chain of thought.
//   prompt      "37+85-19?"
//   completion  "37+85=122;122-19=103;=103"
// Skill "general" chains + and -, skill "domain" chains * (the second skill of experiment 2).
// Problems are a pure function of (config, seed, index), so any slice of a data set can be
// regenerated alone and train/eval splits are disjoint ranges of indices.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace opd {

struct ArithConfig {
  std::string skill = "general";  // "general" (+, -) or "domain" (*)
  int terms = 3;                  // operands per problem, 2..6
  int digits = 3;                 // most digits of a drawn operand, 1..5
};

struct ArithProblem {
  std::string prompt;      // expression then '?'
  std::string completion;  // steps "a op b=r;" then "=" answer
  std::string answer;      // the final integer in decimal
};

// Throws opd::Error naming the field that is out of range.
void validate(const ArithConfig& config);

// The task's character vocabulary in id order: "<pad>", "<eos>", "0".."9", "+", "-", "*", "=", ";", "?".
std::vector<std::string> arith_vocabulary();

// Problem number `index` of the stream keyed by `seed`.
ArithProblem make_problem(const ArithConfig& config, uint64_t seed, uint64_t index);

// The digits after the last '=' of a completion (a trailing "<eos>" is tolerated); nullopt when
// there is no '=' or no digit follows it.
std::optional<std::string> extract_answer(const std::string& completion);

bool is_correct(const std::string& completion, const std::string& answer);

}  // namespace opd
