#include "kernels/cpu/convert.h"

#include <cstring>

namespace opd::cpu {

uint16_t bf16_from_float(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x7FFFFFu)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  // Adding just under half an ulp of bf16, plus the kept lowest bit, carries into the kept bits
  // exactly when the dropped half is above half an ulp, or equal to it with the kept value odd.
  bits += 0x7FFFu + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

float float_from_bf16(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void convert(uint16_t* out, const float* in, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = bf16_from_float(in[i]);
}

void convert(float* out, const uint16_t* in, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float_from_bf16(in[i]);
}

}  // namespace opd::cpu
