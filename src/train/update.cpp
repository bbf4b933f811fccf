#include "train/update.h"

#include "core/error.h"

namespace opd {

TokenSums update_micro_batch(Transformer& student, const SequenceBatch& b, Method method,
                             const DistillOptions& distill, const TeacherScores* scores,
                             const std::vector<float>& seq_adv) {
  OPD_REQUIRE(method != Method::kDistill || scores, "update: distillation without the teacher's scores");
  const std::unique_ptr<LogitBlocks> logits = forward_logits(student, b.tokens.data(), b.B, b.T, /*train=*/true);
  TokenSums s;
  if (method == Method::kDistill)
    s = distill_objective(*logits, b, *scores, distill, seq_adv, 1.0f);
  else if (method == Method::kRl)
    s = policy_gradient_objective(*logits, b, seq_adv, 1.0f);
  else
    s = sft_objective(*logits, b, 1.0f);
  logits->finish_backward();
  return s;
}

}  // namespace opd
