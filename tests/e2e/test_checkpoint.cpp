// Checkpoints on one process: bit-exact resume after a signal, a torn or corrupt newest
// checkpoint skipped, a crash between write and rename survived, opd inspect, h5py, and the fault
// drills: a NaN loss, SIGKILL at random steps.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "io/model_file.h"
#include "common/python.h"
#include "run.h"

namespace opd {
namespace {

using testing::read_file;
using testing::run_opd;
using testing::temp_dir;

class Checkpoints : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = temp_dir("checkpoints");
    ASSERT_EQ(run_opd("data arith --n 200 --seed 5 --out " + dir_ + "/p.jsonl").code, 0);
    ASSERT_EQ(run_opd("data arith --n 16 --seed 6 --out " + dir_ + "/e.jsonl").code, 0);
  }
  static std::string dir_;
  std::string args(int steps) const {
    return "distill --student models/student-base.h5 --teacher models/teacher.h5 --prompts " + dir_ +
           "/p.jsonl --eval " + dir_ + "/e.jsonl --steps " + std::to_string(steps) +
           " --prompts-per-step 8 --samples-per-prompt 2 --eval-every 2 --lr-schedule cosine --threads 2";
  }
  // metrics.jsonl without the wall-clock fields, which no two runs share.
  static std::vector<nlohmann::json> metrics(const std::string& run) {
    std::vector<nlohmann::json> out;
    std::istringstream in(read_file(run + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("time");
      j.erase("tokens_per_s");
      out.push_back(j);
    }
    return out;
  }
  static void expect_same_model(const std::string& a, const std::string& b) {
    auto ma = load_model(a), mb = load_model(b);
    ASSERT_EQ(ma->params().size(), mb->params().size());
    EXPECT_EQ(0, std::memcmp(ma->params().data(), mb->params().data(), ma->params().size() * sizeof(float)));
  }
};
std::string Checkpoints::dir_;

TEST_F(Checkpoints, ResumeAfterSignalIsBitExact) {
  const std::string straight = dir_ + "/straight", split = dir_ + "/split";
  ASSERT_EQ(run_opd(args(6) + " --out " + straight).code, 0);
  const auto stopped = run_opd(args(6) + " --out " + split, "OPD_FAULT_SIGNAL_AT_STEP=3");
  ASSERT_EQ(stopped.code, 75) << stopped.output;  // checkpointed, please requeue
  EXPECT_NE(stopped.output.find("checkpointed step 3"), std::string::npos) << stopped.output;
  EXPECT_TRUE(nlohmann::json::parse(read_file(split + "/summary.json"))["preempted"].get<bool>());
  const auto resumed = run_opd(args(6) + " --out " + split + " --resume auto");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from"), std::string::npos) << resumed.output;
  EXPECT_EQ(metrics(straight), metrics(split));
  expect_same_model(straight + "/final.h5", split + "/final.h5");
}

TEST_F(Checkpoints, CorruptNewestIsSkippedAndKeepLastPrunes) {
  const std::string run = dir_ + "/corrupt";
  ASSERT_EQ(run_opd(args(6) + " --save-every 2 --keep-last 2 --out " + run).code, 0);
  namespace fs = std::filesystem;
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_000002.h5"));  // pruned: the newest 2 are kept
  ASSERT_TRUE(fs::exists(run + "/checkpoints/step_000004.h5"));
  {  // Tear the newest: cut it in half.
    const std::string newest = run + "/checkpoints/step_000006.h5";
    const auto size = fs::file_size(newest);
    fs::resize_file(newest, size / 2);
  }
  const auto r = run_opd(args(8) + " --out " + run + " --resume auto");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("skipping a checkpoint"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step_000004.h5 (step 4)"), std::string::npos) << r.output;
}

// A crash inside the save of step 4 (tensors half written, or the file complete but not renamed)
// leaves step 2's checkpoint, and the resumed run ends as the uninterrupted one.
TEST_F(Checkpoints, CrashInsideASaveLeavesThePreviousOne) {
  const std::string straight = dir_ + "/crash_straight";
  ASSERT_EQ(run_opd(args(6) + " --save-every 2 --out " + straight).code, 0);
  for (const std::string drill : {"OPD_FAULT_MID_SAVE", "OPD_FAULT_BEFORE_RENAME"}) {
    const std::string run = dir_ + "/crash_" + drill;
    const auto crashed = run_opd(args(6) + " --save-every 2 --out " + run, drill + "=4");
    EXPECT_EQ(crashed.code, 97) << drill << "\n" << crashed.output;
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoints/step_000004.h5.tmp")) << drill;
    EXPECT_FALSE(std::filesystem::exists(run + "/checkpoints/step_000004.h5")) << drill;
    const auto r = run_opd(args(6) + " --save-every 2 --out " + run + " --resume auto");
    ASSERT_EQ(r.code, 0) << drill << "\n" << r.output;
    EXPECT_NE(r.output.find("step_000002.h5 (step 2)"), std::string::npos) << r.output;
    EXPECT_EQ(metrics(straight), metrics(run)) << drill;
    expect_same_model(straight + "/final.h5", run + "/final.h5");
  }
}

// --init FILE starts from a checkpoint's weights only: the new run's step-0 evaluation is the
// checkpoint's, while the step count starts afresh; --run-dir is another name of --out.
TEST_F(Checkpoints, InitFromACheckpointTakesItsWeightsOnly) {
  const std::string a = dir_ + "/init_a", b = dir_ + "/init_b";
  ASSERT_EQ(run_opd(args(2) + " --save-every 2 --out " + a).code, 0);
  const std::string student = "--student models/student-base.h5";
  std::string init_args = args(1);
  init_args.replace(init_args.find(student), student.size(), "--init " + a + "/checkpoints/step_000002.h5");
  auto r = run_opd(init_args + " --run-dir " + b);
  ASSERT_EQ(r.code, 0) << r.output;
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(mb.size(), 2u) << "steps 0 and 1";
  EXPECT_EQ(mb.front()["eval_accuracy"], ma.back()["eval_accuracy"]);
  EXPECT_EQ(mb.front()["eval_kl"], ma.back()["eval_kl"]);
  r = run_opd(init_args + " " + student + " --run-dir " + b + " --overwrite");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("give either --student or --init, not both"), std::string::npos) << r.output;
  r = run_opd(args(1) + " --out " + a + " --run-dir " + b);
  EXPECT_NE(r.output.find("options --out and --run-dir name different run directories"), std::string::npos)
      << r.output;
}

TEST_F(Checkpoints, InspectVerifiesAndNamesTheBadDataset) {
  const std::string run = dir_ + "/inspect";
  ASSERT_EQ(run_opd(args(2) + " --save-every 2 --out " + run).code, 0);
  const std::string ck = run + "/checkpoints/step_000002.h5";
  auto r = run_opd("inspect " + ck);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("state: step 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("verified: all 75 tensor checksums match"), std::string::npos) << r.output;

  // Flip a byte inside one optimizer tensor (h5py finds its offset) and inspect names it.
  const std::string bad = run + "/bad.h5";
  std::filesystem::copy_file(ck, bad);
  const std::string py =
      "import h5py, sys, zlib\n"
      "f = h5py.File(sys.argv[1], 'r')\n"
      "assert f.attrs['format'] == 'opd-checkpoint' and int(f.attrs['step']) == 2\n"
      "for group in ('model', 'optimizer/m', 'optimizer/v'):\n"
      "    for name, d in f[group].items():\n"
      "        if isinstance(d, h5py.Dataset):  # h5py reads what opd wrote: opd's own checksum agrees\n"
      "            assert zlib.crc32(d[()].astype('<f4').tobytes()) == int(d.attrs['crc32']), name\n"
      "d = f['optimizer/v/model.norm.weight']\n"
      "off = d.id.get_offset(); f.close()\n"
      "b = bytearray(open(sys.argv[1], 'rb').read()); b[off + 5] ^= 0x40\n"
      "open(sys.argv[1], 'wb').write(bytes(b))\n";
  std::ofstream(run + "/flip.py") << py;
  ASSERT_EQ(testing::python_lacks("h5py"), "");
  ASSERT_EQ(std::system((testing::python() + " " + run + "/flip.py " + bad).c_str()), 0);
  r = run_opd("inspect " + bad);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("/optimizer/v/model.norm.weight: checksum mismatch"), std::string::npos) << r.output;

  r = run_opd("inspect " + dir_ + "/p.jsonl");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("not an HDF5 file"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace opd

namespace opd {
namespace {

// A NaN loss stops the run naming the step; the last checkpoint before it stays good.
TEST_F(Checkpoints, NanLossStopsNamingTheStepAndKeepsTheLastCheckpoint) {
  const std::string run = dir_ + "/nan";
  const auto r = run_opd(args(6) + " --save-every 2 --out " + run, "OPD_FAULT_NAN_AT_STEP=3");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("step 3: the loss is nan"), std::string::npos) << r.output;
  EXPECT_EQ(run_opd("inspect " + run + "/checkpoints/step_000002.h5").code, 0);
  EXPECT_FALSE(std::filesystem::exists(run + "/checkpoints/step_000004.h5"));
}

// SIGKILL in the middle of a step at random steps, for several seeds: each seed draws two steps,
// the run is killed at the first, resumed and killed again at the second, then resumed to the
// end, which must be where an uninterrupted run ends, bit for bit.
TEST_F(Checkpoints, KilledAtRandomStepsResumesToTheSameResult) {
  const std::string straight = dir_ + "/kill_straight";
  ASSERT_EQ(run_opd(args(5) + " --save-every 2 --out " + straight).code, 0);
  for (unsigned seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    const int first = std::uniform_int_distribution<int>(1, 4)(rng);
    const int second = std::uniform_int_distribution<int>(first + 1, 5)(rng);
    const std::string where = "seed " + std::to_string(seed) + ": killed at steps " + std::to_string(first) +
                              " and " + std::to_string(second);
    const std::string run = dir_ + "/kill_" + std::to_string(seed);
    const auto kill_at = [](int step) { return "OPD_FAULT_KILL_AT_STEP=" + std::to_string(step); };
    const auto killed = run_opd(args(5) + " --save-every 2 --out " + run, kill_at(first));
    EXPECT_EQ(killed.code, 128 + 9) << where << ": " << killed.output;  // the shell reports SIGKILL
    const auto again = run_opd(args(5) + " --save-every 2 --out " + run + " --resume auto", kill_at(second));
    EXPECT_EQ(again.code, 128 + 9) << where << ": " << again.output;
    const auto r = run_opd(args(5) + " --save-every 2 --out " + run + " --resume auto");
    ASSERT_EQ(r.code, 0) << where << ": " << r.output;
    EXPECT_EQ(metrics(straight), metrics(run)) << where;
    expect_same_model(straight + "/final.h5", run + "/final.h5");
  }
}

}  // namespace
}  // namespace opd
