// Where a step's teacher scores come from: the teacher on this rank (colocated), or dedicated
// teacher ranks (train/teacher_service.h). The trainer submits micro-batches as soon as they are
// sampled and collects the scores when it trains on them, so a remote teacher works meanwhile.
#pragma once
#include <map>
#include <memory>
#include <optional>

#include "train/teacher.h"

namespace opd {

class ScoringClient {
 public:
  virtual ~ScoringClient() = default;
  // Starts scoring a micro-batch; returns the ticket collect() takes.
  virtual int submit(const SequenceBatch& batch, const KlSpec& kl) = 0;
  // The scores of a submitted micro-batch, waiting for them when they are not back yet.
  virtual TeacherScores collect(int ticket) = 0;
  // Whether collect(ticket) would return without waiting (non-blocking).
  virtual bool ready(int ticket) { return ticket >= 0; }

  // Since the last take: seconds the teacher spent scoring, seconds this rank was blocked on it,
  // and the teacher's forward FLOPs.
  struct Usage {
    double busy = 0, wait = 0, flops = 0;
  };
  Usage take_usage() {
    const Usage u = usage_;
    usage_ = {};
    return u;
  }

 protected:
  Usage usage_;
};

// The teacher in this process. On the CPU, scoring happens in submit(). With the teacher on a GPU
// (and no --shared-prefix), submit() only queues its forward on the teacher's stream and collect()
// turns the logits into scores: a micro-batch submitted before the student trains on the previous
// one is scored on the GPU while the student's forward and backward run on the student's stream.
// The teacher holds one forward's logits (or hidden rows, where its head streams), so submit()
// first finishes the scores of a forward still pending; any order of calls gives the same scores.
class ColocatedScoring : public ScoringClient {
 public:
  explicit ColocatedScoring(Transformer& teacher, bool shared_prefix = false)
      : model_(teacher), teacher_(teacher), shared_prefix_(shared_prefix) {}
  int submit(const SequenceBatch& batch, const KlSpec& kl) override;
  TeacherScores collect(int ticket) override;

 private:
  struct ForwardSpan;  // the forward's time on the teacher's stream (CUDA events)
  struct Pending {
    int ticket;
    SequenceBatch batch;
    KlSpec kl;
    std::shared_ptr<ForwardSpan> span;
  };
  void finish_pending();  // the pending forward's scores into done_

  Transformer& model_;
  ColocatedTeacher teacher_;
  bool shared_prefix_;
  std::map<int, TeacherScores> done_;
  std::optional<Pending> pending_;
  int next_ = 0;
};

// A student with tensor parallelism and dedicated teacher ranks: only TP rank 0 of each DP replica
// (`leader`, non-null there) talks to the teachers; collect() broadcasts the scores over the TP
// group and gives each rank its own columns of full log-softmax rows.
class TensorParallelScoring : public ScoringClient {
 public:
  TensorParallelScoring(ScoringClient* leader, Communicator& tp, const VocabShard& vocab)
      : leader_(leader), tp_(tp), vocab_(vocab) {}
  int submit(const SequenceBatch& batch, const KlSpec& kl) override;
  TeacherScores collect(int ticket) override;
  bool ready(int ticket) override;  // the leader's answer, the same on every TP rank

 private:
  ScoringClient* leader_;
  Communicator& tp_;
  VocabShard vocab_;
  int next_ = 0;
};

// FLOPs of a teacher forward over a batch's real tokens (the trainer's and the service's count).
double scoring_flops(const Transformer& teacher, const SequenceBatch& batch);

}  // namespace opd
