// A shortened experiment 1 on the shipped experiment-1 models: every method runs (two steps, a tiny
// eval), the off-policy recovery data is built, and the table and plots are written.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/python.h"
#include "run.h"

namespace opd {
namespace {

TEST(Experiment1, ShortPipeline) {
  ASSERT_EQ(testing::python_lacks("matplotlib"), "");
  const std::string out = testing::temp_dir("experiment1");
  const std::string cmd = testing::python() + " tools/experiment1 --opd " + std::string(OPD_BINARY) + " --out " +
                          out + " --cap 2 --eval-every 1 --eval-n 4 --jobs 2 --threads 1 > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_file(out + "/log");
  const std::string table = testing::read_file(out + "/table.md");
  for (const char* row : {"| SFT to the target: ", "| opd-full | 128x1 |", "| opd-sampled | 32x4 |", "| opd-topk4 |",
                          "| sft | 128x1 |", "| grpo | 32x4 |", "| ctrl-opd-norecovery-teacher |",
                          "| ctrl-sft-offpolicy-recovery |"})
    EXPECT_NE(table.find(row), std::string::npos) << row << "\n" << table;
  for (const char* png : {"exp1_accuracy_vs_steps.png", "exp1_accuracy_vs_flops.png", "exp1_sft_curve.png"})
    EXPECT_TRUE(std::filesystem::exists(out + "/" + png)) << png;
  // The control's data: one example per prompt the capped run can use, some with a marked slip.
  const std::string data = testing::read_file(out + "/offpolicy-recovery.jsonl");
  EXPECT_EQ(testing::count_lines(out + "/offpolicy-recovery.jsonl"), 2 * 128);
  EXPECT_NE(data.find("\"no_loss\""), std::string::npos);
  // Runs evaluate greedy and sampled accuracy, and the target is the pre-registered one.
  const auto results = nlohmann::json::parse(testing::read_file(out + "/results.json"));
  const auto target = nlohmann::json::parse(testing::read_file("models/exp1-target.json"));
  EXPECT_EQ(results["target"], target["target"]);
  int runs = 0;
  for (const auto& lr : std::filesystem::directory_iterator(out + "/runs/opd-full")) {
    const auto last = nlohmann::json::parse(testing::last_line(lr.path().string() + "/seed1/metrics.jsonl"));
    EXPECT_TRUE(last.contains("eval_accuracy_sampled"));
    ++runs;
  }
  EXPECT_EQ(runs, 1);  // the chosen learning rate only
}

}  // namespace
}  // namespace opd
