// CRC-32 (IEEE 802.3, the polynomial zlib and Python's zlib.crc32 use): checksums of every
// tensor in a model or checkpoint file.
#pragma once
#include <cstddef>
#include <cstdint>

namespace opd {
uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);
}
