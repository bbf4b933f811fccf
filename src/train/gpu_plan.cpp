#include "train/gpu_plan.h"

#include <algorithm>

#include "train/rollout.h"

namespace opd {

int planned_sequence(const Tokenizer& tok, int max_seq, const TrainConfig& c, const std::vector<Example>& train,
                     const std::vector<NamedExamples>& eval) {
  int seq = longest_sequence(tok, max_seq, train, c.gen.max_new_tokens, c.method == Method::kSft && !c.sft_from_teacher);
  for (const NamedExamples& set : eval)
    seq = std::max(seq, longest_sequence(tok, max_seq, set.examples, c.eval.max_new_tokens, false));
  return seq;
}

MemoryPlanOptions gpu_plan(const TrainConfig& c, int seq, bool train, bool samples) {
  MemoryPlanOptions p;
  p.train = train;
  p.recompute = train && c.recompute;
  p.batch = c.micro_batch;
  p.seq = seq;
  if (samples) {
    p.kv_batch = c.gen_batch;
    p.kv_capacity = seq;
  }
  if (!train && c.shared_prefix) {  // a teacher extending each prompt's cache by its completions
    p.kv_batch = std::max(p.kv_batch, c.micro_batch);
    p.kv_capacity = seq;
    p.extend = true;
  }
  return p;
}

}  // namespace opd
