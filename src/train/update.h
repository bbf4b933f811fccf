// One micro-batch of the update (docs/ARCHITECTURE.md §5): the student's forward, the method's
// objective on its logits (train/objectives.h) and its backward into the accumulated gradients. The
// logits are the [N, V] rows of one forward where they fit the student's LM-head block, else the
// streamed head's blocks (model/logit_blocks.h): the same objective either way.
#pragma once
#include <vector>

#include "model/transformer.h"
#include "train/batch.h"
#include "train/objectives.h"
#include "train/teacher.h"
#include "train/trainer.h"

namespace opd {

// method: which objective; scores: the teacher's (distill only, else null); seq_adv: per sequence,
// the group-relative advantage (rl; distill with --reward-coef), may be empty. Every token weighs
// 1: the step scales the summed gradient by 1 / (its trained tokens).
TokenSums update_micro_batch(Transformer& student, const SequenceBatch& batch, Method method,
                             const DistillOptions& distill, const TeacherScores* scores,
                             const std::vector<float>& seq_adv);

}  // namespace opd
