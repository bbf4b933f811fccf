#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "tasks/arith.h"
#include "tasks/builtin.h"

namespace {

TEST(BuiltinTasks, SeveralSkillsByName) {
  const auto sets = opd::builtin_task_sets("arith:general,arith:domain", 5, 9);
  ASSERT_EQ(sets.size(), 2u);
  EXPECT_EQ(sets[0].name, "arith:general");
  EXPECT_EQ(sets[1].name, "arith:domain");
  for (const auto& s : sets) {
    ASSERT_EQ(s.examples.size(), 5u);
    for (const auto& e : s.examples) EXPECT_TRUE(opd::is_correct(e.completion, e.answer)) << e.prompt;
  }
  EXPECT_NE(sets[1].examples[0].prompt.find('*'), std::string::npos);
  EXPECT_EQ(opd::builtin_task_sets("arith", 3, 9)[0].name, "arith:general");
  // Deterministic in (seed, index).
  EXPECT_EQ(opd::builtin_task_sets("arith:domain", 5, 9)[0].examples[4].prompt, sets[1].examples[4].prompt);
}

TEST(BuiltinTasks, ErrorsNameTheSpec) {
  for (const char* bad : {"arith:algebra", "chess", "arith:general,,arith:domain", ""}) {
    try {
      opd::builtin_task_sets(bad, 3, 1);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const opd::Error& e) {
      SUCCEED();
    }
  }
}

TEST(BuiltinTasks, PromptFilesConcatenate) {
  const std::string a = ::testing::TempDir() + "/a.jsonl", b = ::testing::TempDir() + "/b.jsonl";
  std::ofstream(a) << "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n";
  std::ofstream(b) << "{\"prompt\": \"2*3?\", \"answer\": \"6\"}\n{\"prompt\": \"2*4?\", \"answer\": \"8\"}\n";
  const auto all = opd::load_prompt_files(a + "," + b);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].prompt, "1+1?");
  EXPECT_EQ(all[2].answer, "8");
}

}  // namespace
