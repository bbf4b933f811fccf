// What one training step adds up: each student rank sums over its own sequences, then the sums
// are added over the data-parallel group, and the step's metrics are read from those totals.
#pragma once
#include <cstdint>
#include <vector>

#include "core/jsonl.h"
#include "parallel/communicator.h"
#include "train/batch.h"
#include "train/objectives.h"
#include "train/rollout.h"

namespace opd {

// FLOPs by what they were spent on. The run's total leaves out evaluation (it is not training
// compute); teacher_gen is the teacher sampling SFT targets (sft --from-teacher).
struct Flops {
  double sample = 0, score = 0, train = 0, teacher_gen = 0, eval = 0;
  double total() const { return sample + score + train + teacher_gen; }
  Flops& operator+=(const Flops& o);
  json to_json() const;
  static Flops from_json(const json& j);
};

// Counts are whole numbers held as doubles, so that one all-reduce carries every field.
struct StepSums {
  TokenSums tokens;  // the objective's sums over the trained tokens (every token weighs 1)
  Flops flops;       // spent by this step (eval: none, evaluations count their own)
  // Rollout: completions cut at the length limit, their tokens, the sum of their rewards.
  double truncated = 0, completion_tokens = 0, reward = 0;
  // The step's sequences: how many, their real tokens (prompt + completion), the tokens trained on.
  double sequences = 0, seq_tokens = 0, trained_tokens = 0;
  // Seconds the teacher spent scoring and this rank spent waiting for it (once reduced: over all ranks).
  double teacher_busy = 0, teacher_wait = 0;

  void add_rollout(const Rollout& r);
  // The sequences the step trains on; all_tokens: every next token is trained (sft --all-tokens).
  void add_sequences(const std::vector<Sequence>& seqs, bool all_tokens);
  // Sums every field over the data-parallel group (nothing to do without one). Collective.
  void reduce(Communicator* dp);
  // The objective per trained token (the loss the update minimises).
  double loss() const { return tokens.loss / trained_tokens; }
};

// Prompt plus completion tokens of the sequences (what a forward over them processes).
double real_tokens(const std::vector<Sequence>& seqs);

}  // namespace opd
