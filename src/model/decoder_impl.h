// The decoder, written once (docs/ARCHITECTURE.md §2): the Qwen3-family layer sequence, forward and
// backward side by side, and the KV-cache paths (prefill, extend, decode) built from the same
// blocks. Instantiated for each backend (model/backend_cpu.cpp, model/backend_cuda.cpp); the
// backend supplies memory and the ops, under the same names on every device.
//
//   x_mid = x + o(attn(rope(qknorm(q(rms(x)))), rope(qknorm(k(rms(x)))), v(rms(x))))
//   x_out = x_mid + down(silu(gate(rms(x_mid))) * up(rms(x_mid)))
//   logits = head(rms(x_L))
//
// Activations are named buffers of the backend, as the GPU memory plan names them
// (model/memory_plan.h): training keeps every layer's set "L<l>.*" (or, with recompute, only each
// layer's input "L<l>.resid" and one set "layer.*" recomputed in backward); a forward-only model
// keeps one residual stream "stream.resid" and one set. The KV-cache paths use the set "dec.*".
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/parallel_linear.h"
#include "model/params.h"

namespace opd {

template <class Backend>
class DecoderImpl final : public Decoder {
 public:
  using act = typename Backend::act;

  DecoderImpl(DecoderShape shape, std::unique_ptr<Backend> backend);

  const float* forward(const int* tokens, int B, int T, KVCache* cache = nullptr, int fill = 0) override;
  void backward(const float* dlogits) override;
  void reset_cache(KVCache& cache, int B, int capacity) const override;
  const float* extend(KVCache& cache, const int* tokens, int T, const int* start) override;
  const float* prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len) override;
  void fork_cache(KVCache& cache, int len) override;

  float* dlogits(size_t n) override { return be_->template buffer<float>("dlogits", n); }
  float* scratch_rows(size_t n) override {
    float* rows = be_->template buffer<float>("scores.logits", n);
    be_->zero(rows, n);
    return rows;
  }
  void copy_floats(float* dst, const float* src, size_t n) override { be_->copy(dst, src, n); }
  void zero_grad() override { be_->zero(be_->grads(), total_size(s_.specs)); }
  void reduce_partial_grads() override;
  void all_reduce_grads(Communicator& dp) override { be_->all_reduce_grads(dp, total_size(s_.specs)); }
  TrainingMemory training_memory() override { return be_->training_memory(); }
  void download_params(std::vector<float>& host) override { be_->download_params(host); }
  bool device() const override { return Backend::kDevice; }
  void* stream() const override { return be_->stream(); }
  std::string memory_report(const std::string& title) const override { return be_->memory_report(title); }

 private:
  // One layer's activations (or the KV-cache paths' scratch, where resid = mid and ln2 = ln1).
  struct Acts {
    act *resid, *ln1, *q, *k, *v, *qr, *kr, *att, *mid, *ln2, *gate, *up, *h;
    float *rstd1, *q_rstd, *k_rstd, *lse, *rstd2;
  };
  struct Layer {
    size_t input_norm, post_norm, q_norm, k_norm;
    ColumnParallelLinear<Backend> q, k, v, gate, up;
    RowParallelLinear<Backend> o, down;
  };

  Acts layer_acts(int l, size_t N);
  Acts cache_path_acts(size_t N);
  act* layer_output(int l, size_t N);
  act* grad(const char* name, size_t n) { return be_->template buffer<act>(std::string("grad.") + name, n); }
  const act* weight(size_t offset) const { return be_->weights() + offset; }
  float* wgrad(size_t offset) { return be_->grads() + offset; }
  void check_tokens(const int* tokens, size_t n) const;

  // The layer's blocks, forward and backward side by side. pos: positions of the N rows.
  void qkv_forward(const Layer& L, const Acts& a, int N, const int* pos);
  void attention_block_forward(int l, const Acts& a, int B, int T, KVCache* cache, int fill);
  void attention_block_backward(const Layer& L, const Acts& a, int B, int T);
  void mlp_block_forward(const Layer& L, const Acts& a, act* out, int N);
  void mlp_block_backward(const Layer& L, const Acts& a, int N);
  // Attention of new rows against the cache (the KV-cache paths): row t of each sequence is one
  // decode step that sees the cache up to its own position.
  void attend_cached(int l, const Acts& a, KVCache& cache, int B, int T, const std::vector<int>& pos);

  DecoderShape s_;
  std::unique_ptr<Backend> be_;
  std::vector<Layer> layers_;
  VocabParallelEmbedding<Backend> embedding_;
  VocabParallelHead<Backend> head_;
  int B_ = 0, T_ = 0;                             // the last forward's shape
  const int *tokens_ = nullptr, *pos_ = nullptr;  // its token ids and positions, in the backend's memory
};

// ------------------------------------------------------------------------------------------------

template <class Backend>
DecoderImpl<Backend>::DecoderImpl(DecoderShape shape, std::unique_ptr<Backend> backend)
    : s_(std::move(shape)), be_(std::move(backend)) {
  const int C = s_.cfg.d_model;
  for (const LayerOffsets& o : s_.off.layers) {
    Layer L{o.input_norm, o.post_norm, o.q_norm, o.k_norm, {o.q, C, s_.QD}, {o.k, C, s_.KD}, {o.v, C, s_.KD},
            {o.gate, C, s_.F}, {o.up, C, s_.F}, {o.o, s_.QD, C}, {o.down, s_.F, C}};
    layers_.push_back(L);
  }
  embedding_ = VocabParallelEmbedding<Backend>(s_.off.embed, C, s_.v0, s_.V, s_.cfg.vocab);
  head_ = VocabParallelHead<Backend>(s_.off.lm_head, C, s_.V);
}

template <class Backend>
void DecoderImpl<Backend>::check_tokens(const int* tokens, size_t n) const {
  for (size_t i = 0; i < n; ++i)
    OPD_REQUIRE(tokens[i] >= 0 && tokens[i] < s_.cfg.vocab, "model: token id ", tokens[i], " at index ", i,
                " is outside the vocabulary [0, ", s_.cfg.vocab, ")");
}

template <class Backend>
typename DecoderImpl<Backend>::Acts DecoderImpl<Backend>::layer_acts(int l, size_t N) {
  const bool own = s_.train && !s_.recompute;  // every layer keeps its own set
  const std::string set = own ? str("L", l, ".") : std::string("layer.");
  const size_t C = s_.cfg.d_model, F = s_.F, QD = s_.QD, KD = s_.KD;
  Backend& be = *be_;
  const auto a = [&](const char* name, size_t width) { return be.template buffer<act>(set + name, N * width); };
  const auto f = [&](const char* name, size_t width) { return be.template buffer<float>(set + name, N * width); };
  Acts x;
  x.resid = s_.train ? be.template buffer<act>(str("L", l, ".resid"), N * C) : be.template buffer<act>("stream.resid", N * C);
  x.ln1 = a("ln1", C), x.q = a("q", QD), x.k = a("k", KD), x.v = a("v", KD), x.qr = a("qr", QD), x.kr = a("kr", KD);
  x.att = a("att", QD), x.mid = a("mid", C), x.ln2 = a("ln2", C), x.gate = a("gate", F), x.up = a("up", F);
  x.h = a("h", F);
  x.rstd1 = f("rstd1", 1), x.q_rstd = f("q_rstd", s_.H), x.k_rstd = f("k_rstd", s_.HK), x.lse = f("lse", s_.H);
  x.rstd2 = f("rstd2", 1);
  return x;
}

template <class Backend>
typename DecoderImpl<Backend>::Acts DecoderImpl<Backend>::cache_path_acts(size_t N) {
  const size_t C = s_.cfg.d_model, F = s_.F, QD = s_.QD, KD = s_.KD;
  Backend& be = *be_;
  const auto a = [&](const char* name, size_t width) { return be.template buffer<act>(str("dec.", name), N * width); };
  const auto f = [&](const char* name, size_t width) { return be.template buffer<float>(str("dec.", name), N * width); };
  Acts x;
  x.resid = x.mid = a("x", C);  // the residual stream is updated in place
  x.ln1 = x.ln2 = a("ln1", C);
  x.q = a("q", QD), x.k = a("k", KD), x.v = a("v", KD), x.qr = a("qr", QD), x.kr = a("kr", KD), x.att = a("att", QD);
  x.gate = a("gate", F), x.up = a("up", F), x.h = a("h", F);
  x.rstd1 = x.rstd2 = f("rstd1", 1);
  x.q_rstd = f("q_rstd", s_.H), x.k_rstd = f("k_rstd", s_.HK), x.lse = nullptr;
  return x;
}

template <class Backend>
typename DecoderImpl<Backend>::act* DecoderImpl<Backend>::layer_output(int l, size_t N) {
  const size_t n = N * s_.cfg.d_model;
  if (l + 1 == s_.cfg.n_layers) return be_->template buffer<act>("final.resid", n);
  return s_.train ? be_->template buffer<act>(str("L", l + 1, ".resid"), n) : be_->template buffer<act>("stream.resid", n);
}

// ---- the blocks --------------------------------------------------------------------------------

template <class Backend>
void DecoderImpl<Backend>::qkv_forward(const Layer& L, const Acts& a, int N, const int* pos) {
  Backend& be = *be_;
  const int C = s_.cfg.d_model, H = s_.H, HK = s_.HK, D = s_.cfg.head_dim;
  const float eps = static_cast<float>(s_.cfg.rms_eps);
  be.rmsnorm_forward(a.ln1, a.rstd1, a.resid, weight(L.input_norm), N, C, eps);
  L.q.forward(be, a.q, a.ln1, N);
  L.k.forward(be, a.k, a.ln1, N);
  L.v.forward(be, a.v, a.ln1, N);
  if (s_.cfg.qk_norm) {
    be.rmsnorm_forward(a.qr, a.q_rstd, a.q, weight(L.q_norm), N * H, D, eps);
    be.rmsnorm_forward(a.kr, a.k_rstd, a.k, weight(L.k_norm), N * HK, D, eps);
  } else {
    be.copy(a.qr, a.q, size_t(N) * s_.QD);
    be.copy(a.kr, a.k, size_t(N) * s_.KD);
  }
  be.rope_forward(a.qr, pos, N, H, D);
  be.rope_forward(a.kr, pos, N, HK, D);
}

template <class Backend>
void DecoderImpl<Backend>::attention_block_forward(int l, const Acts& a, int B, int T, KVCache* cache, int fill) {
  Backend& be = *be_;
  const Layer& L = layers_[l];
  const int N = B * T, HK = s_.HK, D = s_.cfg.head_dim;
  qkv_forward(L, a, N, pos_);
  if (cache) {  // prefill: this batch's keys and values are cache sequences [fill, fill + B)
    const size_t first = size_t(fill) * cache->stride * s_.KD;
    be.kv_cache_write(be.cache_k(*cache, l) + first, be.cache_v(*cache, l) + first, a.kr, a.v, B, T, cache->stride,
                      HK, D);
  }
  be.attention_forward(a.att, a.lse, a.qr, a.kr, a.v, B, T, s_.H, HK, D);
  L.o.forward(be, a.mid, a.resid, a.att, N);
}

template <class Backend>
void DecoderImpl<Backend>::attention_block_backward(const Layer& L, const Acts& a, int B, int T) {
  Backend& be = *be_;
  const int N = B * T, C = s_.cfg.d_model, H = s_.H, HK = s_.HK, D = s_.cfg.head_dim;
  act *dresid = grad("dresid", size_t(N) * C), *dln = grad("dln", size_t(N) * C);
  act *datt = grad("datt", size_t(N) * s_.QD), *dq = grad("dq", size_t(N) * s_.QD), *dk = grad("dk", size_t(N) * s_.KD),
      *dv = grad("dv", size_t(N) * s_.KD);
  L.o.backward(be, datt, dresid, a.att, N);
  be.attention_backward(dq, dk, dv, datt, a.qr, a.kr, a.v, a.att, a.lse, B, T, H, HK, D);
  be.rope_backward(dq, pos_, N, H, D);
  be.rope_backward(dk, pos_, N, HK, D);
  const act *dq_proj = dq, *dk_proj = dk;
  if (s_.cfg.qk_norm) {
    act *dqp = grad("dqp", size_t(N) * s_.QD), *dkp = grad("dkp", size_t(N) * s_.KD);
    be.zero(dqp, size_t(N) * s_.QD);
    be.zero(dkp, size_t(N) * s_.KD);
    be.rmsnorm_backward(dqp, wgrad(L.q_norm), dq, a.q, weight(L.q_norm), a.q_rstd, N * H, D);
    be.rmsnorm_backward(dkp, wgrad(L.k_norm), dk, a.k, weight(L.k_norm), a.k_rstd, N * HK, D);
    dq_proj = dqp;
    dk_proj = dkp;
  }
  column_parallel_backward(be, dln, a.ln1, N, {{&L.q, dq_proj}, {&L.k, dk_proj}, {&L.v, dv}});
  be.rmsnorm_backward(dresid, wgrad(L.input_norm), dln, a.resid, weight(L.input_norm), a.rstd1, N, C);
}

template <class Backend>
void DecoderImpl<Backend>::mlp_block_forward(const Layer& L, const Acts& a, act* out, int N) {
  Backend& be = *be_;
  be.rmsnorm_forward(a.ln2, a.rstd2, a.mid, weight(L.post_norm), N, s_.cfg.d_model, static_cast<float>(s_.cfg.rms_eps));
  L.gate.forward(be, a.gate, a.ln2, N);
  L.up.forward(be, a.up, a.ln2, N);
  be.swiglu_forward(a.h, a.gate, a.up, size_t(N) * s_.F);
  if (out) L.down.forward(be, out, a.mid, a.h, N);  // null: recomputing for backward, the output is kept
}

template <class Backend>
void DecoderImpl<Backend>::mlp_block_backward(const Layer& L, const Acts& a, int N) {
  Backend& be = *be_;
  const int C = s_.cfg.d_model, F = s_.F;
  act *dresid = grad("dresid", size_t(N) * C), *dln = grad("dln", size_t(N) * C);
  act *dh = grad("dh", size_t(N) * F), *dgate = grad("dgate", size_t(N) * F), *dup = grad("dup", size_t(N) * F);
  L.down.backward(be, dh, dresid, a.h, N);
  be.swiglu_backward(dgate, dup, dh, a.gate, a.up, size_t(N) * F);
  column_parallel_backward(be, dln, a.ln2, N, {{&L.gate, dgate}, {&L.up, dup}});
  be.rmsnorm_backward(dresid, wgrad(L.post_norm), dln, a.mid, weight(L.post_norm), a.rstd2, N, C);
}

// ---- training forward and backward -------------------------------------------------------------

template <class Backend>
const float* DecoderImpl<Backend>::forward(const int* tokens, int B, int T, KVCache* cache, int fill) {
  OPD_REQUIRE(B > 0 && T > 0, "model: empty batch (B = ", B, ", T = ", T, ")");
  OPD_REQUIRE(T <= s_.cfg.max_seq, "model: sequence length ", T, " exceeds max_seq = ", s_.cfg.max_seq);
  OPD_REQUIRE(!cache || (fill >= 0 && fill + B <= cache->batch && T <= cache->capacity), "model: prefill of ", B,
              " x ", T, " tokens from sequence ", fill, " does not fit a cache of ", cache ? cache->batch : 0, " x ",
              cache ? cache->capacity : 0);
  be_->check_forward(B, T);
  const size_t N = size_t(B) * T;
  const int C = s_.cfg.d_model;
  check_tokens(tokens, N);
  std::vector<int> pos(N);
  for (size_t i = 0; i < N; ++i) pos[i] = static_cast<int>(i % T);
  tokens_ = be_->ints("tokens", tokens, N);
  pos_ = be_->ints("positions", pos.data(), N);
  B_ = B;
  T_ = T;

  Backend& be = *be_;
  embedding_.forward(be, layer_acts(0, N).resid, tokens_, int(N));
  for (int l = 0; l < s_.cfg.n_layers; ++l) {
    const Acts a = layer_acts(l, N);
    attention_block_forward(l, a, B, T, cache, fill);
    mlp_block_forward(layers_[l], a, layer_output(l, N), int(N));
  }
  act* lnf = be.template buffer<act>("final.ln", N * C);
  be.rmsnorm_forward(lnf, be.template buffer<float>("final.rstd", N), be.template buffer<act>("final.resid", N * C),
                     weight(s_.off.final_norm), int(N), C, static_cast<float>(s_.cfg.rms_eps));
  float* logits = be.template buffer<float>("logits", N * s_.V);
  head_.forward(be, logits, lnf, int(N));
  be.finish();
  return logits;
}

template <class Backend>
void DecoderImpl<Backend>::backward(const float* dlogits) {
  OPD_REQUIRE(s_.train, "model: backward on a model planned without training");
  OPD_REQUIRE(B_ > 0, "model: backward called before forward");
  Backend& be = *be_;
  const int B = B_, T = T_, N = B * T, C = s_.cfg.d_model;
  act *dresid = grad("dresid", size_t(N) * C), *dln = grad("dln", size_t(N) * C);
  be.zero(dresid, size_t(N) * C);
  head_.backward(be, dln, dlogits, be.template buffer<act>("final.ln", size_t(N) * C), N);
  be.rmsnorm_backward(dresid, wgrad(s_.off.final_norm), dln, be.template buffer<act>("final.resid", size_t(N) * C),
                      weight(s_.off.final_norm), be.template buffer<float>("final.rstd", N), N, C);
  for (int l = s_.cfg.n_layers - 1; l >= 0; --l) {
    const Layer& L = layers_[l];
    const Acts a = layer_acts(l, N);
    if (s_.recompute) {
      attention_block_forward(l, a, B, T, nullptr, 0);
      mlp_block_forward(L, a, nullptr, N);
    }
    mlp_block_backward(L, a, N);
    attention_block_backward(L, a, B, T);
  }
  embedding_.backward(be, dresid, tokens_, N);
  be.finish();
}

template <class Backend>
void DecoderImpl<Backend>::reduce_partial_grads() {
  for (const ParamSpec& p : s_.specs)
    if (p.partial_grad) be_->tp_sum(be_->grads() + p.offset, p.size);
  be_->finish();
}

// ---- the KV-cache paths ------------------------------------------------------------------------

template <class Backend>
void DecoderImpl<Backend>::reset_cache(KVCache& cache, int B, int capacity) const {
  OPD_REQUIRE(B >= 1, "model: a KV cache of ", B, " sequences");
  OPD_REQUIRE(capacity <= s_.cfg.max_seq, "model: KV cache of ", capacity, " positions exceeds max_seq = ",
              s_.cfg.max_seq);
  be_->reset_cache(cache, B, capacity, size_t(s_.KD));
}

template <class Backend>
void DecoderImpl<Backend>::attend_cached(int l, const Acts& a, KVCache& cache, int B, int T,
                                         const std::vector<int>& pos) {
  Backend& be = *be_;
  const int S = cache.stride, H = s_.H, HK = s_.HK, D = s_.cfg.head_dim;
  act *kc = be.cache_k(cache, l), *vc = be.cache_v(cache, l);
  if (T == 1) return be.attention_decode(a.att, a.qr, a.kr, a.v, kc, vc, be.ints("dec.pos", pos.data(), B), B, S, H,
                                         HK, D);
  const size_t QD = s_.QD, KD = s_.KD;
  act *q = be.template buffer<act>("dec.q_t", B * QD), *k = be.template buffer<act>("dec.k_t", B * KD),
      *v = be.template buffer<act>("dec.v_t", B * KD), *out = be.template buffer<act>("dec.att_t", B * QD);
  std::vector<int> pos_t(B);
  for (int t = 0; t < T; ++t) {
    be.copy_rows(q, QD, a.qr + t * QD, T * QD, QD, B);
    be.copy_rows(k, KD, a.kr + t * KD, T * KD, KD, B);
    be.copy_rows(v, KD, a.v + t * KD, T * KD, KD, B);
    for (int b = 0; b < B; ++b) pos_t[b] = pos[size_t(b) * T + t];
    be.attention_decode(out, q, k, v, kc, vc, be.ints("dec.pos_t", pos_t.data(), B), B, S, H, HK, D);
    be.copy_rows(a.att + t * QD, T * QD, out, QD, QD, B);
  }
}

template <class Backend>
const float* DecoderImpl<Backend>::extend(KVCache& cache, const int* tokens, int T, const int* start) {
  const int B = cache.batch, C = s_.cfg.d_model;
  OPD_REQUIRE(T > 0, "model: extend by ", T, " tokens");
  const int N = B * T;
  check_tokens(tokens, size_t(N));
  std::vector<int> pos(N);
  for (int b = 0; b < B; ++b) {
    OPD_REQUIRE(start[b] >= 0 && start[b] + T <= cache.capacity, "model: extending sequence ", b, " from position ",
                start[b], " by ", T, " tokens overflows the KV cache of ", cache.capacity, " positions");
    for (int t = 0; t < T; ++t) pos[size_t(b) * T + t] = start[b] + t;
  }
  Backend& be = *be_;
  const Acts a = cache_path_acts(N);
  const int* dpos = be.ints("dec.positions", pos.data(), N);
  embedding_.forward(be, a.resid, be.ints("dec.tokens", tokens, N), N);
  for (int l = 0; l < s_.cfg.n_layers; ++l) {
    const Layer& L = layers_[l];
    qkv_forward(L, a, N, dpos);
    attend_cached(l, a, cache, B, T, pos);
    L.o.forward(be, a.mid, a.resid, a.att, N);
    mlp_block_forward(L, a, a.resid, N);
  }
  be.rmsnorm_forward(a.ln1, a.rstd1, a.resid, weight(s_.off.final_norm), N, C, static_cast<float>(s_.cfg.rms_eps));
  float* logits = be.template buffer<float>("dec.logits", size_t(N) * s_.V);
  head_.forward(be, logits, a.ln1, N);
  be.finish();
  return logits;
}

template <class Backend>
const float* DecoderImpl<Backend>::prefill_last(KVCache& cache, const int* tokens, int B, int T, const int* len) {
  OPD_REQUIRE(B >= 1 && B <= cache.batch, "model: prefill of ", B, " prompts into a KV cache of ", cache.batch,
              " sequences");
  // As many prompts at a time as the backend's largest forward holds.
  const int chunk = int(std::min<size_t>(B, be_->max_forward_tokens() / size_t(T)));
  OPD_REQUIRE(chunk >= 1, "model: a prompt of ", T, " tokens is longer than the largest forward planned (",
              be_->max_forward_tokens(), " tokens)");
  const size_t V = s_.V;
  for (int b = 0; b < B; ++b)
    OPD_REQUIRE(len[b] >= 1 && len[b] <= T, "model: prompt ", b, " of length ", len[b], " in a batch of ", T);
  float* rows = nullptr;
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int n = std::min(chunk, B - b0);
    const float* logits = forward(tokens + size_t(b0) * T, n, T, &cache, b0);
    if (!rows) rows = be_->template buffer<float>("dec.logits", size_t(B) * V);
    for (int b = 0; b < n; ++b)
      be_->copy(rows + size_t(b0 + b) * V, logits + (size_t(b) * T + len[b0 + b] - 1) * V, V);
  }
  return rows;
}

template <class Backend>
void DecoderImpl<Backend>::fork_cache(KVCache& cache, int len) {
  OPD_REQUIRE(len >= 0 && len <= cache.capacity, "model: forking ", len, " positions of a KV cache of ",
              cache.capacity);
  const size_t n = size_t(len) * s_.KD, seq = size_t(cache.stride) * s_.KD;
  for (int l = 0; l < s_.cfg.n_layers; ++l)
    for (int g = 1; g < cache.batch; ++g) {
      be_->copy(be_->cache_k(cache, l) + g * seq, be_->cache_k(cache, l), n);
      be_->copy(be_->cache_v(cache, l) + g * seq, be_->cache_v(cache, l), n);
    }
}

}  // namespace opd
