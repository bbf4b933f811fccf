#include "train/eval.h"

#include <algorithm>
#include <cmath>

#include "model/logit_blocks.h"
#include "core/error.h"
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
  a.sequences += b.sequences;
  a.erase += b.erase;
  a.correct += b.correct;
  a.completion_tokens += b.completion_tokens;
  a.kl_positions += b.kl_positions;
  a.kl_sum += b.kl_sum;
  a.flops += b.flops;
  a.accuracy = double(a.correct) / std::max(1, a.sequences);
  a.mean_length = double(a.completion_tokens) / std::max(1, a.sequences);
  if (!std::isnan(a.kl) || !std::isnan(b.kl)) a.kl = a.kl_positions ? a.kl_sum / a.kl_positions : 0.0;
}

void all_reduce_eval(EvalResult& e, Communicator& group) {
  const bool has_kl = !std::isnan(e.kl);
  double v[12] = {double(e.n), double(e.correct), double(e.completion_tokens), double(e.kl_positions), e.kl_sum,
                  e.flops, double(e.sequences), double(e.erase.numbers), double(e.erase.erasures),
                  double(e.erase.spurious), double(e.erase.first_wrong), double(e.erase.recovered)};
  group.all_reduce(v, 12, ReduceOp::kSum);
  EvalResult sum;
  sum.n = int(v[0]);
  sum.correct = int(v[1]);
  sum.completion_tokens = int64_t(v[2]);
  sum.kl_positions = int64_t(v[3]);
  sum.kl_sum = v[4];
  sum.flops = v[5];
  sum.sequences = int(v[6]);
  sum.erase = {int64_t(v[7]), int64_t(v[8]), int64_t(v[9]), int64_t(v[10]), int64_t(v[11])};
  e = EvalResult{};
  e.kl = has_kl ? 0.0 : std::nan("");
  merge_eval(e, sum);
}

json sampled_report(const EvalResult& e, const EvalOptions& o) {
  json r = {{"accuracy_sampled", e.accuracy}, {"samples", o.samples}, {"temperature", o.temperature}};
  if (e.erase.numbers > 0) {
    const double numbers = double(e.erase.numbers);
    r["erasures"] = e.erase.erasures / numbers;
    r["spurious_erasures"] = e.erase.spurious / numbers;
    r["first_wrong"] = e.erase.first_wrong / numbers;
    r["recovered"] = e.erase.first_wrong ? double(e.erase.recovered) / e.erase.first_wrong : 0.0;
  }
  return r;
}

EvalResult evaluate(Transformer& student, ScoringClient* teacher, const std::vector<Example>& examples,
                    const EvalOptions& o) {
  OPD_REQUIRE(o.samples >= 1, "evaluation: samples per problem = ", o.samples, " (must be at least 1)");
  OPD_REQUIRE(o.samples == 1 || o.temperature > 0, "evaluation: ", o.samples,
              " samples per problem need a temperature above 0 (greedy completions are all the same)");
  EvalResult r;
  GenerateOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.sampling.temperature = o.temperature;
  g.sampling.seed = o.seed;
  const Rollout roll = sample_rollouts(student, examples, o.samples, g, o.batch);
  r.n = static_cast<int>(examples.size());
  r.sequences = static_cast<int>(roll.seqs.size());
  r.flops = roll.flops;
  for (float x : roll.rewards) r.correct += x > 0.5f;
  for (const std::string& text : roll.completions) r.erase += erase_stats(text);
  r.accuracy = double(r.correct) / std::max(1, r.sequences);
  r.completion_tokens = roll.completion_tokens;
  r.mean_length = double(roll.completion_tokens) / std::max(1, r.sequences);
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
