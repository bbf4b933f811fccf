#include "core/crc32.h"

namespace opd {

namespace {
constexpr uint32_t kPoly = 0xEDB88320u;  // reflected 0x04C11DB7

std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? kPoly ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

// A linear map on the 32-bit register over GF(2), stored by columns: the image of a vector is the
// XOR of the columns of its set bits.
using Gf2Matrix = std::array<uint32_t, 32>;

uint32_t apply(const Gf2Matrix& m, uint32_t v) {
  uint32_t out = 0;
  for (int j = 0; v != 0; ++j, v >>= 1)
    if (v & 1) out ^= m[j];
  return out;
}

Gf2Matrix compose(const Gf2Matrix& outer, const Gf2Matrix& inner) {  // outer after inner
  Gf2Matrix m{};
  for (int j = 0; j < 32; ++j) m[j] = apply(outer, inner[j]);
  return m;
}

Gf2Matrix identity() {
  Gf2Matrix m{};
  for (int j = 0; j < 32; ++j) m[j] = uint32_t(1) << j;
  return m;
}

// One zero bit through the register: a shift right, and the polynomial when bit 0 falls out.
Gf2Matrix zero_bit() {
  Gf2Matrix m{};
  m[0] = kPoly;
  for (int j = 1; j < 32; ++j) m[j] = uint32_t(1) << (j - 1);
  return m;
}
}  // namespace

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// crc(A B) = Z^|B| crc(A) xor crc(B), where Z runs the register over one zero byte: the initial and
// final inversions of the two CRCs cancel, so the operator applies to the finished crc(A) itself.
// Z^|B| is built by squaring Z once per bit of |B|.
Crc32Combiner::Crc32Combiner(uint64_t bytes_b) : op_(identity()) {
  const Gf2Matrix bit = zero_bit();
  Gf2Matrix power = compose(bit, bit);  // 2 bits
  power = compose(power, power);        // 4 bits
  power = compose(power, power);        // 8 bits: one zero byte
  for (uint64_t n = bytes_b; n != 0; n >>= 1) {
    if (n & 1) op_ = compose(power, op_);
    if (n > 1) power = compose(power, power);
  }
}

uint32_t Crc32Combiner::operator()(uint32_t crc_a, uint32_t crc_b) const { return apply(op_, crc_a) ^ crc_b; }

uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b) {
  return Crc32Combiner(bytes_b)(crc_a, crc_b);
}

}  // namespace opd
