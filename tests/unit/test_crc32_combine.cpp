// crc32_combine against crc32 of the concatenation: the checksum a sharded tensor's ranks write
// without gathering it must be the one a serial write computes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/crc32.h"

namespace opd {
namespace {

std::vector<unsigned char> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(gen());
  return v;
}

TEST(Crc32Combine, KnownValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32(s, 9), 0xCBF43926u);  // the CRC-32/ISO-HDLC check value
  EXPECT_EQ(crc32_combine(crc32(s, 4), crc32(s + 4, 5), 5), 0xCBF43926u);
}

TEST(Crc32Combine, EverySplitOfABufferEqualsTheWhole) {
  const auto data = random_bytes(300, 1);
  const uint32_t whole = crc32(data.data(), data.size());
  for (size_t cut = 0; cut <= data.size(); ++cut) {
    const uint32_t a = crc32(data.data(), cut), b = crc32(data.data() + cut, data.size() - cut);
    ASSERT_EQ(crc32_combine(a, b, data.size() - cut), whole) << "cut at " << cut;
  }
}

TEST(Crc32Combine, EmptyPiecesChangeNothing) {
  const auto data = random_bytes(17, 2);
  const uint32_t c = crc32(data.data(), data.size());
  EXPECT_EQ(crc32_combine(c, crc32(nullptr, 0), 0), c);
  EXPECT_EQ(crc32_combine(0, c, data.size()), c);  // 0 is the crc32 of nothing
}

TEST(Crc32Combine, LongSecondPieceAndManyPiecesInOrder) {
  const auto data = random_bytes((1 << 20) + 13, 3);  // a B long enough to use ~20 squarings
  const uint32_t whole = crc32(data.data(), data.size());
  EXPECT_EQ(crc32_combine(crc32(data.data(), 5), crc32(data.data() + 5, data.size() - 5), data.size() - 5), whole);
  // Pieces of uneven lengths folded left to right, as the ranks of a sharded tensor are.
  uint32_t folded = 0;
  size_t at = 0;
  for (size_t len = 1; at < data.size(); len = len * 3 + 7) {
    const size_t n = std::min(len, data.size() - at);
    folded = crc32_combine(folded, crc32(data.data() + at, n), n);
    at += n;
  }
  EXPECT_EQ(folded, whole);
}

TEST(Crc32Combine, CombinerOfOneLengthMatchesTheFunctionAndDiffersFromOthers) {
  // Rows of a column-split tensor: one piece length per rank, reused for every row.
  const auto data = random_bytes(64 * 12, 4);
  const Crc32Combiner append12(12);
  uint32_t folded = 0;
  for (size_t row = 0; row < 64; ++row) {
    const uint32_t piece = crc32(data.data() + row * 12, 12);
    ASSERT_EQ(append12(folded, piece), crc32_combine(folded, piece, 12));
    folded = append12(folded, piece);
  }
  EXPECT_EQ(folded, crc32(data.data(), data.size()));
  // The length matters: a combiner for the wrong length gives another checksum.
  const uint32_t a = crc32(data.data(), 8), b = crc32(data.data() + 8, 12);
  EXPECT_NE(Crc32Combiner(11)(a, b), crc32(data.data(), 20));
  EXPECT_EQ(Crc32Combiner(12)(a, b), crc32(data.data(), 20));
}

TEST(Crc32Combine, MatchesTheChecksumOfFloatRows) {
  // The checkpoint case: float32 tensor bytes in row-major order, split by columns.
  const int rows = 5, cols = 7, split = 3;
  std::vector<float> t(rows * cols);
  for (int i = 0; i < rows * cols; ++i) t[i] = 0.25f * i - 3.0f;
  uint32_t folded = 0;
  for (int r = 0; r < rows; ++r) {
    folded = crc32_combine(folded, crc32(&t[r * cols], split * sizeof(float)), split * sizeof(float));
    folded = crc32_combine(folded, crc32(&t[r * cols + split], (cols - split) * sizeof(float)),
                           (cols - split) * sizeof(float));
  }
  EXPECT_EQ(folded, crc32(t.data(), t.size() * sizeof(float)));
}

}  // namespace
}  // namespace opd
