// The prompts of each training step, and each data-parallel rank's share of them.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "tasks/dataset.h"

namespace opd {

// The examples of one step: a fresh Philox-keyed shuffle of the data set every epoch, so every
// method run with the same seed sees the same prompts at the same step.
class PromptStream {
 public:
  PromptStream(const std::vector<Example>& data, uint64_t seed) : data_(data), seed_(seed) {}
  std::vector<Example> next(int n);
  // Examples consumed so far (a checkpoint stores it; seek() continues from it).
  uint64_t cursor() const { return cursor_; }
  void seek(uint64_t cursor) { cursor_ = cursor; }

 private:
  void shuffle(uint64_t epoch);
  const std::vector<Example>& data_;
  uint64_t seed_;
  uint64_t cursor_ = 0;
  uint64_t shuffled_epoch_ = ~uint64_t(0);
  std::vector<size_t> order_;
};

// The contiguous share [begin, end) of n items that part `index` of `parts` takes.
std::pair<int, int> contiguous_share(int n, int parts, int index);

}  // namespace opd
