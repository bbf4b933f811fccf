// Data set files: the loaders accept good files and name path:line for every kind of bad line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "cli/commands.h"
#include "core/error.h"
#include "tasks/arith.h"
#include "tasks/dataset.h"

namespace {

class Dataset : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("opd_test_dataset_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string file(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  // The error message of fn(path), or "no error".
  template <typename Fn, typename Arg>
  static std::string error_of(Fn fn, const Arg& path) {
    try {
      fn(path);
    } catch (const opd::Error& e) {
      return e.what();
    }
    return "no error";
  }

  std::filesystem::path dir_;
};

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST_F(Dataset, LoadsGoodPromptFile) {
  const std::string path = file("p.jsonl",
                                "{\"prompt\": \"1+2?\", \"answer\": \"3\"}\n"
                                "\n"
                                "{\"prompt\": \"4*5?\", \"answer\": \"20\", \"completion\": \"4*5=20;=20\", \"index\": 7}\n");
  const auto ex = opd::load_prompts(path);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].prompt, "1+2?");
  EXPECT_EQ(ex[0].answer, "3");
  EXPECT_EQ(ex[0].completion, "");
  EXPECT_EQ(ex[1].completion, "4*5=20;=20");
}

TEST_F(Dataset, LoadsGoodSftFile) {
  const auto ex = opd::load_sft(file("s.jsonl", "{\"prompt\": \"1+2?\", \"completion\": \"1+2=3;=3\"}\n"));
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].completion, "1+2=3;=3");
  EXPECT_EQ(ex[0].answer, "");
}

TEST_F(Dataset, PromptFileErrorsNameFileAndLine) {
  const std::string good = "{\"prompt\": \"1+2?\", \"answer\": \"3\"}\n";
  struct Case {
    std::string line, what;
  };
  const Case cases[] = {
      {"{\"prompt\": \"1+2?\"}", "\"answer\""},
      {"{\"answer\": \"3\"}", "\"prompt\""},
      {"{\"prompt\": 12, \"answer\": \"3\"}", "must be a string"},
      {"{\"prompt\": \"1+2?\", \"answer\": 3}", "must be a string"},
      {"{\"prompt\": \"1+2?\", \"answer\": \"3\", \"completion\": [1]}", "\"completion\" must be a string"},
      {"{\"prompt\": \"\", \"answer\": \"3\"}", "\"prompt\" is empty"},
      {"{\"prompt\": \"1+2?\", \"answer\": \"\"}", "\"answer\" is empty"},
      {"{\"prompt\": \"1+2?\", \"answer\": \"3\"", "not valid JSON"},
      {"[\"1+2?\", \"3\"]", "expected a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string path = file("bad.jsonl", good + "\n" + c.line + "\n" + good);
    const std::string msg = error_of(opd::load_prompts, path);
    EXPECT_HAS(msg, path + ":3:");
    EXPECT_HAS(msg, c.what);
  }
}

TEST_F(Dataset, SftFileErrorsNameFileAndLine) {
  const std::string path = file("bad.jsonl", "{\"prompt\": \"1+2?\", \"completion\": \"=3\"}\n{\"prompt\": \"1+2?\", \"answer\": \"3\"}\n");
  const std::string msg = error_of(opd::load_sft, path);
  EXPECT_HAS(msg, path + ":2:");
  EXPECT_HAS(msg, "\"completion\"");
  const std::string empty = file("empty.jsonl", "{\"prompt\": \"1+2?\", \"completion\": \"\"}\n");
  EXPECT_HAS(error_of(opd::load_sft, empty), empty + ":1:");
}

TEST_F(Dataset, BlankAndMissingFiles) {
  for (const std::string text : {"", "\n  \n\t\n"}) {
    const std::string path = file("blank.jsonl", text);
    EXPECT_HAS(error_of(opd::load_prompts, path), path);
    EXPECT_HAS(error_of(opd::load_prompts, path), "no examples");
    EXPECT_HAS(error_of(opd::load_sft, path), "no examples");
  }
  const std::string missing = (dir_ / "missing.jsonl").string();
  EXPECT_HAS(error_of(opd::load_prompts, missing), missing);
}

TEST_F(Dataset, WriteLoadRoundTrip) {
  const std::vector<opd::Example> ex = {{"12*3*4?", "144", "12*3=36;36*4=144;=144"},
                                        {"quote \" and\nnewline?", "7", ""}};
  const std::string path = (dir_ / "rt.jsonl").string();
  opd::write_examples(path, ex);
  const auto back = opd::load_prompts(path);
  ASSERT_EQ(back.size(), ex.size());
  for (size_t i = 0; i < ex.size(); ++i) {
    EXPECT_EQ(back[i].prompt, ex[i].prompt);
    EXPECT_EQ(back[i].answer, ex[i].answer);
    EXPECT_EQ(back[i].completion, ex[i].completion);
  }
  // One line per example, whatever the text holds.
  std::ifstream in(path);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 2);
}

// `opd data arith`: an --offset slice equals the same indices of a longer run, and matches make_problem.
TEST_F(Dataset, DataCommandWritesSlices) {
  const std::string all = (dir_ / "all.jsonl").string(), part = (dir_ / "part.jsonl").string();
  EXPECT_EQ(opd::cli::data({"arith", "--n", "15", "--seed", "9", "--skill", "domain", "--out", all}), 0);
  EXPECT_EQ(opd::cli::data({"arith", "--n", "5", "--seed", "9", "--skill", "domain", "--offset", "10", "--out", part}), 0);
  const auto a = opd::load_prompts(all), b = opd::load_prompts(part);
  ASSERT_EQ(a.size(), 15u);
  ASSERT_EQ(b.size(), 5u);
  opd::ArithConfig cfg;
  cfg.skill = "domain";
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(b[i].prompt, a[10 + i].prompt);
    EXPECT_EQ(b[i].completion, a[10 + i].completion);
    EXPECT_EQ(b[i].answer, opd::make_problem(cfg, 9, 10 + i).answer);
  }
  EXPECT_HAS(error_of(opd::cli::data, std::vector<std::string>{}), "arith");
  try {
    opd::cli::data({"sort", "--n", "1"});
    ADD_FAILURE() << "unknown task accepted";
  } catch (const opd::Error& e) {
    EXPECT_HAS(std::string(e.what()), "known tasks: arith");
  }
  EXPECT_THROW(opd::cli::data({"arith", "--n", "3", "--seed", "1", "--terms", "7", "--out", part}), opd::Error);
}

TEST_F(Dataset, NoLossSpans) {
  const auto ex = opd::load_sft(file("m.jsonl",
                                     "{\"prompt\": \"6-2?\", \"completion\": \"6-2=8*4;=4\", \"no_loss\": [[4, 5]]}\n"
                                     "{\"prompt\": \"1?\", \"completion\": \"abcdef\", \"no_loss\": [[0, 2], [2, 3], [5, 6]]}\n"
                                     "{\"prompt\": \"1?\", \"completion\": \"ab\", \"no_loss\": []}\n"));
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].no_loss, (std::vector<opd::TextSpan>{{4, 5}}));
  EXPECT_EQ(ex[1].no_loss, (std::vector<opd::TextSpan>{{0, 2}, {2, 3}, {5, 6}}));
  EXPECT_TRUE(ex[2].no_loss.empty());
  // Written back as it was read.
  const std::string path = (dir_ / "rt.jsonl").string();
  opd::write_examples(path, ex);
  const auto back = opd::load_sft(path);
  for (size_t i = 0; i < ex.size(); ++i) EXPECT_EQ(back[i].no_loss, ex[i].no_loss);
}

TEST_F(Dataset, NoLossErrorsNameFileLineAndSpan) {
  const std::string good = "{\"prompt\": \"1?\", \"completion\": \"abcd\"}\n";
  struct Case {
    std::string spans, what;
  };
  const Case cases[] = {
      {"3", "must be an array"},
      {"[[1]]", "entry 0 must be a pair of integers"},
      {"[[0, 1], [1, \"2\"]]", "entry 1 must be a pair of integers"},
      {"[[0.5, 2]]", "entry 0 must be a pair"},
      {"[[2, 9]]", "outside the completion's 4 bytes"},
      {"[[-1, 2]]", "outside"},
      {"[[2, 2]]", "span 0 [2, 2) is empty"},
      {"[[3, 1]]", "is empty"},
      {"[[0, 2], [1, 3]]", "span 1 [1, 3) overlaps or precedes span 0"},
      {"[[2, 3], [0, 1]]", "overlaps or precedes"},
  };
  for (const Case& c : cases) {
    const std::string path =
        file("bad.jsonl", good + "{\"prompt\": \"1?\", \"completion\": \"abcd\", \"no_loss\": " + c.spans + "}\n");
    const std::string msg = error_of(opd::load_sft, path);
    EXPECT_HAS(msg, path + ":2:");
    EXPECT_HAS(msg, "\"no_loss\"");
    EXPECT_HAS(msg, c.what);
  }
  // Offsets are bytes: a span may not cut a UTF-8 character ("é" is 2 bytes).
  const std::string utf8 = file("u.jsonl", "{\"prompt\": \"1?\", \"completion\": \"a\u00e9b\", \"no_loss\": [[1, 2]]}\n");
  EXPECT_HAS(error_of(opd::load_sft, utf8), "splits a UTF-8 character");
  const std::string whole = file("w.jsonl", "{\"prompt\": \"1?\", \"completion\": \"a\u00e9b\", \"no_loss\": [[1, 3]]}\n");
  EXPECT_EQ(opd::load_sft(whole)[0].no_loss, (std::vector<opd::TextSpan>{{1, 3}}));
}

TEST_F(Dataset, DataCommandWritesSlipsWithTheirSpans) {
  const std::string path = (dir_ / "slips.jsonl").string();
  EXPECT_EQ(opd::cli::data({"arith", "--n", "40", "--seed", "3", "--slip-rate", "0.5", "--out", path}), 0);
  opd::ArithConfig cfg;
  cfg.slip_rate = 0.5;
  const auto ex = opd::load_sft(path);
  int spans = 0;
  for (size_t i = 0; i < ex.size(); ++i) {
    const opd::ArithProblem p = opd::make_problem(cfg, 3, i);
    EXPECT_EQ(ex[i].completion, p.completion);
    EXPECT_EQ(ex[i].no_loss, p.no_loss);
    spans += static_cast<int>(ex[i].no_loss.size());
  }
  EXPECT_GT(spans, 20);
  EXPECT_THROW(opd::cli::data({"arith", "--n", "3", "--seed", "1", "--skill", "domain", "--slip-rate", "0.1", "--out", path}),
               opd::Error);
}

}  // namespace
