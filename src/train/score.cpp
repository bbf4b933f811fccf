#include "train/score.h"

#include <algorithm>

#include "core/error.h"
#include "model/logit_blocks.h"
#include "model/vocab_parallel.h"

namespace opd {

std::vector<std::vector<float>> score_sequences(Transformer& model, const std::vector<std::vector<int>>& sequences,
                                                int batch) {
  OPD_REQUIRE(batch > 0, "score: batch must be positive, got ", batch);
  const int pad = std::max(model.tokenizer().pad_id(), 0);
  std::vector<std::vector<float>> out(sequences.size());
  for (size_t first = 0; first < sequences.size(); first += batch) {
    const size_t last = std::min(sequences.size(), first + batch);
    const int B = static_cast<int>(last - first);
    int T = 0;
    for (size_t i = first; i < last; ++i) {
      OPD_REQUIRE(sequences[i].size() >= 2, "score: sequence ", i, " has ", sequences[i].size(),
                  " tokens; at least 2 are needed to score one");
      T = std::max(T, static_cast<int>(sequences[i].size()));
    }
    std::vector<int> tokens(size_t(B) * T, pad), targets(size_t(B) * T, -1);
    for (int b = 0; b < B; ++b) {
      const auto& s = sequences[first + b];
      std::copy(s.begin(), s.end(), tokens.begin() + size_t(b) * T);
      std::copy(s.begin() + 1, s.end(), targets.begin() + size_t(b) * T);
    }
    const std::unique_ptr<LogitBlocks> logits = forward_logits(model, tokens.data(), B, T, /*train=*/false);
    std::vector<float> logp(size_t(B) * T);
    for (int i = 0; i < logits->count(); ++i) {
      const LogitBlocks::Block blk = logits->block(i);
      vocab_parallel::logprobs(model.vocab_shard(), logp.data() + blk.r0, nullptr, nullptr, blk.logits,
                               targets.data() + blk.r0, blk.n);
    }
    for (int b = 0; b < B; ++b) {
      const size_t n = sequences[first + b].size() - 1;
      out[first + b].assign(logp.begin() + size_t(b) * T, logp.begin() + size_t(b) * T + n);
    }
  }
  return out;
}

}  // namespace opd
