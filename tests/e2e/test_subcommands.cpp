// A few steps of every subcommand on the shipped models and the built-in task, and the errors a
// user meets first: each must say what is wrong and exit non-zero.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "run.h"

namespace opd {
namespace {

using testing::count_lines;
using testing::read_file;
using testing::run_opd;
using testing::temp_dir;

const std::string kTeacher = "models/teacher.h5";
const std::string kStudent = "models/student-base.h5";
const std::string kThreads = " --threads 2";
const std::string kOneThread = " --threads 1";  // small runs: no OpenMP team to wait for on a busy machine

class Subcommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = temp_dir("subcommands");
    ASSERT_EQ(run_opd("data arith --n 64 --seed 5 --out " + dir_ + "/train.jsonl").code, 0);
    ASSERT_EQ(run_opd("data arith --n 8 --seed 6 --out " + dir_ + "/eval.jsonl").code, 0);
  }
  static std::string dir_;
  std::string data() const { return " --prompts " + dir_ + "/train.jsonl --eval " + dir_ + "/eval.jsonl"; }
  // A finished run: metrics for steps 0..steps, a summary, a loadable final model.
  void expect_run(const std::string& out, int steps) {
    EXPECT_EQ(count_lines(out + "/metrics.jsonl"), steps + 1);
    const auto summary = nlohmann::json::parse(read_file(out + "/summary.json"));
    EXPECT_EQ(summary["steps"], steps);
    EXPECT_TRUE(summary.contains("eval_accuracy_final"));
    EXPECT_FALSE(read_file(out + "/config.ini").empty());
    const auto r = run_opd("eval --model " + out + "/final.h5 --eval " + dir_ + "/eval.jsonl" + kThreads);
    EXPECT_EQ(r.code, 0) << r.output;
  }
};
std::string Subcommands::dir_;

TEST_F(Subcommands, DistillAllKlModes) {
  for (std::string kl : {"sampled", "full", "topk:4"}) {
    const std::string out = temp_dir("distill_" + kl.substr(0, 4));
    const auto r = run_opd("distill --student " + kStudent + " --teacher " + kTeacher + data() +
                           " --steps 2 --prompts-per-step 4 --samples-per-prompt 2 --eval-every 1 --kl " + kl +
                           " --out " + out + kThreads);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("step 2/2"), std::string::npos) << r.output;
    expect_run(out, 2);
    const auto last = nlohmann::json::parse(testing::last_line(out + "/metrics.jsonl"));
    for (const char* k : {"loss", "kl", "logp_student", "logp_teacher", "entropy", "tokens", "tokens_per_s", "flops",
                          "time", "eval_accuracy", "eval_kl"})
      EXPECT_TRUE(last.contains(k)) << kl << ": metrics line lacks " << k;
    EXPECT_GT(last["flops"]["score"].get<double>(), 0);
    EXPECT_GE(count_lines(out + "/samples/step_000001.jsonl"), 1);
  }
}

TEST_F(Subcommands, SftFromDataAndFromTeacher) {
  std::string out = temp_dir("sft_data");
  auto r = run_opd("sft --student " + kStudent + " --data " + dir_ + "/train.jsonl --eval " + dir_ +
                   "/eval.jsonl --steps 2 --prompts-per-step 4 --out " + out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  expect_run(out, 2);
  out = temp_dir("sft_teacher");
  r = run_opd("sft --from-teacher --student " + kStudent + " --teacher " + kTeacher + data() +
              " --steps 2 --prompts-per-step 4 --samples-per-prompt 1 --out " + out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  expect_run(out, 2);
  const auto s = nlohmann::json::parse(read_file(out + "/summary.json"));
  EXPECT_GT(s["flops"]["teacher_gen"].get<double>(), 0);
}

TEST_F(Subcommands, SftFromScratch) {
  const std::string out = temp_dir("sft_init");
  const auto r = run_opd("sft --init d_model=16,n_layers=1,n_heads=2,n_kv_heads=1,head_dim=8,ffn_dim=32 --data " +
                         dir_ + "/train.jsonl --all-tokens --steps 2 --prompts-per-step 4 --eval-every 0 --out " +
                         out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count_lines(out + "/metrics.jsonl"), 3);
}

TEST_F(Subcommands, Rl) {
  const std::string out = temp_dir("rl");
  const auto r = run_opd("rl --student " + kStudent + data() +
                         " --steps 2 --prompts-per-step 4 --samples-per-prompt 4 --grpo-std --log-format jsonl --out " +
                         out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  expect_run(out, 2);
  // Progress as JSON lines: the last step's line parses and carries the ETA.
  const size_t at = r.output.find("{\"command\":\"rl\"");
  ASSERT_NE(at, std::string::npos) << r.output;
  const auto progress = nlohmann::json::parse(r.output.substr(at, r.output.find('\n', at) - at));
  EXPECT_TRUE(progress.contains("eta_s"));
}

TEST_F(Subcommands, EvalSampleScore) {
  auto r = run_opd("eval --model " + kTeacher + " --teacher " + kTeacher + " --eval " + dir_ + "/eval.jsonl --json" +
                   kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["n"], 8);
  EXPECT_EQ(j["reverse_kl"].get<double>(), 0.0);  // a model against itself

  const std::string samples = dir_ + "/samples.jsonl";
  r = run_opd("sample --model " + kStudent + " --teacher " + kTeacher + " --prompts " + dir_ +
              "/eval.jsonl --samples-per-prompt 2 --temperature 1 --out " + samples + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count_lines(samples), 16);
  const auto first = nlohmann::json::parse(read_file(samples).substr(0, read_file(samples).find('\n')));
  EXPECT_EQ(first["logp_student"].size(), first["tokens"].size());
  EXPECT_EQ(first["logp_teacher"].size(), first["tokens"].size());

  const std::string in = dir_ + "/score_in.jsonl", out = dir_ + "/score_out.jsonl";
  std::ofstream(in) << "{\"text\": \"12+7=19;=19\"}\n{\"tokens\": [2, 3, 4, 1]}\n";
  r = run_opd("score --model " + kTeacher + " --input " + in + " --output " + out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count_lines(out), 2);
  const auto line = nlohmann::json::parse(read_file(out).substr(0, read_file(out).find('\n')));
  EXPECT_EQ(line["logprobs"].size(), 10u);
}

// Sampled evaluation beside greedy, and a target on it that must hold over a window of evaluations.
TEST_F(Subcommands, SampledEvaluationAndTargetWindow) {
  for (int window : {1, 2}) {
    const std::string out = temp_dir("sampled_target_" + std::to_string(window));
    const auto r = run_opd("sft --from-teacher --student " + kTeacher + " --teacher " + kTeacher + data() +
                           " --steps 4 --prompts-per-step 4 --samples-per-prompt 1 --lr 1e-5 --eval-every 1"
                           " --eval-samples 2 --target-metric sampled --target-accuracy 0.5 --stop-at-target"
                           " --target-window " + std::to_string(window) + " --out " + out + kOneThread);
    ASSERT_EQ(r.code, 0) << r.output;
    const auto summary = nlohmann::json::parse(read_file(out + "/summary.json"));
    // The teacher scores ~0.98: the first evaluation (before training) reaches the target, or the
    // first two together; a run stops at the target only after a step.
    EXPECT_EQ(summary["target_reached_step"], window - 1);
    EXPECT_EQ(summary["steps"], window == 1 ? 4 : 1);
    EXPECT_GT(summary["eval_accuracy_sampled_final"].get<double>(), 0.5);
    const auto first = nlohmann::json::parse(read_file(out + "/metrics.jsonl").substr(0, read_file(out + "/metrics.jsonl").find('\n')));
    const auto& e = first["eval"][dir_ + "/eval.jsonl"];
    EXPECT_EQ(e["samples"], 2);
    EXPECT_EQ(e["temperature"], 1.0);
    for (const char* k : {"accuracy", "accuracy_sampled", "erasures", "spurious_erasures", "first_wrong", "recovered"})
      EXPECT_TRUE(e.contains(k)) << "eval lacks " << k;
  }
  auto r = run_opd("sft --from-teacher --student " + kStudent + " --teacher " + kTeacher + data() +
                   " --steps 1 --target-metric sampled --target-accuracy 0.5 --out " + temp_dir("no_samples") + kOneThread);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--target-metric sampled needs --eval-samples"), std::string::npos) << r.output;
  r = run_opd("eval --model " + kTeacher + " --eval " + dir_ + "/eval.jsonl --samples 3 --json" + kOneThread);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["samples"], 3);
  EXPECT_GT(j["accuracy_sampled"].get<double>(), 0.5);
  EXPECT_TRUE(j.contains("spurious_erasures"));
  // A recovery probe: the shipped teacher never saw an erase mark, so it recovers from no slip.
  r = run_opd("eval --model " + kTeacher + " --task arith:slip-probe --n 16 --json" + kOneThread);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output.substr(r.output.find('{')))["set"], "arith:slip-probe");
}

// SFT data with no-loss spans trains; a bad span stops the run naming file and line.
TEST_F(Subcommands, SftWithNoLossSpans) {
  const std::string slips = dir_ + "/slips.jsonl";
  ASSERT_EQ(run_opd("data arith --n 64 --seed 5 --slip-rate 0.5 --out " + slips).code, 0);
  EXPECT_NE(read_file(slips).find("\"no_loss\""), std::string::npos);
  const std::string out = temp_dir("sft_no_loss");
  auto r = run_opd("sft --student " + kStudent + " --data " + slips + " --eval " + dir_ +
                   "/eval.jsonl --steps 2 --prompts-per-step 4 --out " + out + kOneThread);
  ASSERT_EQ(r.code, 0) << r.output;
  expect_run(out, 2);
  const std::string bad = dir_ + "/bad_span.jsonl";
  std::ofstream(bad) << "{\"prompt\": \"1+2?\", \"completion\": \"1+2=3;=3\"}\n"
                        "{\"prompt\": \"1+2?\", \"completion\": \"1+2=3;=3\", \"no_loss\": [[4, 99]]}\n";
  r = run_opd("sft --student " + kStudent + " --data " + bad + " --steps 1 --out " + temp_dir("sft_bad_span") + kOneThread);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find(bad + ":2:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no_loss"), std::string::npos) << r.output;
}

TEST_F(Subcommands, ClearErrors) {
  const std::string bad = dir_ + "/bad.jsonl";
  std::ofstream(bad) << "{\"prompt\": \"1+2?\", \"answer\": \"3\"}\n{\"prompt\": 12}\n";
  auto r = run_opd("distill --student " + kStudent + " --teacher " + kTeacher + " --prompts " + bad +
                   " --steps 1 --out " + dir_ + "/bad_run");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find(bad + ":2"), std::string::npos) << r.output;

  r = run_opd("eval --model /nonexistent/student.h5 --eval " + dir_ + "/eval.jsonl");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("/nonexistent/student.h5: no such file"), std::string::npos) << r.output;

  // The reference-check fixture has another vocabulary than the arith models.
  r = run_opd("distill --student " + kStudent + " --teacher tests/fixtures/qwen3_tiny.h5" + data() +
              " --steps 1 --out " + dir_ + "/mismatch");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("must share one tokenizer"), std::string::npos) << r.output;

  r = run_opd("distill --student " + kStudent + " --teacher " + kTeacher + data() + " --kl topk:0 --steps 1 --out " +
              dir_ + "/badkl");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--kl"), std::string::npos) << r.output;

  r = run_opd("distill --bogus 3");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;

  r = run_opd("rl --student " + kStudent + data() + " --samples-per-prompt 0 --out " + dir_ + "/x");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--samples-per-prompt"), std::string::npos) << r.output;
}

// A prompt that leaves no room in max_seq (64 for the shipped models) is refused at load naming its
// file and line, or with --skip-long-prompts left out and counted in the summary.
TEST_F(Subcommands, LongPromptsAreRefusedOrSkipped) {
  const std::string prompts = dir_ + "/long.jsonl";
  std::string long_prompt;
  for (int i = 0; i < 32; ++i) long_prompt += "1+";
  std::ofstream(prompts) << "{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n"
                         << "{\"prompt\": \"" << long_prompt << "1=\", \"answer\": \"33\"}\n";
  const std::string args = "distill --student " + kStudent + " --teacher " + kTeacher + " --prompts " + prompts +
                           " --eval " + dir_ + "/eval.jsonl --steps 1 --prompts-per-step 2 --samples-per-prompt 1" +
                           kThreads + " --out ";
  auto r = run_opd(args + dir_ + "/long_refused");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find(prompts + ":3: the prompt has 66 tokens; the model's max_seq = 64"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--skip-long-prompts"), std::string::npos) << r.output;
  r = run_opd(args + dir_ + "/long_skipped --skip-long-prompts");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("left out 1 training and 0 eval examples"), std::string::npos) << r.output;
  const auto summary = nlohmann::json::parse(read_file(dir_ + "/long_skipped/summary.json"));
  EXPECT_EQ(summary["skipped_long_prompts"], 1);
}

// --head-chunk: a distillation run with the LM head streamed in blocks of 7 rows follows the run
// that holds every row's logits (the same step to float rounding); bad values name the option.
TEST_F(Subcommands, StreamedHeadRunFollowsTheUnfusedRun) {
  const std::string args = "distill --student " + kStudent + " --teacher " + kTeacher + data() +
                           " --steps 2 --prompts-per-step 4 --samples-per-prompt 2 --eval-every 1 --kl full" +
                           kThreads + " --out ";
  auto r = run_opd(args + dir_ + "/head_all --head-chunk 0");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_opd(args + dir_ + "/head_7 --head-chunk 7");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("LM head streamed in blocks of 7 rows"), std::string::npos) << r.output;
  const auto a = nlohmann::json::parse(testing::last_line(dir_ + "/head_all/metrics.jsonl"));
  const auto b = nlohmann::json::parse(testing::last_line(dir_ + "/head_7/metrics.jsonl"));
  for (const char* k : {"loss", "kl_exact", "entropy", "grad_norm", "eval_kl"})
    EXPECT_NEAR(a[k].get<double>(), b[k].get<double>(), 1e-4 * (1 + std::abs(a[k].get<double>()))) << k;
  r = run_opd(args + dir_ + "/head_bad --head-chunk many");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("option --head-chunk = 'many'"), std::string::npos) << r.output;
}

// The CPU side of `opd bench ops`: every family's CPU op timed at small shapes, the ceilings
// measured, the table printed. On a machine without a GPU, --device cuda is a clear error.
TEST_F(Subcommands, BenchOps) {
  auto r = run_opd("bench ops --device cpu --quick" + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("ceilings measured now"), std::string::npos) << r.output;
  for (const char* op : {"attention_forward", "attention_backward", "reverse_kl_full", "logprobs_forward"})
    EXPECT_NE(r.output.find(op), std::string::npos) << op << "\n" << r.output;
  EXPECT_NE(r.output.find("0 checks failed"), std::string::npos) << r.output;

  r = run_opd("bench ops --op nonsense");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--op: unknown family 'nonsense'"), std::string::npos) << r.output;
  r = run_opd("bench ops --device cuda --quick");
  if (r.code != 0) EXPECT_NE(r.output.find("--device cuda"), std::string::npos) << r.output;
}

TEST_F(Subcommands, ConfigFileWithCommandLineOverride) {
  const std::string ini = dir_ + "/run.ini", out = dir_ + "/ini_run";
  std::ofstream(ini) << "steps = 5\nprompts-per-step = 2\nsamples-per-prompt = 2\neval-every = 0\n";
  auto r = run_opd("rl --config " + ini + " --steps 1 --student " + kStudent + data() + " --out " + out + kThreads);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(count_lines(out + "/metrics.jsonl"), 2);  // --steps 1 on the command line wins
  EXPECT_NE(read_file(out + "/config.ini").find("prompts-per-step = 2"), std::string::npos);
  std::ofstream(ini) << "stepz = 5\n";
  r = run_opd("rl --config " + ini + " --student " + kStudent + data() + " --out " + out + "2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("stepz"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace opd
