#include "train/batch.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

int trained_completion_tokens(const Sequence& s) {
  int n = static_cast<int>(s.completion.size());
  for (char masked : s.no_loss) n -= masked != 0;
  return n;
}

SequenceBatch make_batch(const std::vector<Sequence>& seqs, int pad_id, bool all_tokens) {
  OPD_REQUIRE(!seqs.empty(), "batch: no sequences");
  SequenceBatch b;
  b.B = static_cast<int>(seqs.size());
  for (const auto& s : seqs) {
    OPD_REQUIRE(!s.prompt.empty(), "batch: a sequence has an empty prompt");
    OPD_REQUIRE(s.no_loss.empty() || s.no_loss.size() == s.completion.size(), "batch: a loss mask of ",
                s.no_loss.size(), " entries for a completion of ", s.completion.size(), " tokens");
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
    const int prompt_len = static_cast<int>(s.prompt.size());
    for (int t = first; t + 1 < len; ++t) {
      const int completion_index = t + 1 - prompt_len;
      if (completion_index >= 0 && !s.no_loss.empty() && s.no_loss[completion_index]) continue;
      b.targets[size_t(i) * b.T + t] = row[t + 1];
      ++b.trained_rows;
    }
  }
  return b;
}

}  // namespace opd
