// Resuming and checkpointing a training run (docs/ARCHITECTURE.md §6), in one place: at the start, a
// checkpoint restores the student's parameters, the optimizer's moments and where the run stood;
// at a step boundary, and at the end, the ranks that hold the state write it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "io/checkpoint.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "train/optimizer.h"
#include "train/prompt_stream.h"
#include "train/run_dir.h"
#include "train/step_sums.h"
#include "train/trainer.h"

namespace opd {

// Where a run stands after its last completed step: what summary.json reports, and what a
// checkpoint stores besides the model, the optimizer and the data position.
struct RunState {
  int step = 0;  // the last completed step
  int64_t samples = 0, tokens = 0;
  Flops flops;
  json summary;  // summary.json as it stands
  // Step `step` is done: its samples, tokens and FLOPs (summed over DP) join the totals.
  void add_step(int step, const StepSums& sums);
  // The summary's totals, once the run stops after `step`, `seconds` after it started.
  void close_summary(double seconds);
};

class RunCheckpoints {
 public:
  // run: the run directory on the writer rank, null elsewhere; tp, dp: the student's groups (null: none).
  RunCheckpoints(const TrainConfig& config, RunDir* run, std::string run_path, Communicator* tp, Communicator* dp,
                 std::string name);

  // --resume: the checkpoint's parameters into the student, on the host (so before it moves to a
  // device), and where the run stood into `state` and `prompts`; metrics.jsonl loses the lines of
  // later steps. The optimizer's moments wait for restore_optimizer(). Nothing without --resume.
  void resume(Transformer& student, RunState& state, PromptStream& prompts);
  // The resumed moments and update count into the optimizer; nothing on a fresh start.
  void restore_optimizer(AdamW& opt);

  // checkpoints/step_NNNNNN.h5 after step state.step, keeping the last keep_last. Collective: every
  // DP replica must hold the same parameters; the writer (and under TP its TP group) writes.
  void save(Transformer& student, const AdamW& opt, const RunState& state, uint64_t data_cursor);
  // final.h5 after step `step`, with the same check; returns its path.
  std::string save_final(Transformer& student, int step);

 private:
  // --resume auto: the newest valid checkpoint of the run (`from` becomes its path), else the file named.
  std::optional<Checkpoint> load(std::string& from) const;
  // The host copy of the student's parameters, checked equal on every DP replica.
  void sync_replicas(Transformer& student, const std::string& when);
  // Writes the files: the writer, and under TP the rest of its TP group (DP rank 0).
  bool holds_file() const { return run_ || (tp_ && (dp_ ? dp_->rank() : 0) == 0); }

  const TrainConfig& c_;
  RunDir* run_;
  std::string run_path_;
  Communicator* tp_;
  Communicator* dp_;
  std::string name_;
  bool restore_moments_ = false;  // resume() left moments for restore_optimizer()
  std::vector<float> adam_m_, adam_v_;
  int adam_updates_ = 0;
};

}  // namespace opd
