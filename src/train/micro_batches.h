// Score, advantage and gradient (docs/ARCHITECTURE.md §1, steps 2-4; §5) for one training step, micro-batch
// by micro-batch: the teacher's scores (distill), the method's objective on the student's logits,
// and the student's backward, summed into its gradient in micro-batch order. Every token weighs 1
// here; the update scales the summed gradient by 1 / (trained tokens of the whole step), a count
// known only once every rank has sampled, so that a micro-batch can be trained on as soon as its
// scores are back.
#pragma once
#include <map>
#include <vector>

#include "model/transformer.h"
#include "tasks/dataset.h"
#include "train/scoring.h"
#include "train/step_sums.h"
#include "train/trainer.h"

namespace opd {

// Where a micro-batch's teacher scores come from.
struct MicroBatchScoring {
  ScoringClient* teacher = nullptr;  // null: no teacher (rl, sft)
  Transformer* anchor = nullptr;     // scores the examples with source 1 instead (may be null)
  // A colocated teacher on its own GPU model gets micro-batch i+1 before the student trains on i:
  // its forward runs on the teacher's stream meanwhile (train/scoring.h).
  bool prefetch = false;
};

// Micro-batch i is sequences [i * micro_batch, (i + 1) * micro_batch) of the step's sequences on
// this rank, passed to each call as they stand (they grow while a rollout goes on).
class MicroBatches {
 public:
  // Made at the start of a step: what the teacher did before (an evaluation) is not the step's.
  // examples: the step's prompts (sequence groups index them); sums: where the objective's sums
  // and the FLOPs and seconds of training and scoring go.
  MicroBatches(const TrainConfig& config, Transformer& student, const MicroBatchScoring& scoring,
               const std::vector<Example>& examples, StepSums& sums);

  // Sends the next micro-batch to the teacher now (dedicated teacher ranks score it meanwhile).
  void submit(const std::vector<Sequence>& seqs);
  // Trains on the submitted micro-batches, in order, while their scores are back (never waits).
  void train_ready(const std::vector<Sequence>& seqs);
  // Per-sequence advantages (group-relative rewards), needed before the first micro-batch trains.
  void set_advantages(std::vector<float> seq_advantages) { seq_adv_ = std::move(seq_advantages); }
  // Trains on every micro-batch not trained on yet.
  void train_rest(const std::vector<Sequence>& seqs);

  // Once every micro-batch is trained: the teachers' FLOPs, busy and waiting seconds of the step
  // into the sums (an anchor teacher is colocated: busy and waited for at once). Returns the
  // seconds this rank waited.
  double add_teacher_usage();

  // The teacher's log-probs of the first samples_to_log sequences' completion tokens (samples/).
  const std::vector<std::vector<float>>& teacher_logp() const { return teacher_logp_; }
  double train_seconds() const { return train_seconds_; }    // in train_ready and train_rest
  double anchor_seconds() const { return anchor_seconds_; }  // of those, the anchor teacher's

 private:
  size_t micro_batches(const std::vector<Sequence>& seqs) const;
  std::vector<Sequence> micro(const std::vector<Sequence>& seqs, size_t index) const;
  int ticket(const std::vector<Sequence>& seqs, size_t index);  // submitting it if not yet
  void train_next(const std::vector<Sequence>& seqs);
  // The teacher's scores of micro-batch `index` (mb, laid out as b); the anchor teacher's for anchor prompts.
  TeacherScores teacher_scores(const std::vector<Sequence>& seqs, size_t index, const std::vector<Sequence>& mb,
                               const SequenceBatch& b);
  // Keeps the rows of the first samples_to_log sequences; `first`: the micro-batch's first sequence.
  void log_teacher_logp(size_t first, const SequenceBatch& b, const TeacherScores& scores);

  const TrainConfig& c_;
  Transformer& student_;
  MicroBatchScoring scoring_;
  const std::vector<Example>& examples_;
  StepSums& sums_;
  const int pad_;
  std::vector<float> seq_adv_;
  std::map<size_t, int> tickets_;  // micro-batch -> scoring ticket
  size_t submitted_ = 0, trained_ = 0;
  std::vector<std::vector<float>> teacher_logp_;
  double train_seconds_ = 0, anchor_seconds_ = 0;
};

}  // namespace opd
