// One rank's part of a tensor under tensor parallelism (docs/ARCHITECTURE.md §4, §5): a block of the full
// row-major tensor along one dimension, or all of it when replicated. Checkpoints store the full
// tensor, so a file written under one split reads back under any other.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace opd {

struct TensorShard {
  std::vector<int64_t> full_shape;
  int split_dim = -1;   // -1: replicated
  int64_t offset = 0;   // along split_dim
  int64_t extent = 0;   // along split_dim

  // Part `part` of `parts` near-equal blocks along `split_dim` (the first full % parts blocks one
  // longer); split_dim -1 gives the replicated shard.
  static TensorShard block(const std::vector<int64_t>& full_shape, int split_dim, int part, int parts);

  bool replicated() const { return split_dim < 0; }
  std::vector<int64_t> local_shape() const;
  int64_t local_size() const;
  int64_t full_size() const;
  // The local block is `outer` runs of `run` contiguous elements, run o starting at element
  // o * full_shape[split_dim] * inner + offset * inner of the full tensor.
  int64_t outer() const;  // product of the dimensions before split_dim
  int64_t inner() const;  // product of the dimensions after split_dim
  int64_t run() const { return replicated() ? full_size() : extent * inner(); }

  // A dimension that is not positive, a split_dim out of range or a block outside the tensor is an
  // error naming `where`.
  void validate(const std::string& where) const;
};

// Copies this shard's block out of the full tensor into a dense `local` of local_size() elements,
// and back.
void copy_shard_out(const float* full, const TensorShard& shard, float* local);
void copy_shard_in(const float* local, const TensorShard& shard, float* full);

}  // namespace opd
