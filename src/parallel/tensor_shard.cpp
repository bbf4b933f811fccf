#include "parallel/tensor_shard.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

TensorShard TensorShard::block(const std::vector<int64_t>& full_shape, int split_dim, int part, int parts) {
  TensorShard s;
  s.full_shape = full_shape;
  s.split_dim = split_dim;
  if (split_dim < 0) return s;
  OPD_REQUIRE(split_dim < static_cast<int>(full_shape.size()), "tensor shard: split_dim ", split_dim,
              " is outside a tensor of ", full_shape.size(), " dimensions");
  OPD_REQUIRE(parts > 0 && part >= 0 && part < parts, "tensor shard: part ", part, " of ", parts, " does not exist");
  const int64_t n = full_shape[split_dim], base = n / parts, extra = n % parts;
  s.offset = part * base + std::min<int64_t>(part, extra);
  s.extent = base + (part < extra ? 1 : 0);
  return s;
}

std::vector<int64_t> TensorShard::local_shape() const {
  std::vector<int64_t> shape = full_shape;
  if (!replicated()) shape[split_dim] = extent;
  return shape;
}

int64_t TensorShard::local_size() const { return outer() * run(); }

int64_t TensorShard::full_size() const {
  int64_t n = 1;
  for (int64_t d : full_shape) n *= d;
  return n;
}

int64_t TensorShard::outer() const {
  int64_t n = 1;
  for (int i = 0; i < split_dim; ++i) n *= full_shape[i];
  return n;
}

int64_t TensorShard::inner() const {
  int64_t n = 1;
  for (size_t i = replicated() ? full_shape.size() : split_dim + 1; i < full_shape.size(); ++i) n *= full_shape[i];
  return n;
}

void TensorShard::validate(const std::string& where) const {
  for (size_t i = 0; i < full_shape.size(); ++i)
    OPD_REQUIRE(full_shape[i] > 0, where, ": dimension ", i, " of the full shape is ", full_shape[i]);
  if (replicated()) {
    OPD_REQUIRE(split_dim == -1, where, ": split_dim ", split_dim, " (use -1 for a replicated tensor)");
    return;
  }
  OPD_REQUIRE(split_dim < static_cast<int>(full_shape.size()), where, ": split_dim ", split_dim,
              " is outside a tensor of ", full_shape.size(), " dimensions");
  OPD_REQUIRE(offset >= 0 && extent >= 0 && offset + extent <= full_shape[split_dim], where, ": the block [", offset,
              ", ", offset + extent, ") is outside dimension ", split_dim, " of length ", full_shape[split_dim]);
}

namespace {
// Visits the block's contiguous runs: f(offset in the full tensor, offset in the block, length).
template <typename F>
void for_each_run(const TensorShard& shard, F&& f) {
  const int64_t runs = shard.outer(), run = shard.run();
  const int64_t stride = shard.replicated() ? run : shard.full_shape[shard.split_dim] * shard.inner();
  const int64_t start = shard.replicated() ? 0 : shard.offset * shard.inner();
  for (int64_t o = 0; o < runs; ++o) f(o * stride + start, o * run, run);
}
}  // namespace

void copy_shard_out(const float* full, const TensorShard& shard, float* local) {
  for_each_run(shard, [&](int64_t at_full, int64_t at_local, int64_t n) { std::copy_n(full + at_full, n, local + at_local); });
}

void copy_shard_in(const float* local, const TensorShard& shard, float* full) {
  for_each_run(shard, [&](int64_t at_full, int64_t at_local, int64_t n) { std::copy_n(local + at_local, n, full + at_full); });
}

}  // namespace opd
