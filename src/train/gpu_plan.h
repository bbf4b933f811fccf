// The device memory a training run's models plan for (model/memory_plan.h), from its
// configuration and data: one function for the students, the teacher ranks and --dry-run.
#pragma once
#include <vector>

#include "model/memory_plan.h"
#include "model/tokenizer.h"
#include "tasks/builtin.h"
#include "train/trainer.h"

namespace opd {

// The longest sequence the run forwards: the longest prompt of the training and evaluation sets
// plus the tokens sampled after it (or, for SFT on given completions, the completion and an EOS),
// at most max_seq.
int planned_sequence(const Tokenizer& tok, int max_seq, const TrainConfig& c, const std::vector<Example>& train,
                     const std::vector<NamedExamples>& eval);

// A micro-batch of `seq` tokens per forward (also the evaluation's KL pass); with `train` the
// training state and activations; with `samples` a KV cache of --gen-batch sequences; a teacher
// (not `train`) with --shared-prefix also a cache and scratch to extend prompts by completions.
MemoryPlanOptions gpu_plan(const TrainConfig& c, int seq, bool train, bool samples);

}  // namespace opd
