// The arith generator against an independent reading of its own text, and the verifier.
#include <gtest/gtest.h>

#include <cstdint>
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

}  // namespace
