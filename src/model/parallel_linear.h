// Megatron-LM's tensor-parallel layers over a decoder backend (docs/ARCHITECTURE.md §4), as types
// whose collectives are part of the call, so that no layer can forget one:
// - ColumnParallelLinear: this rank holds a block of output rows; the input is whole on every rank.
//   The input's gradient is the sum of every rank's share (and of every linear reading that
//   input): column_parallel_backward zeroes it, adds the shares and sums over the TP group.
// - RowParallelLinear: this rank holds a block of input columns (the heads or FFN units it owns);
//   the outputs' partial products are summed over the group, the residual joining once (rank 0).
// - VocabParallelEmbedding / VocabParallelHead: rows split by vocabulary id; a token's row is on
//   one rank (the others add zeros), each rank's logits are its [N, V / tp] slab, never gathered.
// Without tensor parallelism every collective is a no-op. Weights are [out, in] (Hugging Face).
#pragma once
#include <cstddef>
#include <initializer_list>
#include <utility>

namespace opd {

template <class Backend>
class ColumnParallelLinear {
 public:
  using act = typename Backend::act;
  ColumnParallelLinear() = default;
  ColumnParallelLinear(size_t offset, int in, int out) : offset_(offset), in_(in), out_(out) {}

  // y = x W^T over this rank's output rows.
  void forward(Backend& be, act* y, const act* x, int N) const {
    be.matmul_forward(y, x, be.weights() + offset_, N, in_, out_, /*accumulate=*/false);
  }
  // Adds this rank's share of dL/dx to dx, and dL/dW to the gradients (column_parallel_backward).
  void add_backward_share(Backend& be, act* dx, const act* dy, const act* x, int N) const {
    be.matmul_backward(dx, be.grads() + offset_, dy, x, be.weights() + offset_, N, in_, out_);
  }
  int in() const { return in_; }

 private:
  size_t offset_ = 0;
  int in_ = 0, out_ = 0;
};

// dx = sum over the linears reading x, and over the TP group, of their shares of dL/dx.
template <class Backend>
void column_parallel_backward(
    Backend& be, typename Backend::act* dx, const typename Backend::act* x, int N,
    std::initializer_list<std::pair<const ColumnParallelLinear<Backend>*, const typename Backend::act*>> readers) {
  const size_t n = size_t(N) * readers.begin()->first->in();
  be.zero(dx, n);
  for (const auto& [linear, dy] : readers) linear->add_backward_share(be, dx, dy, x, N);
  be.tp_sum(dx, n);
}

template <class Backend>
class RowParallelLinear {
 public:
  using act = typename Backend::act;
  RowParallelLinear() = default;
  RowParallelLinear(size_t offset, int in, int out) : offset_(offset), in_(in), out_(out) {}

  // out = residual + x W^T, the ranks' partial products summed. out may be residual.
  void forward(Backend& be, act* out, const act* residual, const act* x, int N) const {
    const size_t n = size_t(N) * out_;
    const bool joins = be.tp_rank() == 0;  // the residual joins once
    if (joins) be.copy(out, residual, n);
    be.matmul_forward(out, x, be.weights() + offset_, N, in_, out_, /*accumulate=*/joins);
    be.tp_sum(out, n);
  }
  // dx = dy W on this rank's input columns (dy is whole on every rank: no collective), and dL/dW.
  void backward(Backend& be, act* dx, const act* dy, const act* x, int N) const {
    be.zero(dx, size_t(N) * in_);
    be.matmul_backward(dx, be.grads() + offset_, dy, x, be.weights() + offset_, N, in_, out_);
  }

 private:
  size_t offset_ = 0;
  int in_ = 0, out_ = 0;
};

template <class Backend>
class VocabParallelEmbedding {
 public:
  using act = typename Backend::act;
  VocabParallelEmbedding() = default;
  // Rows [v0, v0 + rows) of a vocabulary of `vocab`, each of width C.
  VocabParallelEmbedding(size_t offset, int C, int v0, int rows, int vocab)
      : offset_(offset), C_(C), v0_(v0), rows_(rows), split_(rows != vocab) {}

  void forward(Backend& be, act* out, const int* tokens, int N) const {
    be.embedding_forward(out, tokens, be.weights() + offset_, N, C_, v0_, rows_, split_);
    if (split_) be.tp_sum(out, size_t(N) * C_);  // one rank holds each row, the others add zeros
  }
  // Scatter-adds dout into this rank's rows (each rank's tokens are the same: no collective).
  void backward(Backend& be, const act* dout, const int* tokens, int N) const {
    be.embedding_backward(be.grads() + offset_, dout, tokens, N, C_, v0_, rows_, split_);
  }

 private:
  size_t offset_ = 0;
  int C_ = 0, v0_ = 0, rows_ = 0;
  bool split_ = false;
};

template <class Backend>
class VocabParallelHead {
 public:
  using act = typename Backend::act;
  VocabParallelHead() = default;
  VocabParallelHead(size_t offset, int C, int rows) : offset_(offset), C_(C), rows_(rows) {}

  // This rank's fp32 logits slab [N, rows].
  void forward(Backend& be, float* logits, const act* x, int N) const {
    be.logits_forward(logits, x, be.weights() + offset_, N, C_, rows_);
  }
  // dx = the sum over ranks of dlogits W (each rank's share from its slab), and dL/dW.
  void backward(Backend& be, act* dx, const float* dlogits, const act* x, int N) const {
    const size_t n = size_t(N) * C_;
    be.zero(dx, n);
    be.logits_backward(dx, be.grads() + offset_, dlogits, x, be.weights() + offset_, N, C_, rows_);
    be.tp_sum(dx, n);
  }

 private:
  size_t offset_ = 0;
  int C_ = 0, rows_ = 0;
};

}  // namespace opd
