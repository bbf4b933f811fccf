// The arith generator against an independent reading of its own text, and the verifier.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "tasks/arith.h"

namespace {

using opd::ArithConfig;
using opd::ArithProblem;

struct Parsed {
  std::vector<int64_t> operands;
  std::vector<char> ops;
};

// Splits "37+85-19?" into numbers and operators (the test's own parser, not the generator's).
Parsed parse_prompt(const std::string& prompt) {
  Parsed p;
  std::string number;
  for (char c : prompt) {
    if (c >= '0' && c <= '9') {
      number += c;
    } else {
      p.operands.push_back(std::stoll(number));
      number.clear();
      if (c != '?') p.ops.push_back(c);
    }
  }
  return p;
}

ArithConfig config(const std::string& skill, int terms, int digits) {
  ArithConfig c;
  c.skill = skill;
  c.terms = terms;
  c.digits = digits;
  return c;
}

// The shape of a config's prompts and completions.
struct Shape {
  std::regex prompt, completion;
  explicit Shape(const ArithConfig& cfg) {
    const std::string op = cfg.skill == "general" ? "[+-]" : "[*]", repeat = "{" + std::to_string(cfg.terms - 1) + "}";
    const std::string num = "(0|[1-9][0-9]*)", pos = "[1-9][0-9]*";
    prompt = std::regex(pos + "(" + op + pos + ")" + repeat + "\\?");
    completion = std::regex("(" + num + op + pos + "=" + num + ";)" + repeat + "=" + num);
  }
};

// Checks one problem's text: shape, every step recomputed, and the answer.
void check_problem(const ArithConfig& cfg, const Shape& shape, const ArithProblem& p) {
  SCOPED_TRACE(p.prompt + " -> " + p.completion);
  ASSERT_TRUE(std::regex_match(p.prompt, shape.prompt));
  ASSERT_TRUE(std::regex_match(p.completion, shape.completion));

  const Parsed q = parse_prompt(p.prompt);
  ASSERT_EQ(static_cast<int>(q.operands.size()), cfg.terms);
  int64_t value = q.operands[0];
  std::string expect;
  for (size_t i = 0; i < q.ops.size(); ++i) {
    const int64_t b = q.operands[i + 1];
    const int64_t r = q.ops[i] == '+' ? value + b : q.ops[i] == '-' ? value - b : value * b;
    EXPECT_GE(r, 0);
    EXPECT_LE(r, 999999);
    if (cfg.skill == "domain") {
      EXPECT_GE(b, 2);
      EXPECT_LE(b, 9);
    } else {
      EXPECT_LE(std::to_string(b).size(), static_cast<size_t>(cfg.digits));
    }
    expect += std::to_string(value) + q.ops[i] + std::to_string(b) + "=" + std::to_string(r) + ";";
    value = r;
  }
  EXPECT_LE(std::to_string(q.operands[0]).size(), static_cast<size_t>(cfg.digits));
  EXPECT_EQ(p.completion, expect + "=" + std::to_string(value));
  EXPECT_EQ(p.answer, std::to_string(value));
  EXPECT_TRUE(opd::is_correct(p.completion, p.answer));
}

TEST(Arith, Vocabulary) {
  const std::vector<std::string> v = opd::arith_vocabulary();
  ASSERT_EQ(v.size(), 18u);
  EXPECT_EQ(v[0], "<pad>");
  EXPECT_EQ(v[1], "<eos>");
  EXPECT_EQ(v[2], "0");
  EXPECT_EQ(v[11], "9");
  EXPECT_EQ(v[12], "+");
  EXPECT_EQ(v[17], "?");
}

TEST(Arith, ExamplesFromTheFormat) {
  // The format by hand, so a change to it shows up here and not only as a self-consistent regex.
  const ArithProblem p = opd::make_problem(config("general", 2, 2), 3, 0);
  const Parsed q = parse_prompt(p.prompt);
  EXPECT_EQ(p.completion, std::to_string(q.operands[0]) + q.ops[0] + std::to_string(q.operands[1]) + "=" + p.answer +
                              ";=" + p.answer);
}

TEST(Arith, FormatAndAnswersAcrossConfigs) {
  const std::set<char> alphabet = {'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '-', '*', '=', ';', '?'};
  for (const std::string skill : {"general", "domain"})
    for (int terms : {2, 3, 6})
      for (int digits : {1, 3, 5}) {
        const ArithConfig cfg = config(skill, terms, digits);
        const Shape shape(cfg);
        for (uint64_t i = 0; i < 150; ++i) {
          const ArithProblem p = opd::make_problem(cfg, 11, i);
          for (char c : p.prompt + p.completion) ASSERT_TRUE(alphabet.count(c)) << "character '" << c << "'";
          check_problem(cfg, shape, p);
          if (HasFatalFailure()) return;
        }
      }
}

TEST(Arith, DeterministicAndIndependentOfOtherIndices) {
  const ArithConfig cfg;
  std::vector<ArithProblem> forward;
  for (uint64_t i = 0; i < 50; ++i) forward.push_back(opd::make_problem(cfg, 7, i));
  std::set<std::string> distinct;
  for (int i = 49; i >= 0; --i) {
    const ArithProblem again = opd::make_problem(cfg, 7, i);
    EXPECT_EQ(again.prompt, forward[i].prompt);
    EXPECT_EQ(again.completion, forward[i].completion);
    EXPECT_EQ(again.answer, forward[i].answer);
    distinct.insert(again.prompt);
  }
  EXPECT_GE(distinct.size(), 48u);
  // Another seed gives another stream.
  int same = 0;
  for (uint64_t i = 0; i < 50; ++i) same += opd::make_problem(cfg, 8, i).prompt == forward[i].prompt;
  EXPECT_LE(same, 2);
  // Far indices (above 32 bits) work and differ from their low halves.
  EXPECT_NE(opd::make_problem(cfg, 7, (uint64_t{1} << 32) + 5).prompt, forward[5].prompt);
}

TEST(Arith, OperandDigitCountsAreUniform) {
  const ArithConfig cfg = config("general", 2, 3);
  int count[4] = {0, 0, 0, 0};
  for (uint64_t i = 0; i < 3000; ++i) ++count[std::to_string(parse_prompt(opd::make_problem(cfg, 5, i).prompt).operands[0]).size()];
  for (int d = 1; d <= 3; ++d) EXPECT_NEAR(count[d], 1000, 150) << d << " digits";
}

TEST(Arith, SkillsUseTheirOwnOperations) {
  int plus = 0, minus = 0, times = 0, zero_results = 0;
  for (uint64_t i = 0; i < 400; ++i) {
    const ArithProblem g = opd::make_problem(config("general", 4, 2), 1, i);
    const ArithProblem d = opd::make_problem(config("domain", 4, 2), 1, i);
    EXPECT_EQ(g.prompt.find('*'), std::string::npos);
    EXPECT_EQ(d.prompt.find_first_of("+-"), std::string::npos);
    for (char c : g.prompt) plus += c == '+', minus += c == '-';
    for (char c : d.prompt) times += c == '*';
    EXPECT_EQ(g.completion.find("=-"), std::string::npos);  // never a negative number
    zero_results += g.answer == "0";
  }
  EXPECT_GT(plus, 400);
  EXPECT_GT(minus, 400);
  EXPECT_EQ(times, 1200);
  EXPECT_LT(zero_results, 40);
}

TEST(Arith, ConfigIsValidatedByField) {
  auto message = [](const ArithConfig& c) {
    try {
      opd::make_problem(c, 0, 0);
    } catch (const opd::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(config("times", 3, 3)).find("skill"), std::string::npos);
  EXPECT_NE(message(config("general", 1, 3)).find("terms"), std::string::npos);
  EXPECT_NE(message(config("general", 7, 3)).find("terms"), std::string::npos);
  EXPECT_NE(message(config("domain", 3, 0)).find("digits"), std::string::npos);
  EXPECT_NE(message(config("domain", 3, 6)).find("digits"), std::string::npos);
  EXPECT_NO_THROW(opd::validate(config("domain", 6, 5)));
}

TEST(Arith, ExtractAnswer) {
  EXPECT_EQ(opd::extract_answer("37+85=122;122-19=103;=103"), "103");
  EXPECT_EQ(opd::extract_answer("=12<eos>"), "12");
  EXPECT_EQ(opd::extract_answer("1+2=3;=3<eos><pad>"), "3");
  EXPECT_EQ(opd::extract_answer("=0"), "0");
  EXPECT_EQ(opd::extract_answer("=1x2"), std::nullopt);  // only digits may follow the last '='
  EXPECT_EQ(opd::extract_answer("37+85=122;"), std::nullopt);
  EXPECT_EQ(opd::extract_answer(""), std::nullopt);
  EXPECT_EQ(opd::extract_answer("12+3=15;="), std::nullopt);
  EXPECT_EQ(opd::extract_answer("abc"), std::nullopt);
  EXPECT_EQ(opd::extract_answer("=x"), std::nullopt);
  EXPECT_EQ(opd::extract_answer("=12<eos>=5"), "12");  // nothing after <eos> counts
}

TEST(Arith, IsCorrect) {
  EXPECT_TRUE(opd::is_correct("37+85=122;=122", "122"));
  EXPECT_TRUE(opd::is_correct("37+85=122;=122<eos>", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=121", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=1220", "122"));
  // A chain that stops before its final "=answer" does not count.
  EXPECT_FALSE(opd::is_correct("37+85=122;", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=1;2", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=", "122"));
  EXPECT_FALSE(opd::is_correct("", "122"));
}

TEST(Arith, ErasuresInTheFinalAnswer) {
  // '*' erases the digits written before it; only the digits left count.
  EXPECT_EQ(opd::extract_answer("37+85=122;=13*122"), "122");
  EXPECT_EQ(opd::extract_answer("=1*2*3"), "3");
  EXPECT_EQ(opd::extract_answer("=*12"), "12");
  EXPECT_EQ(opd::extract_answer("=12*"), std::nullopt);  // erased, nothing written again
  EXPECT_EQ(opd::extract_answer("=12*<eos>"), std::nullopt);
  EXPECT_EQ(opd::extract_answer("=1*x2"), std::nullopt);
  EXPECT_TRUE(opd::is_correct("37+85=13*122;=12*122", "122"));
  EXPECT_TRUE(opd::is_correct("37+85=132*122;=122<eos>", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=122*12", "122"));
  EXPECT_FALSE(opd::is_correct("37+85=122;=122*", "122"));
  // A slip in a step does not change the verdict, which reads the final answer only.
  EXPECT_TRUE(opd::is_correct("6-2=8*4;4+86=90;=90", "90"));
}

// Reads a completion with slips the test's own way: every no_loss span is one wrong digit followed
// by '*', and the completion with each "digits before the slip, slip, '*'" removed is the clean one.
std::string remove_slips(const ArithProblem& p) {
  std::string clean;
  size_t at = 0;
  for (const opd::TextSpan& s : p.no_loss) {
    EXPECT_EQ(s.end, s.begin + 1);
    EXPECT_EQ(p.completion[s.end], '*') << p.completion;
    size_t number_start = s.begin;  // the right digits written before the slip belong to it
    while (number_start > 0 && std::isdigit(static_cast<unsigned char>(p.completion[number_start - 1]))) --number_start;
    EXPECT_EQ(p.completion[number_start - 1], '=') << p.completion;
    const std::string before = p.completion.substr(number_start, s.begin - number_start);
    // The number written again after the erase mark starts with those digits and differs at the slip.
    const std::string again = p.completion.substr(s.end + 1, before.size() + 1);
    EXPECT_EQ(again.substr(0, before.size()), before) << p.completion;
    EXPECT_NE(again.back(), p.completion[s.begin]) << p.completion;
    clean += p.completion.substr(at, number_start - at);
    at = s.end + 1;
  }
  return clean + p.completion.substr(at);
}

TEST(Arith, SlipsAreMarkedAndLeaveTheProblemUnchanged) {
  ArithConfig clean = config("general", 4, 3), slipped = clean;
  slipped.slip_rate = 0.3;
  int slips = 0, numbers = 0, near_misses = 0;
  for (uint64_t i = 0; i < 600; ++i) {
    const ArithProblem a = opd::make_problem(clean, 21, i), b = opd::make_problem(slipped, 21, i);
    SCOPED_TRACE(b.completion);
    EXPECT_TRUE(a.no_loss.empty());
    EXPECT_EQ(b.prompt, a.prompt);
    EXPECT_EQ(b.answer, a.answer);
    EXPECT_EQ(remove_slips(b), a.completion);
    EXPECT_TRUE(opd::is_correct(b.completion, b.answer));
    EXPECT_NO_THROW(opd::validate_no_loss(b.no_loss, b.completion));
    for (const opd::TextSpan& s : b.no_loss) {
      const char wrong = b.completion[s.begin];
      const size_t again = b.completion.find('*', s.begin) + 1 + (s.begin - b.completion.rfind('=', s.begin) - 1);
      const int d = std::abs(wrong - b.completion[again]);
      near_misses += d == 1 || d == 9;
    }
    slips += static_cast<int>(b.no_loss.size());
    numbers += clean.terms;  // terms - 1 results and the final answer
    if (HasFailure()) return;
  }
  EXPECT_NEAR(double(slips) / numbers, 0.3, 0.03);
  EXPECT_GT(near_misses, slips / 2);  // half near misses by design, and a few of the others
}

TEST(Arith, SlipsNeedTheGeneralSkillAndARate) {
  ArithConfig c = config("domain", 3, 3);
  c.slip_rate = 0.1;
  EXPECT_THROW(opd::validate(c), opd::Error);
  c.skill = "general";
  c.slip_rate = 1.0;
  EXPECT_THROW(opd::validate(c), opd::Error);
  c.slip_rate = -0.1;
  EXPECT_THROW(opd::validate(c), opd::Error);
}

TEST(Arith, SlipProbeCarriesTheChainToAWrongDigit) {
  const ArithConfig cfg = config("general", 3, 3);
  for (uint64_t i = 0; i < 200; ++i) {
    const ArithProblem p = opd::make_problem(cfg, 4, i), probe = opd::make_slip_probe(cfg, 4, i);
    SCOPED_TRACE(probe.prompt + " | " + probe.completion);
    ASSERT_EQ(probe.prompt.compare(0, p.prompt.size(), p.prompt), 0);
    EXPECT_EQ(probe.answer, p.answer);
    // prompt = problem + clean chain up to a digit, with that digit wrong; completion = '*' + the rest.
    const std::string chain = probe.prompt.substr(p.prompt.size());
    ASSERT_FALSE(chain.empty());
    const std::string upto = chain.substr(0, chain.size() - 1);
    EXPECT_EQ(p.completion.compare(0, upto.size(), upto), 0);
    EXPECT_NE(chain.back(), p.completion[upto.size()]);
    EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(chain.back())));
    ASSERT_EQ(probe.completion[0], '*');
    const size_t eq = upto.rfind('=');
    ASSERT_NE(eq, std::string::npos);
    EXPECT_EQ(probe.completion.substr(1), p.completion.substr(eq + 1));
    EXPECT_TRUE(opd::is_correct(probe.completion, probe.answer));
  }
}

TEST(Arith, EraseStats) {
  // 37+85=122 written right; 122-19=103 first written "13" (wrong at the 2nd digit), erased, then
  // right; final answer erased while right (spurious), then right.
  auto s = opd::erase_stats("37+85=122;122-19=13*103;=10*103<eos>");
  EXPECT_EQ(s.numbers, 3);
  EXPECT_EQ(s.erasures, 2);
  EXPECT_EQ(s.spurious, 1);
  EXPECT_EQ(s.first_wrong, 1);
  EXPECT_EQ(s.recovered, 1);
  // A wrong number left standing; an erasure that ends wrong; the final answer copies the last result.
  s = opd::erase_stats("37+85=123;123-19=14*105;=105");
  EXPECT_EQ(s.numbers, 3);
  EXPECT_EQ(s.erasures, 1);
  EXPECT_EQ(s.spurious, 0);
  EXPECT_EQ(s.first_wrong, 2);
  EXPECT_EQ(s.recovered, 0);
  // Erasing a complete right value is spurious; erasing nothing is too.
  s = opd::erase_stats("1+2=3*3;=*3");
  EXPECT_EQ(s.erasures, 2);
  EXPECT_EQ(s.spurious, 2);
  EXPECT_EQ(s.first_wrong, 0);
  // Not a chain: nothing counted, nothing thrown.
  for (const std::string junk : {"", "=====;;;", "abc", "1+=*;", "99999999999999999999+1=2", "=;=*;*"}) {
    EXPECT_NO_THROW(opd::erase_stats(junk)) << junk;
    EXPECT_EQ(opd::erase_stats(junk).first_wrong, 0) << junk;
  }
  // Domain chains multiply with '*' outside computed numbers: no erasures.
  EXPECT_EQ(opd::erase_stats("6*7=42;42*3=126;=126").erasures, 0);
}

}  // namespace
