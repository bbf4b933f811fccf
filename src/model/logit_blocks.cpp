#include "model/logit_blocks.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

void RowsInMemory::finish_backward() {
  if (model_) model_->backward(dlogits_);
}

StreamedHead::StreamedHead(Transformer& model, int N, bool train, bool extended)
    : model_(model), N_(N), block_(model.head_rows() > 0 ? std::min(N, model.head_rows()) : N), train_(train),
      extended_(extended) {
  OPD_REQUIRE(N >= 1, "streamed head: ", N, " rows");
  OPD_REQUIRE(!(train && extended), "streamed head: an extend's rows are not trained");
}

LogitBlocks::Block StreamedHead::block(int i) {
  OPD_REQUIRE(i >= 0 && i < count(), "streamed head: block ", i, " of ", count());
  Block b;
  b.r0 = i * block_;
  b.n = std::min(block_, N_ - b.r0);
  b.logits = model_.head_logits(b.r0, b.n, extended_);
  if (train_) b.dlogits = model_.dlogits_buffer(size_t(b.n) * model_.vocab_shard().size);
  return b;
}

void StreamedHead::backward(const Block& b) {
  OPD_REQUIRE(train_, "streamed head: backward of a forward-only pass");
  model_.head_backward(b.dlogits, b.r0, b.n);
}

void StreamedHead::finish_backward() {
  OPD_REQUIRE(train_, "streamed head: backward of a forward-only pass");
  model_.backward_hidden();
}

std::unique_ptr<LogitBlocks> forward_logits(Transformer& model, const int* tokens, int B, int T, bool train) {
  const int N = B * T;
  if (model.streams_head(size_t(N))) {
    model.forward_hidden(tokens, B, T);
    return std::make_unique<StreamedHead>(model, N, train);
  }
  const float* logits = model.forward(tokens, B, T);
  float* dlogits = train ? model.dlogits_buffer(size_t(N) * model.vocab_shard().size) : nullptr;
  return std::make_unique<RowsInMemory>(model.vocab_shard(), N, logits, dlogits, train ? &model : nullptr);
}

}  // namespace opd
