// CRC-32 (IEEE 802.3, the polynomial zlib and Python's zlib.crc32 use): checksums of every
// tensor in a model or checkpoint file.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace opd {
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

// crc32 of A followed by B, from crc32(A), crc32(B) and B's length: ranks that each hold pieces
// of a sharded tensor get the checksum of the whole without gathering it.
uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b);

// crc32_combine for many B of one length (one row piece per row of a column-split tensor): the
// GF(2) operator that runs the CRC register over `bytes_b` zero bytes is built once, in
// log2(bytes_b) matrix squarings; each combine then costs 32 steps.
class Crc32Combiner {
 public:
  explicit Crc32Combiner(uint64_t bytes_b);
  uint32_t operator()(uint32_t crc_a, uint32_t crc_b) const;

 private:
  std::array<uint32_t, 32> op_;  // op_[j]: the image of register bit j
};
}  // namespace opd
