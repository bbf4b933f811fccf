// Whole `mpirun opd ...` jobs on the shipped models: the rank layout table and its errors; data
// parallelism, tensor parallelism and dedicated teacher ranks reproduce the single process step by
// step (below: from the same state, the same sampled tokens up to a rare rounding flip, and
// metrics, teacher scores and the update within fp32 rounding); a rerun or resumed run of one
// layout is bit-identical; a rank that dies or fails brings the whole job down with a non-zero
// exit that names it.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/rounding.h"
#include "e2e/run.h"
#include "io/checkpoint.h"
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

std::string step_file(const std::string& run, const char* folder, int step, const char* ext) {
  char name[64];
  std::snprintf(name, sizeof(name), "/%s/step_%06d.%s", folder, step, ext);
  return run + name;
}

// The metrics line of `step`, or null.
json step_metrics(const std::string& run, int step) {
  for (const json& m : metrics(run))
    if (m["step"] == step) return m;
  return nullptr;
}

std::vector<json> step_samples(const std::string& run, int step) {
  std::vector<json> rows;
  std::stringstream ss(read_file(step_file(run, "samples", step, "jsonl")));
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

// ---- A layout against one process, step by step --------------------------------------------
// A layout computes the same sums as one process in another order (its GEMMs have other shapes,
// TP adds partial sums over ranks, DP adds gradients over replicas), so it is bit-identical to
// nothing but itself. What the code guarantees, and what is checked, one step at a time from the
// same state: step 1 from the model files, step k from the layout's own checkpoint of step k-1,
// which one process resumes for that one step (the replay):
// - the same sampled tokens, up to a flip: a token is drawn by inverse CDF from a uniform keyed by
//   (seed, step, sequence, position), and logits that agree to rounding pick another token only
//   when the uniform falls between the two CDFs. Measured on these models (student logits within
//   1e-5 of ~10 between TP 2 and one process, or one process at another batch size) that chance
//   is under 1e-6 a token, ~3e-4 for a step's ~400 tokens. A step may therefore differ in one
//   logged sequence (a flip; under DP the writer logs its own shard only, so a flip elsewhere
//   shows in the step's counts), and one step of a run may flip; two (p ~ 3e-7) fail. A wiring
//   bug (another RNG key, data shard or teacher reply) changes most sequences of every step.
// - on a step without a flip: the step's counts exactly, its metrics and the teacher's and the
//   student's per-token log-probs within kMetricsTol / kScoresTol, the gradient (recovered from
//   the AdamW moments in the checkpoints) within kGradientsTol, and the update within AdamW's
//   spread over that gradient gap (tests/common/rounding.h: adamw_bounds).
// Whole trajectories are not compared: a step that flips a token, or a gradient that rounds
// differently near 0 (AdamW divides by sqrt(v)), parts them for good.
//
// Tolerances (tests/common/rounding.h), as fractions of the compared quantity's magnitude. The
// teacher (4 layers, ffn 384) ends the longest chain: its log-probs come after 43 sums (10 a layer,
// then the final norm, the LM head and the log-sum-exp) of at most 384 terms. A step's metrics
// are means over its rows (12 sequences of at most 64 positions: 768) of per-token functions of
// both models' log-probs; its gradient runs back through the student (2 layers, ffn 192: 23 sums
// forward, 23 back) from the teacher's scores, then sums over the 768 rows.
const double kScoresTol = testing::chain_tolerance(43, 384);            // ~2.0e-3
const double kMetricsTol = testing::chain_tolerance(44, 768);           // ~4.0e-3
const double kGradientsTol = testing::chain_tolerance(43 + 46 + 1, 768);  // ~8.2e-3
// What the compared runs train with (the distill options below; AdamW's defaults otherwise).
constexpr float kLr = 2e-3f, kBeta1 = 0.9f, kBeta2 = 0.99f, kEps = 1e-8f;

// Per-token log-probs of two identical sequences, as written (rounded to 1e-4): within
// kScoresTol of the largest magnitude (log-probs are differences of logits and a log-sum-exp,
// each as exact as the largest logit), plus the rounding of the text.
void expect_same_logps(const json& a, const json& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(a[i].get<double>()));
    worst = std::max(worst, std::abs(a[i].get<double>() - b[i].get<double>()));
  }
  const double allowed = 2 * kScoresTol * scale + 1e-4;
  testing::show_rounding(what, worst, allowed);
  EXPECT_LE(worst, allowed) << what << ": " << a.dump() << "\nvs " << b.dump();
}

// The parameters and moments a checkpoint holds, in the whole model's layout.
struct State {
  std::vector<float> params, m, v;
  std::vector<unsigned char> decay;
};

State state_at(const std::string& run, int step) {
  Checkpoint c = load_checkpoint(step_file(run, "checkpoints", step, "h5"));
  State s{c.model->params(), std::move(c.adam_m), std::move(c.adam_v), {}};
  for (const ParamSpec& p : c.model->specs()) s.decay.insert(s.decay.end(), p.size, p.decay ? 1 : 0);
  return s;
}

// The scaled gradient each side applied at update k, recovered from its moments (m_k = beta1
// m_{k-1} + (1 - beta1) g) to within `slack` (the float rounding of those two products and sum).
std::vector<double> applied_gradient(const State& before, const State& after, std::vector<double>* slack) {
  std::vector<double> g(after.m.size());
  for (size_t i = 0; i < g.size(); ++i) {
    const double carried = double(kBeta1) * before.m[i];
    g[i] = (after.m[i] - carried) / (1 - double(kBeta1));
    (*slack)[i] += 2 * testing::kUnitRoundoff * (std::abs(carried) + std::abs(after.m[i])) / (1 - double(kBeta1));
  }
  return g;
}

// Update k of the layout against the replay's, both from `before`.
void expect_same_update(const State& before, const State& one, const State& layout, int k, const std::string& what) {
  const size_t n = before.params.size();
  ASSERT_EQ(one.params.size(), n);
  ASSERT_EQ(layout.params.size(), n);
  std::vector<double> slack(n, 0.0);
  const std::vector<double> g1 = applied_gradient(before, one, &slack), gl = applied_gradient(before, layout, &slack);
  std::vector<double> eta(n);
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; ++i) {
    eta[i] = std::abs(gl[i] - g1[i]) + slack[i];
    scale = std::max(scale, std::abs(g1[i]));
    worst = std::max(worst, std::abs(gl[i] - g1[i]));
  }
  testing::show_rounding(what + ": gradient", worst / scale, kGradientsTol);
  EXPECT_LE(worst, kGradientsTol * scale) << what << ": the gradients differ by " << worst << " of " << scale;
  testing::AdamWState s{before.params, before.m, before.v, std::vector<float>(g1.begin(), g1.end()), before.decay,
                        kLr, kBeta1, kBeta2, kEps, 0.0f, k, 1.0f};
  const testing::AdamWBounds b = testing::adamw_bounds(s, eta);
  testing::expect_within(layout.params, one.params, b.params, what + ": parameters");
  testing::expect_within(layout.v, one.v, b.v, what + ": second moments");
}

// Step k of the layout's run against the same step of one process from the same state (`one`:
// the fresh run for k = 1, else the replay). Returns whether a sampled token differed.
bool expect_same_step(const std::string& one, const std::string& layout, int k, const std::string& what) {
  const json a = step_metrics(one, k), b = step_metrics(layout, k);
  if (a.is_null() || b.is_null()) {
    ADD_FAILURE() << what << ": no metrics of step " << k;
    return false;
  }
  // The sequences both logged (the writer logs its DP shard's, the step's first).
  const std::vector<json> sa = step_samples(one, k), sb = step_samples(layout, k);
  const size_t n = std::min(sa.size(), sb.size());
  EXPECT_GE(n, 6u) << what << ": step " << k << " logged too few samples";
  int differ = 0;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(sa[i]["prompt"], sb[i]["prompt"]) << what << ": step " << k << " sequence " << i;
    if (sa[i]["completion"] != sb[i]["completion"]) {
      ++differ;
      continue;
    }
    const std::string seq = what + ": step " + std::to_string(k) + " sequence " + std::to_string(i);
    expect_same_logps(sa[i]["logp_teacher"], sb[i]["logp_teacher"], seq + " teacher log-probs");
    expect_same_logps(sa[i]["logp_student"], sb[i]["logp_student"], seq + " student log-probs");
  }
  bool flipped = differ > 0;
  for (const char* key : {"samples", "tokens", "completion_length", "truncated", "reward"})
    flipped |= a[key] != b[key];
  if (flipped) {
    // A flip changes one sequence; the logged ones show it unless it is in another DP shard.
    EXPECT_LE(differ, 1) << what << ": step " << k << ": " << differ << " of " << n
                         << " sequences sampled other tokens from the same state";
    std::printf("[ flip ] %s: step %d sampled another token in %d of %zu logged sequences (tokens %s vs %s)\n",
                what.c_str(), k, differ, n, a["tokens"].dump().c_str(), b["tokens"].dump().c_str());
    return true;
  }
  for (const char* key : {"loss", "kl", "kl_exact", "entropy", "logp_student", "logp_teacher", "grad_norm"}) {
    EXPECT_EQ(a.contains(key), b.contains(key)) << what << ": " << key;
    if (a.contains(key) && b.contains(key))
      testing::expect_near_rel(b[key].get<double>(), a[key].get<double>(), kMetricsTol,
                               what + ": step " + std::to_string(k) + " " + key);
  }
  const State before = k == 1 ? [] {
    auto m = load_model("models/student-base.h5");
    State s{m->params(), std::vector<float>(m->params().size()), std::vector<float>(m->params().size()), {}};
    for (const ParamSpec& p : m->specs()) s.decay.insert(s.decay.end(), p.size, p.decay ? 1 : 0);
    return s;
  }() : state_at(layout, k - 1);
  expect_same_update(before, state_at(one, k), state_at(layout, k), k, what + ": update " + std::to_string(k));
  return false;
}

class Jobs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = temp_dir("mpi_jobs");
    ASSERT_EQ(testing::run_opd("data arith --n 128 --seed 5 --out " + dir_ + "/train.jsonl").code, 0);
    ASSERT_EQ(testing::run_opd("data arith --n 12 --seed 6 --out " + dir_ + "/eval.jsonl").code, 0);
  }
  static std::string options(const std::string& out, const std::string& extra, int steps, const std::string& logging) {
    return "distill --student models/student-base.h5 --teacher models/teacher.h5 --prompts " + dir_ +
           "/train.jsonl --eval " + dir_ + "/eval.jsonl --steps " + std::to_string(steps) +
           " --prompts-per-step 6 --samples-per-prompt 2 --micro-batch 4 --lr 2e-3 --threads 1 --overwrite " + logging +
           " --out " + out + " " + extra;
  }
  static std::string distill(const std::string& out, const std::string& extra = "") {
    return options(out, extra, 3, "--eval-every 3");
  }
  // A run compared step by step: a checkpoint, an evaluation and every sample logged at each step.
  static std::string compared(const std::string& out, const std::string& extra, int steps = 3) {
    return options(out, extra, steps, "--eval-every 1 --save-every 1 --keep-last 5 --samples-to-log 12");
  }
  // The layout's run in `layout` (made with compared(..., extra)) against one process: `one`,
  // the one-process run of compared(..., one_extra), for step 1 and the evaluation before it;
  // steps 2 and 3 replayed in one process from the layout's checkpoints.
  static void expect_same_steps(const std::string& one, const std::string& one_extra, const std::string& layout,
                                const std::string& what) {
    const json a = step_metrics(one, 0), b = step_metrics(layout, 0);
    ASSERT_FALSE(a.is_null() || b.is_null()) << what << ": no evaluation at step 0";
    // The same parameters evaluated (greedy) by another layout.
    EXPECT_EQ(a["eval_accuracy"], b["eval_accuracy"]) << what;
    testing::expect_near_rel(b["eval_kl"].get<double>(), a["eval_kl"].get<double>(), kMetricsTol,
                             what + ": evaluation KL at step 0");
    int flips = expect_same_step(one, layout, 1, what);
    for (int k = 2; k <= 3; ++k) {
      const std::string replay = layout + "_replay" + std::to_string(k);
      const auto r = testing::run_opd(compared(replay, one_extra + " --resume " +
                                                           step_file(layout, "checkpoints", k - 1, "h5"), k));
      ASSERT_EQ(r.code, 0) << what << ": replay of step " << k << "\n" << r.output;
      flips += expect_same_step(replay, layout, k, what);
    }
    EXPECT_LE(flips, 1) << what << ": sampled tokens differed from the same state at " << flips
                        << " of 3 steps (a step's chance is ~3e-4)";
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
#ifdef OPD_WITH_CUDA
  EXPECT_NE(r.output.find("sees no CUDA device"), std::string::npos) << r.output;
#else
  EXPECT_NE(r.output.find("this opd was built without CUDA"), std::string::npos) << r.output;
#endif
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
  auto r = testing::run_opd(compared(one, "--kl full"));
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
    r = run_mpi(l.np, compared(out, std::string("--kl full ") + l.options));
    ASSERT_EQ(r.code, 0) << l.name << "\n" << r.output;
    expect_same_steps(one, "--kl full", out, l.name);
    if (std::string(l.options).find("teacher-ranks") != std::string::npos) {
      EXPECT_NE(r.output.find("scoring requests"), std::string::npos) << r.output;
      const auto m = metrics(out);
      EXPECT_TRUE(m.back().contains("overlap")) << m.back().dump();
      EXPECT_TRUE(m.back()["time"].contains("wait_teacher"));
    }
  }
}

// The same layout run twice is the same run, bit for bit: its sums have one order (the teacher
// rank's replies arrive at other times, but each micro-batch is trained in its turn).
TEST_F(Jobs, ALayoutRerunIsBitIdentical) {
  const std::string a = temp_dir("rerun_a"), b = temp_dir("rerun_b");
  for (const std::string& out : {a, b}) {
    const auto r = run_mpi(3, distill(out, "--teacher-ranks 1 --tp 2 --kl full"));
    ASSERT_EQ(r.code, 0) << r.output;
  }
  auto without_timing = [](std::vector<json> lines) {
    for (json& l : lines) {
      l.erase("time");
      l.erase("tokens_per_s");
      l.erase("overlap");  // how long the student waited for the teacher rank: a time
    }
    return lines;
  };
  EXPECT_EQ(without_timing(metrics(a)), without_timing(metrics(b)));
  EXPECT_EQ(read_file(a + "/samples/step_000001.jsonl"), read_file(b + "/samples/step_000001.jsonl"));
  EXPECT_EQ(load_model(a + "/final.h5")->params(), load_model(b + "/final.h5")->params());
}

TEST_F(Jobs, SampledAndTopKScoresFromATeacherRankMatchColocated) {
  for (const std::string kl : {"sampled", "topk:4"}) {
    const std::string one = temp_dir("one_" + kl.substr(0, 4)), two = temp_dir("t1_" + kl.substr(0, 4));
    auto r = testing::run_opd(compared(one, "--kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_mpi(3, compared(two, "--teacher-ranks 1 --kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    expect_same_steps(one, "--kl " + kl, two, "teacher rank + dp 2, kl " + kl);
    // Vocabulary-parallel student and teacher: a TP-2 teacher replica scores a TP-2 student.
    const std::string four = temp_dir("tp_" + kl.substr(0, 4));
    r = run_mpi(4, compared(four, "--teacher-ranks 2 --teacher-tp 2 --tp 2 --kl " + kl));
    ASSERT_EQ(r.code, 0) << r.output;
    expect_same_steps(one, "--kl " + kl, four, "tp 2 student + teacher-tp 2 replica, kl " + kl);
  }
}

// Shared-prefix scoring on a teacher rank is the colocated shared-prefix scoring, and within
// float rounding of scoring every row in full.
TEST_F(Jobs, SharedPrefixScoringOnATeacherRank) {
  const std::string full = temp_dir("sp_full"), one = temp_dir("sp_one"), two = temp_dir("sp_t1");
  const std::string sp = "--kl full --shared-prefix";
  auto r = testing::run_opd(compared(full, "--kl full"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = testing::run_opd(compared(one, sp));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_mpi(2, compared(two, sp + " --teacher-ranks 1"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_steps(one, sp, two, "shared prefix: teacher rank vs colocated");
  // The same with the teacher sharded: a TP-2 replica, and colocated on a TP-2 student.
  const std::string three = temp_dir("sp_ttp2"), four = temp_dir("sp_tp2");
  r = run_mpi(3, compared(three, sp + " --teacher-ranks 2 --teacher-tp 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_steps(one, sp, three, "shared prefix: a teacher replica over 2 ranks vs colocated");
  r = run_mpi(2, compared(four, sp + " --tp 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_steps(one, sp, four, "shared prefix: tp 2 vs one process");
  // Step 1 in one process: the student samples the same tokens bit for bit (the same arithmetic
  // from the same parameters); only the teacher's scores round differently (other GEMM shapes).
  const json a = step_metrics(full, 1), b = step_metrics(one, 1);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  testing::expect_near_rel(b["loss"].get<double>(), a["loss"].get<double>(), kMetricsTol, "shared prefix: loss");
  EXPECT_LT(b["flops"]["score"].get<double>(), a["flops"]["score"].get<double>());
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
  auto r = run_mpi(2, compared(whole, "--tp 2"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = run_mpi(2, compared(cut, "--tp 2"), "OPD_FAULT_SIGNAL_AT_STEP=2 OPD_FAULT_RANK=1");
  EXPECT_EQ(r.code, 75) << r.output;
  r = run_mpi(2, compared(cut, "--tp 2 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  EXPECT_EQ(testing::last_line(whole + "/metrics.jsonl").substr(0, 120),
            testing::last_line(cut + "/metrics.jsonl").substr(0, 120));
  EXPECT_EQ(load_model(whole + "/final.h5")->params(), load_model(cut + "/final.h5")->params());
  // Resharded: the step-2 checkpoint of the tp-2 run continues in one process, whose step 3 is
  // the tp-2 run's from the same state (to rounding, as above).
  r = testing::run_opd(compared(one, "--resume " + whole + "/checkpoints/step_000002.h5"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  expect_same_step(one, whole, 3, "tp 2 checkpoint resumed in one process");
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
