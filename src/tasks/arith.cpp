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
  // The slips of a problem draw from their own stream, so its numbers are the same with and
  // without slips.
  static ProblemDraws slips(uint64_t seed, uint64_t index) {
    ProblemDraws d(seed, index, 0);
    d.stream_ = 0x534C0000u;
    return d;
  }

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

// A slip in number `r`: the position of its wrong digit and that digit. Half the slips are near
// misses (the digit +-1, as a dropped or doubled carry makes), half any other digit; a number of
// several digits never starts with 0.
struct Slip {
  size_t at;
  char digit;
};
Slip draw_slip(ProblemDraws& draws, const std::string& r) {
  const size_t at = static_cast<size_t>(draws.uniform(0, static_cast<int64_t>(r.size()) - 1));
  const int right = r[at] - '0';
  int wrong = draws.uniform(0, 1) ? (right + (draws.uniform(0, 1) ? 1 : 9)) % 10
                                  : (right + static_cast<int>(draws.uniform(1, 9))) % 10;
  if (at == 0 && r.size() > 1 && wrong == 0) wrong = right == 1 ? 2 : 1;
  return {at, static_cast<char>('0' + wrong)};
}

bool draw_chance(ProblemDraws& draws, double p) {
  return p > 0 && static_cast<double>(draws.uniform(0, (int64_t{1} << 30) - 1)) < p * double(int64_t{1} << 30);
}

// Appends computed number `r` to a completion, with probability slip_rate after a slip: the right
// digits before the slip, the wrong digit (a span without loss) and the erase mark.
void write_number(std::string& out, const std::string& r, double slip_rate, ProblemDraws& slips,
                  std::vector<TextSpan>& no_loss) {
  if (draw_chance(slips, slip_rate)) {
    const Slip s = draw_slip(slips, r);
    out += r.substr(0, s.at);
    no_loss.push_back({static_cast<int>(out.size()), static_cast<int>(out.size()) + 1});
    out += s.digit;
    out += kEraseMark;
  }
  out += r;
}

// The digits a number's text leaves once erasures are applied ("13*122" -> "122"); nullopt if it
// holds anything but digits and erase marks, or no digit is left.
std::optional<std::string> apply_erasures(const std::string& text) {
  std::string kept;
  for (char c : text) {
    if (c == kEraseMark) kept.clear();
    else if (c >= '0' && c <= '9') kept += c;
    else return std::nullopt;
  }
  if (kept.empty()) return std::nullopt;
  return kept;
}

}  // namespace

EraseStats& EraseStats::operator+=(const EraseStats& o) {
  numbers += o.numbers;
  erasures += o.erasures;
  spurious += o.spurious;
  first_wrong += o.first_wrong;
  recovered += o.recovered;
  return *this;
}

void validate(const ArithConfig& config) {
  OPD_REQUIRE(config.skill == "general" || config.skill == "domain", "arith: skill must be \"general\" or \"domain\", got \"",
              config.skill, "\"");
  OPD_REQUIRE(config.terms >= 2 && config.terms <= 6, "arith: terms = ", config.terms, " is out of range [2, 6]");
  OPD_REQUIRE(config.digits >= 1 && config.digits <= 5, "arith: digits = ", config.digits, " is out of range [1, 5]");
  OPD_REQUIRE(config.slip_rate >= 0 && config.slip_rate < 1, "arith: slip_rate = ", config.slip_rate,
              " is out of range [0, 1)");
  OPD_REQUIRE(config.slip_rate == 0 || config.skill == "general",
              "arith: slips need skill \"general\" (the erase mark '*' multiplies in skill \"domain\")");
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
  ProblemDraws slips = ProblemDraws::slips(seed, index);
  std::vector<TextSpan> no_loss;

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
    completion += std::to_string(value) + op + std::to_string(operand) + "=";
    write_number(completion, std::to_string(result), config.slip_rate, slips, no_loss);
    completion += ";";
    value = result;
  }
  const std::string answer = std::to_string(value);
  completion += "=";
  write_number(completion, answer, config.slip_rate, slips, no_loss);
  return {prompt + "?", completion, answer, no_loss};
}

ArithProblem make_slip_probe(const ArithConfig& config, uint64_t seed, uint64_t index) {
  ArithConfig clean = config;
  clean.slip_rate = 0;
  OPD_REQUIRE(config.skill == "general", "arith: slip probes need skill \"general\"");
  const ArithProblem p = make_problem(clean, seed, index);
  // The computed results: every run of digits right after an '=' but the final answer's (whose
  // '=' would be in the prompt, and the verifier reads the completion's last '=').
  std::vector<std::pair<size_t, size_t>> numbers;
  for (size_t i = 0; i + 1 < p.completion.size(); ++i)
    if (p.completion[i] == '=' && i != p.completion.rfind('=')) {
      size_t e = i + 1;
      while (e < p.completion.size() && p.completion[e] >= '0' && p.completion[e] <= '9') ++e;
      numbers.push_back({i + 1, e});
    }
  ProblemDraws draws = ProblemDraws::slips(seed, index);
  const auto [b, e] = numbers[static_cast<size_t>(draws.uniform(0, static_cast<int64_t>(numbers.size()) - 1))];
  const Slip s = draw_slip(draws, p.completion.substr(b, e - b));
  return {p.prompt + p.completion.substr(0, b + s.at) + s.digit, std::string(1, kEraseMark) + p.completion.substr(b),
          p.answer, {}};
}

std::optional<std::string> extract_answer(const std::string& completion) {
  // Strict on purpose: the final answer is "=<digits>" closing the completion (before <eos>).
  // A lenient reader would reward chains that stop early or trail junk, which RL then learns.
  const std::string text = completion.substr(0, completion.find("<eos>"));
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos) return std::nullopt;
  return apply_erasures(text.substr(eq + 1));
}

bool is_correct(const std::string& completion, const std::string& answer) {
  const auto got = extract_answer(completion);
  return got && *got == answer;
}

namespace {

// The value of "a+b" or "a-b" as written (erasures applied to a and b); nullopt otherwise.
std::optional<int64_t> step_value(const std::string& lhs) {
  const size_t op = lhs.find_first_of("+-", 1);
  if (op == std::string::npos) return std::nullopt;
  const auto a = apply_erasures(lhs.substr(0, op)), b = apply_erasures(lhs.substr(op + 1));
  if (!a || !b || a->size() > 12 || b->size() > 12) return std::nullopt;
  return lhs[op] == '+' ? std::stoll(*a) + std::stoll(*b) : std::stoll(*a) - std::stoll(*b);
}

// One computed number's text (after its '='), against its right value when known.
void count_number(const std::string& text, const std::optional<int64_t>& right, EraseStats& s) {
  std::vector<std::string> attempts(1);
  for (char c : text) {
    if (c == kEraseMark) attempts.emplace_back();
    else if (c >= '0' && c <= '9') attempts.back() += c;
    else return;  // not a number: nothing to count
  }
  ++s.numbers;
  s.erasures += static_cast<int64_t>(attempts.size()) - 1;
  if (!right) return;
  const std::string r = std::to_string(*right);
  for (size_t i = 0; i + 1 < attempts.size(); ++i) s.spurious += r.compare(0, attempts[i].size(), attempts[i]) == 0 &&
                                                                  attempts[i].size() <= r.size();
  const std::string& first = attempts.front();
  const bool first_wrong = attempts.size() == 1 ? first != r
                                                : !(first.size() <= r.size() && r.compare(0, first.size(), first) == 0);
  s.first_wrong += first_wrong;
  s.recovered += first_wrong && attempts.size() > 1 && attempts.back() == r;
}

}  // namespace

EraseStats erase_stats(const std::string& completion) {
  const std::string text = completion.substr(0, completion.find("<eos>"));
  EraseStats s;
  std::optional<int64_t> last_result;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find(';', start);
    if (end == std::string::npos) end = text.size();
    const std::string step = text.substr(start, end - start);
    start = end + 1;
    const size_t eq = step.find('=');
    if (eq == std::string::npos) continue;
    const std::string number = step.substr(eq + 1);
    if (eq == 0) {  // the final answer copies the last result
      count_number(number, last_result, s);
      continue;
    }
    count_number(number, step_value(step.substr(0, eq)), s);
    const auto written = apply_erasures(number);
    last_result = written && written->size() <= 12 ? std::optional<int64_t>(std::stoll(*written)) : std::nullopt;
  }
  return s;
}

}  // namespace opd
