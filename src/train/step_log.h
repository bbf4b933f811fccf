// What a training step reports: its line of metrics.jsonl, the progress line on stderr, and the
// rollouts written to samples/ (docs/ARCHITECTURE.md §7).
#pragma once
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "tasks/dataset.h"
#include "train/rollout.h"
#include "train/step_sums.h"
#include "train/trainer.h"

namespace opd {

// The step's means from its sums over the DP group: rollout (when the step sampled), loss,
// log-probs, entropy and KL, as the method has them.
void add_step_metrics(json& line, const StepSums& sums, const TrainConfig& config, bool sampled);

// "loss 0.1234 | kl 0.321 | reward 0.25 | eval acc 0.5 | 1234 tok/s", from the metrics line.
std::string progress_fields(const json& line);

// The first `n` sequences of a step: prompt, completion, reward, per-token student log-probs
// while sampling and the teacher's (teacher_logp, one row per sequence, may be shorter).
json sample_rows(const std::vector<Example>& examples, const Rollout& rollout,
                 const std::vector<std::vector<float>>& teacher_logp, int n);

}  // namespace opd
