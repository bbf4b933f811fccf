#include "train/prompt_stream.h"

#include <algorithm>
#include <numeric>

#include "core/rng.h"

namespace opd {

std::vector<Example> PromptStream::next(int n) {
  std::vector<Example> out;
  while (static_cast<int>(out.size()) < n) {
    const uint64_t epoch = cursor_ / data_.size();
    if (epoch != shuffled_epoch_) shuffle(epoch);
    out.push_back(data_[order_[cursor_ % data_.size()]]);
    ++cursor_;
  }
  return out;
}

void PromptStream::shuffle(uint64_t epoch) {
  order_.resize(data_.size());
  std::iota(order_.begin(), order_.end(), 0);
  std::vector<uint32_t> key(data_.size());
  for (size_t i = 0; i < key.size(); ++i) key[i] = philox_draw(seed_, 0x5eed0000u + uint32_t(epoch), i).v[0];
  std::stable_sort(order_.begin(), order_.end(), [&](size_t a, size_t b) { return key[a] < key[b]; });
  shuffled_epoch_ = epoch;
}

std::pair<int, int> contiguous_share(int n, int parts, int index) {
  const int base = n / parts, extra = n % parts;
  const int begin = index * base + std::min(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace opd
