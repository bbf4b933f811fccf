#include "model/backend_cpu.h"

#include <algorithm>

#include "core/error.h"
#include "model/decoder_impl.h"

namespace opd {

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
  std::vector<float>& trained = frozen_ ? lora_ : params_;
  TrainingMemory m;
  m.params = trained.data();
  m.grads = grads_.data();
  m.size = trained.size();
  return m;
}

void CpuBackend::lora_forward(act* out, const act* x, const act* A, const act* B, int N, int K, int R, int M,
                              float scale) {
  cpu::lora_forward(out, buffer<float>("lora.u", size_t(N) * R), x, A, B, N, K, R, M, scale);
}
void CpuBackend::lora_backward(act* dx, float* dA, float* dB, const act* dout, const act* x, const act* A,
                               const act* B, int N, int K, int R, int M, float scale) {
  cpu::lora_backward(dx, dA, dB, buffer<float>("lora.u", size_t(N) * R), buffer<float>("lora.du", size_t(N) * R),
                     dout, x, A, B, N, K, R, M, scale);
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

template class DecoderImpl<CpuBackend>;

std::unique_ptr<Decoder> make_cpu_decoder(const DecoderShape& shape, std::vector<float>& params,
                                          std::vector<float>& lora, std::vector<float>& grads, Communicator* tp,
                                          const ModelConfig& cfg) {
  return std::make_unique<DecoderImpl<CpuBackend>>(
      shape, std::make_unique<CpuBackend>(params, lora, grads, shape.lora.enabled(), tp, cfg));
}

}  // namespace opd
