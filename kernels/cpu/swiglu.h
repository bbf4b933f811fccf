// SwiGLU gate of the MLP: out = silu(gate) * up, elementwise.
#pragma once
#include <cstddef>

namespace opd::cpu {

template <typename T>
void swiglu_forward(T* out, const T* gate, const T* up, size_t n);

// dgate, dup are overwritten.
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n);

}  // namespace opd::cpu
