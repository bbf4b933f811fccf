#include "tasks/arith.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"

namespace opd {

namespace {

constexpr int64_t kMaxNumber = 999999;  // no number of a problem has more than 6 digits
constexpr int64_t kNoCap = INT64_MAX;

// The Philox words of one problem: key = seed, counter = index, and the stream counts blocks of
// four words within the problem. The base keeps these streams apart from other users of a seed,
// and the skill keeps the two skills' problems independent under one seed.
class ProblemDraws {
 public:
  ProblemDraws(uint64_t seed, uint64_t index, int skill_id)
      : seed_(seed), index_(index), stream_(0x41520000u + (static_cast<uint32_t>(skill_id) << 12)) {}

  // Multiply-shift instead of rejection: the bias is below range / 2^32, far under any
  // statistic this task needs, and a problem then costs a fixed number of draws.
  int64_t uniform(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi - lo + 1);
    return lo + static_cast<int64_t>((static_cast<uint64_t>(next()) * range) >> 32);
  }

 private:
  uint32_t next() {
    if (used_ == 4) {
      words_ = philox_draw(seed_, stream_ + block_++, index_);
      used_ = 0;
    }
    return words_.v[used_++];
  }

  uint64_t seed_, index_;
  uint32_t stream_, block_ = 0;
  Philox4 words_{};
  int used_ = 4;
};

int64_t pow10(int d) {
  int64_t p = 1;
  while (d-- > 0) p *= 10;
  return p;
}

int num_digits(int64_t v) {
  int d = 1;
  while (v >= 10) v /= 10, ++d;
  return d;
}

// A positive operand: a uniform number of digits in 1..max_digits, then a uniform value with that
// many digits, both lowered as needed so the value stays <= cap (cap >= 1).
int64_t draw_operand(ProblemDraws& draws, int max_digits, int64_t cap) {
  const int d = static_cast<int>(draws.uniform(1, std::min(max_digits, num_digits(cap))));
  const int64_t lo = d == 1 ? 1 : pow10(d - 1);
  const int64_t hi = std::min(pow10(d) - 1, cap);
  return draws.uniform(lo, hi);
}

}  // namespace

void validate(const ArithConfig& config) {
  OPD_REQUIRE(config.skill == "general" || config.skill == "domain", "arith: skill must be \"general\" or \"domain\", got \"",
              config.skill, "\"");
  OPD_REQUIRE(config.terms >= 2 && config.terms <= 6, "arith: terms = ", config.terms, " is out of range [2, 6]");
  OPD_REQUIRE(config.digits >= 1 && config.digits <= 5, "arith: digits = ", config.digits, " is out of range [1, 5]");
}

std::vector<std::string> arith_vocabulary() {
  std::vector<std::string> vocab = {"<pad>", "<eos>"};
  for (char c = '0'; c <= '9'; ++c) vocab.emplace_back(1, c);
  for (const char* piece : {"+", "-", "*", "=", ";", "?"}) vocab.emplace_back(piece);
  return vocab;
}

ArithProblem make_problem(const ArithConfig& config, uint64_t seed, uint64_t index) {
  validate(config);
  const bool domain = config.skill == "domain";
  ProblemDraws draws(seed, index, domain ? 1 : 0);

  // Domain: the first operand leaves room to double at every later step, so a multiplier of at
  // least 2 always fits under kMaxNumber and no problem has to be thrown away.
  int64_t value = draw_operand(draws, config.digits, domain ? kMaxNumber >> (config.terms - 1) : kNoCap);
  std::string prompt = std::to_string(value), completion;
  for (int t = 1; t < config.terms; ++t) {
    char op;
    int64_t operand;
    if (domain) {
      op = '*';
      const int64_t room = kMaxNumber / (value << (config.terms - 1 - t));
      operand = draws.uniform(2, std::min<int64_t>(9, room));
    } else {
      op = draws.uniform(0, 1) ? '-' : '+';
      if (op == '-' && value == 0) op = '+';
      // A subtrahend never exceeds the running value: results stay non-negative.
      operand = draw_operand(draws, config.digits, op == '-' ? value : kNoCap);
    }
    const int64_t result = op == '+' ? value + operand : op == '-' ? value - operand : value * operand;
    prompt += op + std::to_string(operand);
    completion += std::to_string(value) + op + std::to_string(operand) + "=" + std::to_string(result) + ";";
    value = result;
  }
  const std::string answer = std::to_string(value);
  return {prompt + "?", completion + "=" + answer, answer};
}

std::optional<std::string> extract_answer(const std::string& completion) {
  // Strict on purpose: the final answer is "=<digits>" closing the completion (before <eos>).
  // A lenient reader would reward chains that stop early or trail junk, which RL then learns.
  const std::string text = completion.substr(0, completion.find("<eos>"));
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq + 1 == text.size()) return std::nullopt;
  for (size_t i = eq + 1; i < text.size(); ++i)
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
  return text.substr(eq + 1);
}

bool is_correct(const std::string& completion, const std::string& answer) {
  const auto got = extract_answer(completion);
  return got && *got == answer;
}

}  // namespace opd
