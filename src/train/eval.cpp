#include "train/eval.h"

#include <algorithm>
#include <cmath>

#include "model/logit_blocks.h"
#include "model/vocab_parallel.h"
#include "train/rollout.h"
#include "train/scoring.h"

namespace opd {

EvalResult evaluate(Transformer& student, Transformer* teacher, const std::vector<Example>& examples,
                    const EvalOptions& o) {
  if (!teacher) return evaluate(student, static_cast<ScoringClient*>(nullptr), examples, o);
  ColocatedScoring scoring(*teacher);
  return evaluate(student, &scoring, examples, o);
}

void merge_eval(EvalResult& a, const EvalResult& b) {
  a.n += b.n;
  a.correct += b.correct;
  a.completion_tokens += b.completion_tokens;
  a.kl_positions += b.kl_positions;
  a.kl_sum += b.kl_sum;
  a.flops += b.flops;
  a.accuracy = double(a.correct) / std::max(1, a.n);
  a.mean_length = double(a.completion_tokens) / std::max(1, a.n);
  if (!std::isnan(a.kl) || !std::isnan(b.kl)) a.kl = a.kl_positions ? a.kl_sum / a.kl_positions : 0.0;
}

EvalResult evaluate(Transformer& student, ScoringClient* teacher, const std::vector<Example>& examples,
                    const EvalOptions& o) {
  EvalResult r;
  GenerateOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.sampling.temperature = o.temperature;
  g.sampling.seed = o.seed;
  const Rollout roll = sample_rollouts(student, examples, 1, g, o.batch);
  r.n = static_cast<int>(examples.size());
  r.flops = roll.flops;
  for (float x : roll.rewards) r.correct += x > 0.5f;
  r.accuracy = double(r.correct) / std::max(1, r.n);
  r.completion_tokens = roll.completion_tokens;
  r.mean_length = double(roll.completion_tokens) / std::max(1, r.n);
  if (!teacher) return r;

  // Exact KL(student || teacher) at every completion position the student visited.
  double kl_sum = 0;
  int64_t positions = 0;
  // The teacher's full log-softmax rows of a forward are [sequences x T, V] on the host: at a real
  // vocabulary, as many sequences as keep them within the head's block budget (kHeadBlockBytes).
  size_t longest = 1;
  for (const Sequence& s : roll.seqs) longest = std::max(longest, s.prompt.size() + s.completion.size());
  const size_t row_bytes = longest * student.vocab_shard().vocab * sizeof(float);
  const size_t per_forward = std::min(size_t(o.score_batch > 0 ? o.score_batch : o.batch),
                                      std::max<size_t>(1, kHeadBlockBytes / row_bytes));
  for (size_t first = 0; first < roll.seqs.size(); first += per_forward) {
    std::vector<Sequence> chunk(roll.seqs.begin() + first,
                                roll.seqs.begin() + std::min(roll.seqs.size(), first + per_forward));
    const SequenceBatch b = make_batch(chunk, student.tokenizer().pad_id());
    const int N = b.B * b.T;
    std::vector<float> kl(N), scale(N, 0.0f);
    KlSpec full;
    full.mode = KlSpec::kFull;
    const std::vector<float> teacher_rows = teacher->collect(teacher->submit(b, full)).full;
    const std::unique_ptr<LogitBlocks> logits = forward_logits(student, b.tokens.data(), b.B, b.T, /*train=*/false);
    const size_t V = student.vocab_shard().size;
    for (int i = 0; i < logits->count(); ++i) {
      const LogitBlocks::Block blk = logits->block(i);
      vocab_parallel::reverse_kl_full(student.vocab_shard(), kl.data() + blk.r0, nullptr, blk.logits,
                                      teacher_rows.data() + blk.r0 * V, scale.data() + blk.r0, blk.n);
    }
    for (int n = 0; n < N; ++n)
      if (b.targets[n] >= 0) {
        kl_sum += kl[n];
        ++positions;
      }
    const double tokens = double(b.B) * b.T;
    r.flops += student.forward_flops(tokens, b.T / 2.0) + teacher->take_usage().flops;
  }
  r.kl_sum = kl_sum;
  r.kl_positions = positions;
  r.kl = positions ? kl_sum / positions : 0.0;
  return r;
}

}  // namespace opd
