// Whole `mpirun opd ...` jobs on the shipped models: the rank layout table and its errors; data
// parallelism and dedicated teacher ranks reproduce the single process (same sampled tokens,
// losses within 1e-5 relative, same final parameters within float tolerance); a rank that dies
// or fails brings the whole job down with a non-zero exit that names it.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "e2e/run.h"
#include "io/model_file.h"
#include "parallel/gpu_binding.h"

namespace opd {
namespace {

using nlohmann::json;
using testing::read_file;
using testing::Result;
using testing::temp_dir;

// Open MPI refuses root without these (test containers run as root); one thread per rank, since
// the ranks share the machine's cores.
Result run_mpi(int np, const std::string& args, const std::string& env = "") {
  const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " + env + " " +
                          OPD_MPIEXEC + " -n " + std::to_string(np) +
                          " --oversubscribe " + OPD_BINARY + " " + args + " 2>&1";
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<json> metrics(const std::string& run) {
  std::vector<json> lines;
  std::stringstream ss(read_file(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

class Jobs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = temp_dir("mpi_jobs");
    ASSERT_EQ(testing::run_opd("data arith --n 128 --seed 5 --out " + dir_ + "/train.jsonl").code, 0);
    ASSERT_EQ(testing::run_opd("data arith --n 12 --seed 6 --out " + dir_ + "/eval.jsonl").code, 0);
  }
  static std::string distill(const std::string& out, const std::string& extra = "") {
    return "distill --student models/student-base.h5 --teacher models/teacher.h5 --prompts " + dir_ +
           "/train.jsonl --eval " + dir_ + "/eval.jsonl --steps 3 --prompts-per-step 6 --samples-per-prompt 2 "
           "--micro-batch 4 --eval-every 3 --lr 2e-3 --threads 1 --overwrite --out " + out + " " + extra;
  }
  // The run in `other` against the single process in `one`.
  static void expect_same_run(const std::string& one, const std::string& other, const std::string& what) {
    const auto a = metrics(one), b = metrics(other);
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 1; i < a.size(); ++i) {
      EXPECT_EQ(a[i]["tokens"], b[i]["tokens"]) << what << " step " << i;
      EXPECT_EQ(a[i]["completion_length"], b[i]["completion_length"]) << what << " step " << i;
      EXPECT_EQ(a[i]["reward"], b[i]["reward"]) << what << " step " << i;
      for (const char* k : {"loss", "kl", "logp_teacher", "entropy", "kl_exact"}) {
        ASSERT_EQ(a[i].contains(k), b[i].contains(k)) << what << " " << k;
        if (!a[i].contains(k)) continue;
        const double x = a[i][k].get<double>(), y = b[i][k].get<double>();
        EXPECT_NEAR(x, y, 1e-5 * std::abs(x)) << what << " step " << i << " " << k;
      }
    }
    // After the updates the parameters differ in the last digits (see below), so does the eval KL.
    EXPECT_EQ(a.back()["eval_accuracy"], b.back()["eval_accuracy"]) << what;
    const double kl_a = a.back()["eval_kl"].get<double>(), kl_b = b.back()["eval_kl"].get<double>();
    EXPECT_NEAR(kl_a, kl_b, 1e-4 * kl_a) << what;
    // The sampled tokens of the step's first sequences, and the teacher's scores of them.
    const auto sa = json::parse(testing::last_line(one + "/samples/step_000001.jsonl"));
    const auto sb = json::parse(testing::last_line(other + "/samples/step_000001.jsonl"));
    EXPECT_EQ(sa["completion"], sb["completion"]) << what;
    EXPECT_EQ(sa["logp_teacher"], sb["logp_teacher"]) << what;
    const auto ma = load_model(one + "/final.h5"), mb = load_model(other + "/final.h5");
    double worst = 0;
    for (size_t i = 0; i < ma->params().size(); ++i)
      worst = std::max(worst, double(std::abs(ma->params()[i] - mb->params()[i])));
    // Gradients summed in another order differ by ~1e-7 relative; AdamW divides by sqrt(v), so on
    // components with tiny gradients that becomes a visible fraction of lr (2e-3) per step.
    EXPECT_LE(worst, 2e-4) << what << ": final parameters";
  }
  static std::string dir_;
};
std::string Jobs::dir_;

TEST_F(Jobs, DryRunPrintsTheLayoutTable) {
  const auto r = run_mpi(3, distill(dir_ + "/dry", "--teacher-ranks 1 --dry-run"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("# rank layout: world 3 = 2 student ranks (tp 1 x dp 2) + 1 teacher ranks (1 replicas x "
                          "teacher-tp 1)"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("   1  student  tp 0 dp 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("   2  teacher  replica 0 tp 0           2  cpu        "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("# node-local ranks from OMPI_COMM_WORLD_LOCAL_RANK\n"), std::string::npos) << r.output;
}

TEST_F(Jobs, DeviceCudaWithoutAGpuStopsEveryRankNamingIt) {
  if (opd::visible_gpu_count() > 0) GTEST_SKIP() << "a GPU is visible";
  auto r = run_mpi(2, distill(dir_ + "/dry", "--device cuda --dry-run"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("   1  student  tp 0 dp 1                1  cuda:none  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("# --device cuda: 2 of 2 ranks see no CUDA device"), std::string::npos) << r.output;
  // What each GPU would hold, planned from the shapes and the data without loading a weight.
  EXPECT_NE(r.output.find("memory planned per GPU for micro-batches of 4 x "), std::string::npos) << r.output;
  for (const char* line : {"# student:\n  weights (bf16) ", "  optimizer state ", "  KV cache ",
                           "# colocated teacher (on the student's GPU):\n", "# student + colocated teacher: "})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  // --tp 2: each GPU holds half of the student's parameters (and their optimizer state).
  const auto student_state = [](const std::string& out) {
    const size_t at = out.find("  optimizer state ", out.find("# student:"));
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 18));
  };
  const double whole = student_state(r.output);
  r = run_mpi(2, distill(dir_ + "/dry", "--device cuda --tp 2 --dry-run"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NEAR(student_state(r.output), whole / 2, 0.1 * whole) << r.output;  // printed to 0.1 MiB
  r = run_mpi(3, distill(dir_ + "/dry", "--device cuda --teacher-ranks 1 --dry-run"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("# teacher rank:\n  weights (bf16) "), std::string::npos) << r.output;
  r = run_mpi(2, distill(dir_ + "/nogpu", "--device cuda"));
  EXPECT_NE(r.code, 0);
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(r.output.find("--device cuda: rank " + std::to_string(rank) + " on host "), std::string::npos)
        << r.output;
  EXPECT_NE(r.output.find("sees no CUDA device"), std::string::npos) << r.output;
}

TEST_F(Jobs, LayoutErrorsNameTheNumbers) {
  auto r = run_mpi(3, distill(dir_ + "/bad", "--tp 2 --dp 2 --dry-run"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--tp 2 x --dp 2 = 4 student ranks, but world 3 - teacher ranks 0 = 3"), std::string::npos)
      << r.output;
  r = run_mpi(3, distill(dir_ + "/bad", "--tp 3 --dry-run"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--tp = 3 does not divide the student's n_heads = 4"), std::string::npos) << r.output;
}

TEST_F(Jobs, TeacherRanksCheckTheStudentsTokenizer) {
  const auto r = run_mpi(2, "distill --student models/student-base.h5 --teacher tests/fixtures/qwen3_tiny.h5 "
                            "--teacher-ranks 1 --steps 1 --threads 1 --overwrite --prompts " + dir_ +
                            "/train.jsonl --out " + temp_dir("tokenizer"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("opd: error on rank 0: teacher and student must share one tokenizer"), std::string::npos)
      << r.output;
}

TEST_F(Jobs, DataParallelAndTeacherRanksMatchOneProcess) {
  const std::string one = temp_dir("one");
  auto r = testing::run_opd(distill(one, "--kl full"));
  ASSERT_EQ(r.code, 0) << r.output;
  struct Layout {
    int np;
    const char* options;
    const char* name;
  } layouts[] = {{2, "", "dp 2"},
                 {2, "--teacher-ranks 1", "1 teacher rank + 1 student"},
                 {4, "--teacher-ranks 2", "2 teacher replicas + dp 2"},
                 {2, "--tp 2", "tp 2"},
                 {4, "--tp 2 --dp 2", "tp 2 x dp 2"},
                 {3, "--teacher-ranks 1 --tp 2", "1 teacher rank + tp 2"},
                 {3, "--teacher-ranks 2 --teacher-tp 2", "a teacher replica over 2 ranks + 1 student"}};
  for (const auto& l : layouts) {
    const std::string out = temp_dir(std::string("layout_") + std::to_string(&l - layouts));
    r = run_mpi(l.np, distill(out, std::string("--kl full ") + l.options));
    ASSERT_EQ(r.code, 0) << l.name << "\n" << r.output;
    expect_same_run(one, out, l.name);
    if (std::string(l.options).find("teacher-ranks") != std::string::npos) {
      EXPECT_NE(r.output.find("scoring requests"), std::string::npos) << r.output;
      const auto m = metrics(out);
      EXPECT_TRUE(m.back().contains("overlap")) << m.back().dump();
      EXPECT_TRUE(m.back()["time"].contains("wait_teacher"));
    }
  }
}

TEST_F(Jobs, SampledAndTopKScoresFromATeacherRankMatchColocated) {
  for (const std::string kl : {"sampled", "topk:4"}) {
    const std::string one = temp_dir("one_" + kl.substr(0, 4)), two = temp_dir("t1_" + kl.substr(0, 4));
    auto r = testing::run_opd(distill(one, "--kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_mpi(3, distill(two, "--teacher-ranks 1 --kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    expect_same_run(one, two, "teacher rank + dp 2, kl " + kl);
    // Vocabulary-parallel student and teacher: a TP-2 teacher replica scores a TP-2 student.
    const std::string four = temp_dir("tp_" + kl.substr(0, 4));
    r = run_mpi(4, distill(four, "--teacher-ranks 2 --teacher-tp 2 --tp 2 --kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    expect_same_run(one, four, "tp 2 student + teacher-tp 2 replica, kl " + kl);
  }
}

// Shared-prefix scoring on a teacher rank is the colocated shared-prefix scoring, and within
// float rounding of scoring every row in full.
TEST_F(Jobs, SharedPrefixScoringOnATeacherRank) {
  const std::string full = temp_dir("sp_full"), one = temp_dir("sp_one"), two = temp_dir("sp_t1");
  auto r = testing::run_opd(distill(full, "--kl full"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = testing::run_opd(distill(one, "--kl full --shared-prefix"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_mpi(2, distill(two, "--kl full --shared-prefix --teacher-ranks 1"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_run(one, two, "shared prefix: teacher rank vs colocated");
  // The same with the teacher sharded: a TP-2 replica, and colocated on a TP-2 student.
  const std::string three = temp_dir("sp_ttp2"), four = temp_dir("sp_tp2");
  r = run_mpi(3, distill(three, "--kl full --shared-prefix --teacher-ranks 2 --teacher-tp 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_run(one, three, "shared prefix: a teacher replica over 2 ranks vs colocated");
  r = run_mpi(2, distill(four, "--kl full --shared-prefix --tp 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_run(one, four, "shared prefix: tp 2 vs one process");
  const auto a = metrics(full), b = metrics(one);
  EXPECT_NEAR(a[1]["loss"].get<double>(), b[1]["loss"].get<double>(), 1e-4 * std::abs(a[1]["loss"].get<double>()));
  EXPECT_LT(b[1]["flops"]["score"].get<double>(), a[1]["flops"]["score"].get<double>());
}

// SIGTERM reaching one student only: every rank stops at the same step, rank 0 checkpoints, the
// job exits 75; the resumed job ends where an uninterrupted one does, parameter for parameter.
TEST_F(Jobs, SignalOnOneRankCheckpointsAllAndResumes) {
  const std::string whole = temp_dir("whole"), cut = temp_dir("cut");
  auto r = run_mpi(3, distill(whole, "--teacher-ranks 1"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_mpi(3, distill(cut, "--teacher-ranks 1"), "OPD_FAULT_SIGNAL_AT_STEP=2 OPD_FAULT_RANK=1");
  EXPECT_EQ(r.code, 75) << r.output;
  EXPECT_NE(r.output.find("checkpointed step 2"), std::string::npos) << r.output;
  r = run_mpi(3, distill(cut, "--teacher-ranks 1 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_EQ(testing::last_line(whole + "/metrics.jsonl").substr(0, 120),
            testing::last_line(cut + "/metrics.jsonl").substr(0, 120));
  const auto a = load_model(whole + "/final.h5"), b = load_model(cut + "/final.h5");
  EXPECT_EQ(a->params(), b->params());
}

// The same under tensor parallelism: the shards are written as whole tensors and read back as
// shards, and the resumed run is bit-identical; the tp-2 checkpoint also resumes in one process.
TEST_F(Jobs, TensorParallelRunResumesBitIdentically) {
  const std::string whole = temp_dir("tp_whole"), cut = temp_dir("tp_cut"), one = temp_dir("tp_one");
  auto r = run_mpi(2, distill(whole, "--tp 2 --save-every 1"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_mpi(2, distill(cut, "--tp 2"), "OPD_FAULT_SIGNAL_AT_STEP=2 OPD_FAULT_RANK=1");
  EXPECT_EQ(r.code, 75) << r.output;
  r = run_mpi(2, distill(cut, "--tp 2 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_EQ(testing::last_line(whole + "/metrics.jsonl").substr(0, 120),
            testing::last_line(cut + "/metrics.jsonl").substr(0, 120));
  EXPECT_EQ(load_model(whole + "/final.h5")->params(), load_model(cut + "/final.h5")->params());
  // Resharded: the step-2 checkpoint of the tp-2 run continues in one process.
  r = testing::run_opd(distill(one, "--resume " + whole + "/checkpoints/step_000002.h5"));
  ASSERT_EQ(r.code, 0) << r.output;
  const json a = metrics(whole).back(), b = metrics(one).back();
  ASSERT_EQ(a["step"], 3);
  ASSERT_EQ(b["step"], 3);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_NEAR(a["loss"].get<double>(), b["loss"].get<double>(), 1e-5 * std::abs(a["loss"].get<double>()));
}

// A TP rank dying inside the collective write of a checkpoint (or rank 0 before the rename)
// leaves the previous checkpoint, and --resume auto completes the run to the uninterrupted result.
TEST_F(Jobs, CrashInsideATensorParallelSaveLeavesThePreviousCheckpoint) {
  const std::string whole = temp_dir("tpc_whole");
  auto r = run_mpi(2, distill(whole, "--tp 2 --save-every 1"));
  ASSERT_EQ(r.code, 0) << r.output;
  for (const std::string drill : {"OPD_FAULT_MID_SAVE", "OPD_FAULT_BEFORE_RENAME"}) {
    const std::string cut = temp_dir("tpc_" + drill);
    r = run_mpi(2, distill(cut, "--tp 2 --save-every 1"), drill + "=2");
    EXPECT_NE(r.code, 0) << drill << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(cut + "/checkpoints/step_000002.h5")) << drill;
    EXPECT_TRUE(std::filesystem::exists(cut + "/checkpoints/step_000001.h5")) << drill;
    r = run_mpi(2, distill(cut, "--tp 2 --save-every 1 --resume auto"));
    ASSERT_EQ(r.code, 0) << drill << "\n" << r.output;
    EXPECT_NE(r.output.find("step_000001.h5 (step 1)"), std::string::npos) << r.output;
    EXPECT_EQ(load_model(whole + "/final.h5")->params(), load_model(cut + "/final.h5")->params()) << drill;
  }
}

// opd bench step runs the layout it is given and prints its table (figures are not checked: a
// benchmark is not a test of speed).
TEST_F(Jobs, BenchStepPrintsThePhaseTable) {
  const auto r = run_mpi(2, "bench step --teacher-ranks 1 --steps 2 --prompts-per-step 16 --micro-batch 8 --threads 1 "
                            "--out " + temp_dir("bench_step"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("bench step: 2 ranks (--teacher-ranks 1 --teacher-tp 1 --tp 1 --dp 0)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(" mean "), std::string::npos) << r.output;
}

// The fault drills: each must end the job non-zero, naming the failing rank. ctest's timeout on
// this test bounds how long that may take; the output reports the time measured.
TEST_F(Jobs, AFailingOrKilledRankEndsTheJob) {
  struct Drill {
    int np;
    const char* layout;
    const char* env;
    const char* expect;
  } drills[] = {
      {3, "--teacher-ranks 1", "OPD_FAULT_TEACHER_KILL_AT_REQUEST=3", "process rank 2 with PID"},  // the teacher, SIGKILL
      {3, "--teacher-ranks 1", "OPD_FAULT_KILL_AT_STEP=2 OPD_FAULT_RANK=1", "process rank 1 with PID"},  // a student
      {3, "--teacher-ranks 1", "OPD_FAULT_THROW_AT_STEP=2 OPD_FAULT_RANK=1",
       "opd: error on rank 1: step 2: fault-injection drill"},
      // Tensor parallelism: a TP student rank, and a teacher replica's second rank, killed mid-run.
      {3, "--teacher-ranks 1 --tp 2", "OPD_FAULT_KILL_AT_STEP=2 OPD_FAULT_RANK=1", "process rank 1 with PID"},
      {3, "--teacher-ranks 2 --teacher-tp 2", "OPD_FAULT_TEACHER_KILL_AT_REQUEST=3 OPD_FAULT_RANK=2",
       "process rank 2 with PID"},
  };
  for (const auto& d : drills) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = run_mpi(d.np, distill(temp_dir("fault"), d.layout), d.env);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ drill ] %s %s: exit %d after %.1f s\n", d.layout, d.env, r.code, s);
    EXPECT_NE(r.code, 0) << d.env << "\n" << r.output;
    EXPECT_NE(r.output.find(d.expect), std::string::npos) << d.env << "\n" << r.output;
  }
}

}  // namespace
}  // namespace opd
