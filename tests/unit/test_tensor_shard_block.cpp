// TensorShard's arithmetic: near-equal blocks that tile the split dimension, and the block copied
// out of a row-major tensor.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "common/check.h"
#include "parallel/tensor_shard.h"

namespace opd {
namespace {

TEST(TensorShardBlock, NearEqualBlocksTileTheDimension) {
  for (int parts = 1; parts <= 9; ++parts) {
    int64_t next = 0;
    for (int p = 0; p < parts; ++p) {
      const TensorShard s = TensorShard::block({7, 5}, 0, p, parts);
      EXPECT_EQ(s.offset, next);
      EXPECT_EQ(s.extent, 7 / parts + (p < 7 % parts ? 1 : 0));
      EXPECT_EQ(s.local_shape(), (std::vector<int64_t>{s.extent, 5}));
      EXPECT_EQ(s.local_size(), s.extent * 5);
      next += s.extent;
    }
    EXPECT_EQ(next, 7);
  }
  const TensorShard r = TensorShard::block({6, 4}, -1, 1, 3);
  EXPECT_TRUE(r.replicated());
  EXPECT_EQ(r.local_shape(), (std::vector<int64_t>{6, 4}));
  EXPECT_EQ(r.local_size(), 24);
}

TEST(TensorShardBlock, CopyShardOutOfColumnsAndMiddleDimension) {
  std::vector<float> full(3 * 5 * 2);
  std::iota(full.begin(), full.end(), 0.0f);
  const TensorShard cols = TensorShard::block({6, 5}, 1, 1, 2);  // columns 3..4 of a 6 x 5
  ASSERT_EQ(cols.offset, 3);
  std::vector<float> c(cols.local_size());
  copy_shard_out(full.data(), cols, c.data());
  EXPECT_EQ(c, (std::vector<float>{3, 4, 8, 9, 13, 14, 18, 19, 23, 24, 28, 29}));
  const TensorShard mid = TensorShard::block({3, 5, 2}, 1, 2, 3);  // index 4 of the middle dim
  ASSERT_EQ(mid.offset, 4);
  std::vector<float> m(mid.local_size());
  copy_shard_out(full.data(), mid, m.data());
  EXPECT_EQ(m, (std::vector<float>{8, 9, 18, 19, 28, 29}));
}

TEST(TensorShardBlock, InvalidShardsNameWhere) {
  TensorShard s = TensorShard::block({4, 3}, 0, 0, 2);
  s.extent = 5;
  testing::expect_error([&] { s.validate("f.h5:/model/w"); },
                        {"f.h5:/model/w: the block [0, 5) is outside dimension 0 of length 4"});
  s.split_dim = 2;
  testing::expect_error([&] { s.validate("w"); }, {"split_dim 2 is outside a tensor of 2 dimensions"});
  testing::expect_error([] { TensorShard::block({4, 0}, 0, 0, 1).validate("w"); },
                        {"dimension 1 of the full shape is 0"});
  testing::expect_error([] { TensorShard::block({4}, 0, 2, 2); }, {"part 2 of 2 does not exist"});
}

}  // namespace
}  // namespace opd
