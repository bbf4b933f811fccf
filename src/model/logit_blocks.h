// The logits of one forward, a block of rows at a time (docs/ARCHITECTURE.md §2, the streamed
// head). Everything that reads a forward's logits rows — the objectives, the teacher's scores, the
// evaluation's KL — is written once against this, and runs unchanged on either of:
//
// - rows in memory: the [N, V] logits of Transformer::forward (or any rows a caller holds), one
//   block; their gradient goes into one [N, V] buffer and Transformer::backward at the end. With
//   the shipped vocabulary this is every path, in today's order of ops.
// - the streamed head: Transformer::forward_hidden, then the LM head over `head_rows()` rows at a
//   time. Each block's logits are computed when asked for (again if asked again), its gradient is
//   back-propagated into the hidden rows and the head's weight as soon as it is written, and
//   [N, V] is never held: a block of logits and one of their gradient are.
//
// Why blocks of rows (tokens) and not of vocabulary columns: every quantity the objectives need —
// log-softmax, entropy, the full and top-K reverse KL, top-K, cross-entropy — is a function of one
// row, so a block of whole rows runs the existing row ops (and under tensor parallelism their
// vocabulary-split forms, exchanging [n]-sized statistics per block) without a second pass: the
// head's GEMMs are the unfused ones, split by rows. A vocabulary chunk would need the row's
// log-sum-exp over every chunk before any gradient, i.e. the head's forward GEMM once more.
#pragma once
#include <memory>

#include "model/transformer.h"

namespace opd {

class LogitBlocks {
 public:
  struct Block {
    int r0 = 0, n = 0;              // rows [r0, r0 + n) of the forward
    const float* logits = nullptr;  // [n, V] (this rank's vocabulary shard), where the model keeps rows
    float* dlogits = nullptr;       // [n, V] for their gradient (null when nothing is trained)
  };
  virtual ~LogitBlocks() = default;
  virtual const VocabShard& vocab() const = 0;
  virtual int rows() const = 0;
  virtual int count() const = 0;
  // Block i: its logits (computed now on the streamed head) and a buffer for its dL/dlogits, both
  // valid until the next call.
  virtual Block block(int i) = 0;
  // Block b's dlogits are written: its share of backward (the streamed head runs it now).
  virtual void backward(const Block& b) = 0;
  // Every block's backward has run: the rest of the model's backward.
  virtual void finish_backward() = 0;
};

// Rows in memory: one block over N rows. With a model, finish_backward runs its backward from
// `dlogits`; without one (rows a caller assembled, or a test's), backward is the caller's.
class RowsInMemory final : public LogitBlocks {
 public:
  RowsInMemory(const VocabShard& vocab, int N, const float* logits, float* dlogits, Transformer* model = nullptr)
      : vocab_(vocab), N_(N), logits_(logits), dlogits_(dlogits), model_(model) {}
  const VocabShard& vocab() const override { return vocab_; }
  int rows() const override { return N_; }
  int count() const override { return 1; }
  Block block(int) override { return {0, N_, logits_, dlogits_}; }
  void backward(const Block&) override {}
  void finish_backward() override;

 private:
  VocabShard vocab_;
  int N_;
  const float* logits_;
  float* dlogits_;
  Transformer* model_;
};

// The streamed head over the rows of the model's last forward_hidden (or, with `extended`, its
// last extend_hidden: then forward only).
class StreamedHead final : public LogitBlocks {
 public:
  StreamedHead(Transformer& model, int N, bool train, bool extended = false);
  const VocabShard& vocab() const override { return model_.vocab_shard(); }
  int rows() const override { return N_; }
  int count() const override { return (N_ + block_ - 1) / block_; }
  Block block(int i) override;
  void backward(const Block& b) override;
  void finish_backward() override;

 private:
  Transformer& model_;
  int N_, block_;
  bool train_, extended_;
};

// The forward of a batch of token ids [B, T] and its logits: rows in memory when B*T rows fit the
// model's head block, else the hidden rows and the streamed head. `train`: with dL/dlogits buffers
// and backward (finish_backward runs the model's).
std::unique_ptr<LogitBlocks> forward_logits(Transformer& model, const int* tokens, int B, int T, bool train);

}  // namespace opd
