#include "train/batch.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

SequenceBatch make_batch(const std::vector<Sequence>& seqs, int pad_id, bool all_tokens) {
  OPD_REQUIRE(!seqs.empty(), "batch: no sequences");
  SequenceBatch b;
  b.B = static_cast<int>(seqs.size());
  for (const auto& s : seqs) {
    OPD_REQUIRE(!s.prompt.empty(), "batch: a sequence has an empty prompt");
    b.T = std::max(b.T, static_cast<int>(s.prompt.size() + s.completion.size()));
  }
  b.tokens.assign(size_t(b.B) * b.T, std::max(pad_id, 0));
  b.targets.assign(size_t(b.B) * b.T, -1);
  for (int i = 0; i < b.B; ++i) {
    const Sequence& s = seqs[i];
    int* row = &b.tokens[size_t(i) * b.T];
    std::copy(s.prompt.begin(), s.prompt.end(), row);
    std::copy(s.completion.begin(), s.completion.end(), row + s.prompt.size());
    const int len = static_cast<int>(s.prompt.size() + s.completion.size());
    b.lengths.push_back(len);
    const int first = all_tokens ? 0 : static_cast<int>(s.prompt.size()) - 1;
    for (int t = first; t + 1 < len; ++t) {
      b.targets[size_t(i) * b.T + t] = row[t + 1];
      ++b.trained_rows;
    }
  }
  return b;
}

}  // namespace opd
