// The precision boundary between fp32 and bf16, on the host. The CPU ops have no bf16 type, so a
// bf16 value is its 16 bits (the high half of the float it rounds); this is the reference the
// CUDA convert op (kernels/cuda/convert.cuh) must match bit for bit, and what the safetensors
// reader and writer use.
#pragma once
#include <cstddef>
#include <cstdint>

namespace opd::cpu {

// Round to nearest even. Overflow goes to inf, denormals are kept (never flushed to zero), and a
// NaN stays a NaN of the same sign with its payload's top bits, made quiet so that truncating
// the payload cannot turn it into an inf.
uint16_t bf16_from_float(float f);

// Exact: every bf16 value is a float.
float float_from_bf16(uint16_t h);

// out[i] = bf16_from_float(in[i]), and back; out may not overlap in.
void convert(uint16_t* out, const float* in, size_t n);
void convert(float* out, const uint16_t* in, size_t n);

}  // namespace opd::cpu
