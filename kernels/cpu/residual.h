// Residual add: out = x + y elementwise, where a branch's output joins the residual stream and
// no GEMM's accumulate (beta = 1) can do it. Its backward needs no op: the gradient of the sum
// reaches x and y unchanged.
#pragma once
#include <cstddef>

namespace opd::cpu {

// out may alias x or y.
template <typename T>
void residual_forward(T* out, const T* x, const T* y, size_t n);

}  // namespace opd::cpu
