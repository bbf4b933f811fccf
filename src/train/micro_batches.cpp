#include "train/micro_batches.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "train/update.h"

namespace opd {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

MicroBatches::MicroBatches(const TrainConfig& config, Transformer& student, const MicroBatchScoring& scoring,
                           const std::vector<Example>& examples, StepSums& sums)
    : c_(config), student_(student), scoring_(scoring), examples_(examples), sums_(sums),
      pad_(std::max(student.tokenizer().pad_id(), 0)) {
  if (scoring_.teacher) scoring_.teacher->take_usage();
}

double MicroBatches::add_teacher_usage() {
  const ScoringClient::Usage usage = scoring_.teacher ? scoring_.teacher->take_usage() : ScoringClient::Usage{};
  sums_.flops.score += usage.flops;
  sums_.teacher_busy += usage.busy + anchor_seconds_;
  sums_.teacher_wait += usage.wait + anchor_seconds_;
  return usage.wait + anchor_seconds_;
}

size_t MicroBatches::micro_batches(const std::vector<Sequence>& seqs) const {
  return (seqs.size() + c_.micro_batch - 1) / c_.micro_batch;
}

std::vector<Sequence> MicroBatches::micro(const std::vector<Sequence>& seqs, size_t index) const {
  const size_t first = index * size_t(c_.micro_batch), last = std::min(seqs.size(), first + c_.micro_batch);
  return std::vector<Sequence>(seqs.begin() + first, seqs.begin() + last);
}

int MicroBatches::ticket(const std::vector<Sequence>& seqs, size_t index) {
  auto it = tickets_.find(index);
  if (it != tickets_.end()) return it->second;
  return tickets_[index] = scoring_.teacher->submit(make_batch(micro(seqs, index), pad_, c_.all_tokens), c_.distill.kl);
}

void MicroBatches::submit(const std::vector<Sequence>& seqs) { ticket(seqs, submitted_++); }

void MicroBatches::train_ready(const std::vector<Sequence>& seqs) {
  while (trained_ < submitted_ && scoring_.teacher->ready(tickets_.at(trained_))) train_next(seqs);
}

void MicroBatches::train_rest(const std::vector<Sequence>& seqs) {
  while (trained_ < micro_batches(seqs)) train_next(seqs);
}

// 2-4 for micro-batch `trained_`: the teacher's scores (distill), the method's objective on the
// student's logits, its gradient through the student.
void MicroBatches::train_next(const std::vector<Sequence>& seqs) {
  const auto t0 = Clock::now();
  const size_t index = trained_++, first = index * size_t(c_.micro_batch);
  const std::vector<Sequence> mb = micro(seqs, index);
  const SequenceBatch b = make_batch(mb, pad_, c_.all_tokens);
  std::vector<float> adv;
  if (!seq_adv_.empty()) adv.assign(seq_adv_.begin() + first, seq_adv_.begin() + first + mb.size());
  TokenSums s;
  if (c_.method == Method::kDistill) {
    const TeacherScores scores = teacher_scores(seqs, index, mb, b);
    log_teacher_logp(first, b, scores);
    s = update_micro_batch(student_, b, c_.method, c_.distill, &scores, adv);
  } else {
    s = update_micro_batch(student_, b, c_.method, c_.distill, nullptr, adv);
  }
  sums_.flops.train += 3 * student_.forward_flops(real_tokens(mb), b.T / 2.0);
  sums_.tokens += s;
  train_seconds_ += since(t0);
}

TeacherScores MicroBatches::teacher_scores(const std::vector<Sequence>& seqs, size_t index,
                                           const std::vector<Sequence>& mb, const SequenceBatch& b) {
  TeacherScores scores = scoring_.teacher->collect(ticket(seqs, index));
  if (scoring_.prefetch && index + 1 < micro_batches(seqs)) ticket(seqs, index + 1);
  std::vector<char> anchored(mb.size(), 0);
  for (size_t i = 0; i < mb.size(); ++i) anchored[i] = examples_[mb[i].group].source == 1;
  if (std::find(anchored.begin(), anchored.end(), 1) == anchored.end()) return scores;
  OPD_REQUIRE(scoring_.anchor, "training data has anchor prompts but no anchor teacher was given");
  const auto t0 = Clock::now();
  const KlSpec& kl = c_.distill.kl;
  scores = merge_scores(std::move(scores), ColocatedTeacher(*scoring_.anchor).score(b, kl), anchored, b.T,
                        student_.vocab_shard().size, kl);
  sums_.flops.score += scoring_.anchor->forward_flops(real_tokens(mb), b.T / 2.0);  // it scores the whole micro-batch
  anchor_seconds_ += since(t0);
  return scores;
}

void MicroBatches::log_teacher_logp(size_t first, const SequenceBatch& b, const TeacherScores& scores) {
  for (size_t i = first; i < first + size_t(b.B) && static_cast<int>(i) < c_.samples_to_log; ++i) {
    std::vector<float> row;
    const size_t bi = i - first;
    for (int t = 0; t < b.T; ++t)
      if (b.targets[bi * b.T + t] >= 0) row.push_back(scores.logp[bi * b.T + t]);
    teacher_logp_.push_back(row);
  }
}

}  // namespace opd
