// The evaluations of a training run (docs/ARCHITECTURE.md §1): every eval set, its examples sharded over
// the data-parallel group, reported in the step's metrics line and in the run's summary.
#pragma once
#include <vector>

#include "core/jsonl.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "tasks/builtin.h"
#include "train/eval.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"

namespace opd {

class RunEvaluation {
 public:
  // teacher: where the KL to the teacher comes from (null: accuracy only); dp: null without DP.
  RunEvaluation(const TrainConfig& config, const std::vector<NamedExamples>& sets, Transformer& student,
                ScoringClient* teacher, Communicator* dp);
  // Evaluates every set after step `step` (0: before training) into `line` and `state` (its eval
  // FLOPs, the summary); the first set is the primary one ("eval_accuracy", "eval_kl",
  // "eval_accuracy_sampled", the target). Returns whether this evaluation first reached the target accuracy. Collective over DP.
  bool run(int step, json& line, RunState& state);

 private:
  EvalResult evaluate_set(const std::vector<Example>& examples, ScoringClient* teacher, const EvalOptions& options);
  bool reached_target(int step, const json& line, RunState& state) const;

  const TrainConfig& c_;
  const std::vector<NamedExamples>& sets_;
  Transformer& student_;
  ScoringClient* teacher_;
  Communicator* dp_;
  EvalOptions options_;          // greedy (or --eval-temperature's) with the teacher's KL
  EvalOptions sampled_options_;  // --eval-samples: samples per problem at a temperature, no KL
};

}  // namespace opd
