// A shortened experiment 2 over two seeds: both stages run per seed, both skills are evaluated at
// every evaluation, and the table (mean and spread over seeds, one row per seed) and the plot are written.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/python.h"
#include "run.h"

namespace opd {
namespace {

TEST(Experiment2, ShortPipeline) {
  ASSERT_EQ(testing::python_lacks("matplotlib"), "");
  const std::string out = testing::temp_dir("experiment2");
  const std::string cmd = testing::python() + " tools/experiment2 --opd " + std::string(OPD_BINARY) + " --out " + out +
                          " --seeds 1,2 --sft-steps 2 --opd-steps 2 --eval-n 8 --sft-eval-every 1 --opd-eval-every 1"
                          " --threads 2 > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_file(out + "/log");
  const std::string table = testing::read_file(out + "/table.md");
  for (const char* row : {"before (the general model)", "after SFT on the domain", "after OPD on general prompts"})
    EXPECT_NE(table.find(row), std::string::npos) << table;
  EXPECT_TRUE(std::filesystem::exists(out + "/accuracy_through_stages.png"));
  // Two seeds: means with their spread, and one row per seed.
  EXPECT_NE(table.find("seeds 1,2 (mean ± sd over seeds)"), std::string::npos) << table;
  EXPECT_NE(table.find("| 2 | "), std::string::npos) << table;
  // Metrics carry both skills at every evaluation.
  const auto last = nlohmann::json::parse(testing::last_line(out + "/seed2/2-opd-general/metrics.jsonl"));
  EXPECT_TRUE(last["eval"].contains("arith:general"));
  EXPECT_TRUE(last["eval"].contains("arith:domain"));
}

}  // namespace
}  // namespace opd
