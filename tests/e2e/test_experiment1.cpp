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
                          out + " --cap 2 --eval-every 1 --eval-n 4 --jobs 2 --threads 1 --methods opd-sampled,opd-full," +
                          "opd-topk4,sft,grpo,ctrl-opd-norecovery-teacher,ctrl-sft-offpolicy-recovery > " + out +
                          "/log 2>&1";
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

// --report starts no run: a sweep's table from the runs finished so far, the rest marked as not run.
TEST(Experiment1, ReportOfAnUnfinishedSweep) {
  ASSERT_EQ(testing::python_lacks("matplotlib"), "");
  const std::string out = testing::temp_dir("experiment1-report");
  const std::string args = " tools/experiment1 --opd " + std::string(OPD_BINARY) + " --out " + out +
                           " --cap 2 --eval-every 1 --eval-n 4 --jobs 2 --threads 1 --methods opd-full,grpo";
  const std::string run = testing::python() + args + " > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(run.c_str()), 0) << testing::read_file(out + "/log");
  const std::string report = testing::python() + args + " --sweep --report > " + out + "/report 2>&1";
  ASSERT_EQ(std::system(report.c_str()), 0) << testing::read_file(out + "/report");
  const std::string table = testing::read_file(out + "/table.md");
  EXPECT_NE(table.find("| opd-full | 128x1 | "), std::string::npos) << table;
  // The sweep's line for opd-full: the chosen rate ran (not reached in 2 steps), the other two did not.
  const size_t at = table.find("| opd-full | 0.0001: ");
  ASSERT_NE(at, std::string::npos) << table;
  const std::string line = table.substr(at, table.find('\n', at) - at);
  auto count = [&](const std::string& what) {
    int n = 0;
    for (size_t i = line.find(what); i != std::string::npos; i = line.find(what, i + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("not run"), 2) << line;
  EXPECT_EQ(count("not reached"), 1) << line;
  EXPECT_NE(line.find("(of the lrs run) |"), std::string::npos) << line;
  EXPECT_NE(table.find("a report of the 2 runs finished so far"), std::string::npos) << table;
  int lrs = 0;
  for ([[maybe_unused]] const auto& lr : std::filesystem::directory_iterator(out + "/runs/opd-full")) ++lrs;
  EXPECT_EQ(lrs, 1);
  EXPECT_TRUE(std::filesystem::exists(out + "/exp1_sweep.png"));
}

// The error-state probe: the exp1 teacher wants the erase mark after injected slips, the student base
// (never trained on an erase after a slip of its own) does not; the student's own wrong digits are found.
TEST(Experiment1, ErrorStatesProbe) {
  const std::string out = testing::temp_dir("experiment1-error-states");
  const std::string make_eval = std::string(OPD_BINARY) + " data arith --n 100 --seed 12 --out " + out + "/eval.jsonl";
  ASSERT_EQ(std::system((make_eval + " > /dev/null").c_str()), 0);
  const std::string cmd = testing::python() + " tools/exp1-error-states --student models/exp1-student-base.h5 " +
                          "--teacher models/exp1-teacher.h5 --eval " + out + "/eval.jsonl --opd " +
                          std::string(OPD_BINARY) + " --json " + out + "/e.json > " + out + "/log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_file(out + "/log");
  const auto e = nlohmann::json::parse(testing::read_file(out + "/e.json"));
  EXPECT_EQ(e["samples"], 400);
  EXPECT_GT(e["student_wrong_digits"].get<int>(), 0);
  EXPECT_LE(e["rewritten_right"].get<int>() + e["rewritten_same_mistake"].get<int>(), e["student_erased"].get<int>());
  const auto& injected = e["after_injected_slips"];
  EXPECT_GT(injected[0]["n"].get<int>(), 100);
  EXPECT_GT(injected[0]["mean_p"].get<double>(), 0.5);   // the teacher: measured 0.90 on 500 problems
  EXPECT_LT(injected[1]["mean_p"].get<double>(), 0.2);   // the student base: 0.007
}

}  // namespace
}  // namespace opd
