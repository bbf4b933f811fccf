// The teacher's side of distillation: score the student's sequences. Colocated here (same
// process, forward only); dedicated teacher ranks answer the same request over MPI.
#pragma once
#include <string>
#include <vector>

#include "model/transformer.h"
#include "train/batch.h"

namespace opd {

// Which reverse KL the student is trained on (docs/ARCHITECTURE.md §1).
struct KlSpec {
  enum Mode { kSampled, kFull, kTopK } mode = kSampled;
  int k = 0;  // for kTopK
  std::string str() const;
};
// "sampled", "full" or "topk:K"; an error names the option value.
KlSpec parse_kl(const std::string& text, int vocab);

struct TeacherScores {
  std::vector<float> logp;       // [B*T] the teacher's log-prob of each row's target (0 where none)
  std::vector<float> full;       // [B*T*V] log-softmax rows, for kFull (under TP: [B*T, V/tp], this rank's columns)
  std::vector<int> topk_ids;     // [B*T*(K+1)] top-K ids plus the sampled token, for kTopK
  std::vector<float> topk_logp;  // the teacher's log-probs of those ids
};

class ColocatedTeacher {
 public:
  explicit ColocatedTeacher(Transformer& model) : model_(model) {}
  TeacherScores score(const SequenceBatch& batch, const KlSpec& kl);
  // The same scores with the prompt of each group of rows that share one prefilled once and every
  // row's completion run against that KV cache (docs/ARCHITECTURE.md §1, shared prefix): fewer FLOPs when
  // several samples share a prompt; equal to score() up to float rounding (other GEMM shapes).
  // A row's prompt ends where its first scored position is. `flops` receives the forward FLOPs.
  TeacherScores score_shared_prefix(const SequenceBatch& batch, const KlSpec& kl, double* flops);
  // score() in two halves: the forward (on the GPU, queued on the model's stream and returned at
  // once) and the scores from its logits (which waits for them).
  const float* forward(const SequenceBatch& batch);
  TeacherScores from_logits(const float* logits, const SequenceBatch& batch, const KlSpec& kl);

 private:
  Transformer& model_;
};

// Scores whose rows come from `b` for the sequences flagged in use_b and from `a` otherwise
// (several teachers in one batch, each sequence scored by its own).
TeacherScores merge_scores(TeacherScores a, const TeacherScores& b, const std::vector<char>& use_b, int T, int V,
                           const KlSpec& kl);

// Teacher and student must share one tokenizer; the error names both vocabularies.
void check_same_tokenizer(const Transformer& student, const std::string& student_path, const Transformer& teacher,
                          const std::string& teacher_path);
void check_same_tokenizer(const Tokenizer& student, const std::string& student_path, const Tokenizer& teacher,
                          const std::string& teacher_path);

}  // namespace opd
