#include "model/backend_cpu.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "model/decoder_impl.h"

namespace opd {

namespace ops = opd::cpu;

template <>
float* CpuBackend::buffer<float>(const std::string& name, size_t n) {
  std::vector<float>& v = floats_[name];
  if (v.size() < n) v.assign(n, 0.0f);
  return v.data();
}

const int* CpuBackend::ints(const std::string& name, const int* host, size_t n) {
  std::vector<int>& v = ints_[name];
  v.assign(host, host + n);
  return v.data();
}

void CpuBackend::reset_cache(KVCache& c, int B, int capacity, size_t kv_dim) const {
  c.batch = B;
  c.capacity = capacity;
  c.stride = capacity;
  const size_t n = size_t(B) * capacity * kv_dim;
  c.k.assign(cfg_.n_layers, std::vector<float>(n, 0.0f));
  c.v.assign(cfg_.n_layers, std::vector<float>(n, 0.0f));
}

void CpuBackend::all_reduce_grads(Communicator& dp, size_t n) {
  OPD_REQUIRE(!dp.device_buffers(), "model: a CPU model's gradients cannot go over ", dp.name(), " (device buffers)");
  dp.all_reduce(grads_.data(), n, ReduceOp::kSum);
}

TrainingMemory CpuBackend::training_memory() {
  TrainingMemory m;
  m.params = params_.data();
  m.grads = grads_.data();
  m.size = params_.size();
  return m;
}

template <>
void CpuBackend::copy<float>(float* dst, const float* src, size_t n) const {
  if (dst != src) std::copy_n(src, n, dst);
}
template <>
void CpuBackend::zero<float>(float* x, size_t n) const {
  std::fill_n(x, n, 0.0f);
}

void CpuBackend::copy_rows(act* dst, size_t dst_pitch, const act* src, size_t src_pitch, size_t width,
                           size_t rows) const {
  for (size_t r = 0; r < rows; ++r) std::copy_n(src + r * src_pitch, width, dst + r * dst_pitch);
}

template <>
void CpuBackend::tp_sum<float>(float* x, size_t n) {
  if (tp_ && tp_->size() > 1) tp_->all_reduce(x, n, ReduceOp::kSum);
}

void CpuBackend::rmsnorm_forward(act* out, float* rstd, const act* x, const act* w, int N, int C, float eps) {
  ops::rmsnorm_forward(out, rstd, x, w, N, C, eps);
}
void CpuBackend::rmsnorm_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, const float* rstd,
                                  int N, int C) {
  ops::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
}
void CpuBackend::matmul_forward(act* out, const act* x, const act* w, int N, int K, int M, bool accumulate) {
  ops::matmul_forward(out, x, w, N, K, M, accumulate);
}
void CpuBackend::matmul_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, int N, int K,
                                 int M) {
  ops::matmul_backward(dx, dw, dout, x, w, N, K, M);
}
void CpuBackend::logits_forward(float* logits, const act* x, const act* w, int N, int K, int M) {
  ops::matmul_forward(logits, x, w, N, K, M);
}
void CpuBackend::logits_backward(act* dx, float* dw, const float* dlogits, const act* x, const act* w, int N, int K,
                                 int M) {
  ops::matmul_backward(dx, dw, dlogits, x, w, N, K, M);
}
void CpuBackend::rope_forward(act* x, const int* pos, int N, int H, int D) {
  ops::rope_forward(x, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling);
}
void CpuBackend::rope_backward(act* dx, const int* pos, int N, int H, int D) {
  ops::rope_backward(dx, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling);
}
void CpuBackend::attention_forward(act* out, float* lse, const act* q, const act* k, const act* v, int B, int T,
                                   int H, int HK, int D) {
  ops::attention_forward(out, lse, q, k, v, B, T, H, HK, D);
}
void CpuBackend::attention_backward(act* dq, act* dk, act* dv, const act* dout, const act* q, const act* k,
                                    const act* v, const act* out, const float* lse, int B, int T, int H, int HK,
                                    int D) {
  ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, HK, D);
}
void CpuBackend::kv_cache_write(act* kc, act* vc, const act* k, const act* v, int B, int T, int S, int HK, int D) {
  ops::kv_cache_write(kc, vc, k, v, B, T, S, HK, D);
}
void CpuBackend::attention_decode(act* out, const act* q, const act* k, const act* v, act* kc, act* vc,
                                  const int* pos, int B, int S, int H, int HK, int D) {
  ops::attention_decode(out, q, k, v, kc, vc, pos, B, S, H, HK, D);
}
void CpuBackend::swiglu_forward(act* out, const act* gate, const act* up, size_t n) {
  ops::swiglu_forward(out, gate, up, n);
}
void CpuBackend::swiglu_backward(act* dgate, act* dup, const act* dout, const act* gate, const act* up, size_t n) {
  ops::swiglu_backward(dgate, dup, dout, gate, up, n);
}
void CpuBackend::embedding_forward(act* out, const int* tokens, const act* table, int N, int C, int v0, int Vl,
                                   bool shard) {
  if (shard)
    ops::embedding_forward_shard(out, tokens, table, N, C, v0, Vl);
  else
    ops::embedding_forward(out, tokens, table, N, C);
}
void CpuBackend::embedding_backward(float* dtable, const act* dout, const int* tokens, int N, int C, int v0, int Vl,
                                    bool shard) {
  if (shard)
    ops::embedding_backward_shard(dtable, dout, tokens, N, C, v0, Vl);
  else
    ops::embedding_backward(dtable, dout, tokens, N, Vl, C);
}

template class DecoderImpl<CpuBackend>;

std::unique_ptr<Decoder> make_cpu_decoder(const DecoderShape& shape, std::vector<float>& params,
                                          std::vector<float>& grads, Communicator* tp, const ModelConfig& cfg) {
  return std::make_unique<DecoderImpl<CpuBackend>>(shape, std::make_unique<CpuBackend>(params, grads, tp, cfg));
}

}  // namespace opd
