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
//
// A linear may carry a LoRA adapter (model/lora.h): y += scale (x A^T) B^T, A [R, in] and B
// [out, R] in the backend's adapter buffer, split like the linear (docs/ARCHITECTURE.md §4):
// - column-parallel: B holds this rank's output rows, A is whole. The rank's output rows are
//   x W_r^T + scale (x A^T) B_r^T, exactly its block of the whole adapted output. In backward
//   dB_r = scale dy_r^T (x A^T) is local, du_r = scale dy_r B_r is this rank's share of du, so
//   dA = sum_r du_r^T x is partial (summed over TP) and du_r A joins dx's share, which
//   column_parallel_backward already sums.
// - row-parallel: A holds this rank's input columns, B is whole. x A^T = sum_r x_r A_r^T, so by
//   linearity each rank adds scale (x_r A_r^T) B^T to its partial product before the one output
//   sum. In backward dy is whole: du = scale dy B is the same on every rank, dA_r = du^T x_r and
//   dx_r += du A_r are local, and dB = scale dy^T sum_r x_r A_r^T is partial (summed over TP).
// Under LoRA the base weights are frozen: backends return a null weight gradient, and the ops
// then compute the input's gradient only.
#pragma once
#include <cstddef>
#include <initializer_list>
#include <utility>

namespace opd {

// A linear's LoRA adapter: A and B offsets in the backend's adapter buffer, the rank and alpha / R;
// inactive (rank 0) on a linear without one.
struct LoraTerm {
  size_t a = 0, b = 0;
  int rank = 0;
  float scale = 0;
  bool active() const { return rank > 0; }
};

// y += scale (x A^T) B^T, and its backward: the adapter's part of either kind of linear, whose
// shapes (in, out) are this rank's.
template <class Backend>
void lora_forward(Backend& be, const LoraTerm& t, typename Backend::act* y, const typename Backend::act* x, int N,
                  int in, int out) {
  if (t.active())
    be.lora_forward(y, x, be.lora_weights() + t.a, be.lora_weights() + t.b, N, in, t.rank, out, t.scale);
}
template <class Backend>
void lora_backward(Backend& be, const LoraTerm& t, typename Backend::act* dx, const typename Backend::act* dy,
                   const typename Backend::act* x, int N, int in, int out) {
  if (t.active())
    be.lora_backward(dx, be.lora_grad(t.a), be.lora_grad(t.b), dy, x, be.lora_weights() + t.a,
                     be.lora_weights() + t.b, N, in, t.rank, out, t.scale);
}

template <class Backend>
class ColumnParallelLinear {
 public:
  using act = typename Backend::act;
  ColumnParallelLinear() = default;
  ColumnParallelLinear(size_t offset, int in, int out, LoraTerm lora = {})
      : offset_(offset), in_(in), out_(out), lora_(lora) {}

  // y = x W^T (+ the adapter's term) over this rank's output rows.
  void forward(Backend& be, act* y, const act* x, int N) const {
    be.matmul_forward(y, x, be.weights() + offset_, N, in_, out_, /*accumulate=*/false);
    lora_forward(be, lora_, y, x, N, in_, out_);
  }
  // Adds this rank's share of dL/dx to dx, and dL/dW (or the adapter's gradients) to the gradients
  // (column_parallel_backward).
  void add_backward_share(Backend& be, act* dx, const act* dy, const act* x, int N) const {
    be.matmul_backward(dx, be.weight_grad(offset_), dy, x, be.weights() + offset_, N, in_, out_);
    lora_backward(be, lora_, dx, dy, x, N, in_, out_);
  }
  int in() const { return in_; }

 private:
  size_t offset_ = 0;
  int in_ = 0, out_ = 0;
  LoraTerm lora_;
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
  RowParallelLinear(size_t offset, int in, int out, LoraTerm lora = {})
      : offset_(offset), in_(in), out_(out), lora_(lora) {}

  // out = residual + x W^T (+ the adapter's term), the ranks' partial products summed. out may be
  // residual.
  void forward(Backend& be, act* out, const act* residual, const act* x, int N) const {
    const size_t n = size_t(N) * out_;
    const bool joins = be.tp_rank() == 0;  // the residual joins once
    if (joins) be.copy(out, residual, n);
    be.matmul_forward(out, x, be.weights() + offset_, N, in_, out_, /*accumulate=*/joins);
    lora_forward(be, lora_, out, x, N, in_, out_);  // a partial product too, summed with the rest
    be.tp_sum(out, n);
  }
  // dx = dy W on this rank's input columns (dy is whole on every rank: no collective), and dL/dW
  // (or the adapter's gradients).
  void backward(Backend& be, act* dx, const act* dy, const act* x, int N) const {
    be.zero(dx, size_t(N) * in_);
    be.matmul_backward(dx, be.weight_grad(offset_), dy, x, be.weights() + offset_, N, in_, out_);
    lora_backward(be, lora_, dx, dy, x, N, in_, out_);
  }

 private:
  size_t offset_ = 0;
  int in_ = 0, out_ = 0;
  LoraTerm lora_;
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
  // Scatter-adds dout into this rank's rows (each rank's tokens are the same: no collective);
  // nothing for a frozen table.
  void backward(Backend& be, const act* dout, const int* tokens, int N) const {
    if (float* dtable = be.weight_grad(offset_))
      be.embedding_backward(dtable, dout, tokens, N, C_, v0_, rows_, split_);
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
    be.logits_backward(dx, be.weight_grad(offset_), dlogits, x, be.weights() + offset_, N, C_, rows_);
    be.tp_sum(dx, n);
  }

 private:
  size_t offset_ = 0;
  int C_ = 0, rows_ = 0;
};

}  // namespace opd
