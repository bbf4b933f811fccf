#include "train/scoring.h"

#include <chrono>

#include "core/error.h"

namespace opd {

double scoring_flops(const Transformer& teacher, const SequenceBatch& batch) {
  double tokens = 0;
  for (int len : batch.lengths) tokens += len;
  return teacher.forward_flops(tokens, batch.T / 2.0);
}

int ColocatedScoring::submit(const SequenceBatch& batch, const KlSpec& kl) {
  const auto t0 = std::chrono::steady_clock::now();
  double flops = 0;
  done_[next_] = shared_prefix_ ? teacher_.score_shared_prefix(batch, kl, &flops) : teacher_.score(batch, kl);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  usage_.busy += s;
  usage_.wait += s;
  usage_.flops += shared_prefix_ ? flops : scoring_flops(model_, batch);
  return next_++;
}

TeacherScores ColocatedScoring::collect(int ticket) {
  auto it = done_.find(ticket);
  OPD_REQUIRE(it != done_.end(), "scoring: ticket ", ticket, " was never submitted or is already collected");
  TeacherScores s = std::move(it->second);
  done_.erase(it);
  return s;
}

}  // namespace opd
