// Evaluation: accuracy of greedy (or sampled) completions under the task's verifier and, given a
// teacher, the mean exact per-token reverse KL to it on the student's own completions.
#pragma once
#include <limits>
#include <vector>

#include "core/jsonl.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "tasks/arith.h"
#include "tasks/dataset.h"

namespace opd {

struct EvalOptions {
  int max_new_tokens = 64;
  int batch = 128;        // sequences generated together
  int score_batch = 0;    // sequences per forward of the KL pass (0: batch); the GPU path plans for fewer
  float temperature = 0.0f;  // 0: greedy (pass@1 at temperature 0)
  int samples = 1;           // completions per problem (> 1 needs temperature > 0); accuracy is their mean
  uint64_t seed = 0;
};

struct EvalResult {
  int n = 0;               // problems
  double accuracy = 0;     // correct / sequences
  double kl = std::numeric_limits<double>::quiet_NaN();  // nats per token; NaN without a teacher
  double mean_length = 0;
  double flops = 0;
  // The sums behind the means, so shards of an eval set add up (merge_eval).
  int correct = 0;
  int64_t completion_tokens = 0, kl_positions = 0;
  double kl_sum = 0;
  int sequences = 0;       // completions: n x samples
  EraseStats erase;        // what the completions did with erase marks (arith chains; zeros otherwise)
};

class ScoringClient;

EvalResult evaluate(Transformer& student, Transformer* teacher, const std::vector<Example>& examples,
                    const EvalOptions& options);
// The same with the teacher behind a scoring client (colocated or on dedicated teacher ranks).
EvalResult evaluate(Transformer& student, ScoringClient* teacher, const std::vector<Example>& examples,
                    const EvalOptions& options);

// Adds another shard's sums and recomputes the means.
void merge_eval(EvalResult& into, const EvalResult& shard);

// Sums every rank's shard of an evaluation over `group` (data parallel), leaving each rank the
// whole set's result.
void all_reduce_eval(EvalResult& e, Communicator& group);

// The sampled evaluation's figures for metrics: "accuracy_sampled", "samples", "temperature" and,
// where the completions wrote computed numbers, the erase-mark rates per number
// ("erasures", "spurious_erasures", "first_wrong") and "recovered" (of the numbers first written
// wrong, those that ended right after an erasure).
json sampled_report(const EvalResult& e, const EvalOptions& options);

}  // namespace opd
