// The built-in task `arith`: arithmetic chains as text, answered with a worked chain of thought.
//   prompt      "37+85-19?"
//   completion  "37+85=122;122-19=103;=103"
// Skill "general" chains + and -, skill "domain" chains * (the second skill of experiment 2).
// Recoverable mistakes (experiment 1): with slip_rate > 0 a general chain may write a wrong digit
// in a number it computes, then the erase mark '*' and the number again from its start:
//   "37+85=13*122;122-19=103;=103"   ('*' erases the digits "13" written just before it)
// The wrong digit is returned as a span that carries no loss in SFT, so a model trained on such
// chains learns to erase and correct without learning to make the slip. The verifier applies
// erasures to the final answer, so "=13*103" answers 103.
// Problems are a pure function of (config, seed, index), so any slice of a data set can be
// regenerated alone and train/eval splits are disjoint ranges of indices.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tasks/dataset.h"

namespace opd {

struct ArithConfig {
  std::string skill = "general";  // "general" (+, -) or "domain" (*)
  int terms = 3;                  // operands per problem, 2..6
  int digits = 3;                 // most digits of a drawn operand, 1..5
  double slip_rate = 0;           // general only: chance that a computed number gets a slip, [0, 1)
};

struct ArithProblem {
  std::string prompt;      // expression then '?'
  std::string completion;  // steps "a op b=r;" then "=" answer
  std::string answer;      // the final integer in decimal
  std::vector<TextSpan> no_loss;  // the slips' wrong digits (byte offsets into completion)
};

// Throws opd::Error naming the field that is out of range.
void validate(const ArithConfig& config);

// The task's character vocabulary in id order: "<pad>", "<eos>", "0".."9", "+", "-", "*", "=", ";", "?".
std::vector<std::string> arith_vocabulary();

// Problem number `index` of the stream keyed by `seed`.
ArithProblem make_problem(const ArithConfig& config, uint64_t seed, uint64_t index);

// The erase mark of the general skill's recoverable chains; in the domain skill '*' multiplies.
inline constexpr char kEraseMark = '*';

// The answer after the last '=' of a completion (a trailing "<eos>" is tolerated), with erasures
// applied: each '*' erases the digits before it ("=13*103" answers 103). nullopt when there is no
// '=', when anything but digits and '*' follows it, or when no digit is left.
std::optional<std::string> extract_answer(const std::string& completion);

bool is_correct(const std::string& completion, const std::string& answer);

// Problem `index` with a slip injected for a recovery probe: the prompt is the problem followed by
// the start of its ground-truth chain up to and including one wrong digit in a computed result
// (a step's, not the final answer's; drawn like the data's slips), the completion the rest of the chain after "*" (what a model that
// recovers writes), the answer the problem's. Accuracy on such prompts is the recovery rate.
ArithProblem make_slip_probe(const ArithConfig& config, uint64_t seed, uint64_t index);

// What a general chain did with erase marks: over the numbers it computed (each "a+b=" or "a-b="
// result and the final "=" answer; a result's right value is a op b as written, the final answer's
// the last result as written), how many were erased, how many of those erasures erased digits that
// were right so far (spurious), how many numbers were first written wrong and how many of those
// ended right after an erasure (recovered). Text that is not such a chain counts nothing.
struct EraseStats {
  int64_t numbers = 0, erasures = 0, spurious = 0, first_wrong = 0, recovered = 0;
  EraseStats& operator+=(const EraseStats& o);
};
EraseStats erase_stats(const std::string& completion);

}  // namespace opd
