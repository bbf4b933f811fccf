// The CPU backend of the decoder (model/decoder_impl.h): fp32 everywhere, the ops of kernels/cpu,
// host arrays by name, grown on demand. It is the reference the CUDA backend is tested against.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "model/config.h"
#include "model/decoder.h"

namespace opd {

class CpuBackend {
 public:
  using act = float;  // activations
  static constexpr bool kDevice = false;

  // params, lora, grads: the host model's flat arrays, read and written in place (they may be
  // reassigned between calls, so they are held by reference): the weights, the LoRA adapters (empty
  // without), and the gradients of what is trained (the adapters' under LoRA, then the weights are
  // frozen). tp: the model's tensor-parallel group, or null.
  CpuBackend(std::vector<float>& params, std::vector<float>& lora, std::vector<float>& grads, bool frozen,
             Communicator* tp, const ModelConfig& cfg)
      : params_(params), lora_(lora), grads_(grads), frozen_(frozen), tp_(tp), cfg_(cfg) {}

  // ---- memory ----
  // A named array of at least n elements, kept between calls (what the GPU plans up front).
  template <typename T>
  T* buffer(const std::string& name, size_t n);
  // Host ints made visible to the ops: here a kept copy.
  const int* ints(const std::string& name, const int* host, size_t n);
  const act* weights() const { return params_.data(); }
  const act* lora_weights() const { return lora_.data(); }
  float* grads() { return grads_.data(); }  // of what is trained
  // The gradient of the weight at `offset`; null when the weights are frozen (LoRA).
  float* weight_grad(size_t offset) { return frozen_ ? nullptr : grads_.data() + offset; }
  float* lora_grad(size_t offset) { return grads_.data() + offset; }
  // Each layer's keys and values within a cache.
  act* cache_k(KVCache& c, int layer) { return c.k[layer].data(); }
  act* cache_v(KVCache& c, int layer) { return c.v[layer].data(); }
  void reset_cache(KVCache& c, int B, int capacity, size_t kv_dim) const;
  // The largest forward (tokens) the backend holds at once: unbounded on the host.
  size_t max_forward_tokens() const { return size_t(-1); }
  void check_forward(int, int) const {}

  // ---- data movement ----
  template <typename T>
  void copy(T* dst, const T* src, size_t n) const;
  template <typename T>
  void zero(T* x, size_t n) const;
  // rows x width elements from src (row pitch src_pitch) to dst (row pitch dst_pitch).
  void copy_rows(act* dst, size_t dst_pitch, const act* src, size_t src_pitch, size_t width, size_t rows) const;
  // Sums x over the tensor-parallel group (nothing without one).
  template <typename T>
  void tp_sum(T* x, size_t n);
  void finish() {}  // every collective here has returned
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }
  // Over a data-parallel group of host buffers.
  void all_reduce_grads(Communicator& dp, size_t n);
  TrainingMemory training_memory();
  void download_params(std::vector<float>&) {}  // the host arrays are the parameters
  void* stream() const { return nullptr; }
  std::string memory_report(const std::string&) const { return ""; }

  // ---- ops: the same names and arguments as kernels/cpu and kernels/cuda ----
  void rmsnorm_forward(act* out, float* rstd, const act* x, const act* w, int N, int C, float eps) {
    cpu::rmsnorm_forward(out, rstd, x, w, N, C, eps);
  }
  void rmsnorm_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, const float* rstd, int N,
                        int C) {
    cpu::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
  }
  void matmul_forward(act* out, const act* x, const act* w, int N, int K, int M, bool accumulate) {
    cpu::matmul_forward(out, x, w, N, K, M, accumulate);
  }
  void matmul_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, int N, int K, int M) {
    cpu::matmul_backward(dx, dw, dout, x, w, N, K, M);
  }
  // LoRA: out += scale (x A^T) B^T, and its gradients (cpu::lora_forward / lora_backward with the
  // rank-R scratch "lora.u", "lora.du" of this backend; in backend_cpu.cpp, where buffer is).
  void lora_forward(act* out, const act* x, const act* A, const act* B, int N, int K, int R, int M, float scale);
  void lora_backward(act* dx, float* dA, float* dB, const act* dout, const act* x, const act* A, const act* B, int N,
                     int K, int R, int M, float scale);
  // The LM head: fp32 logits from activations, and back (on the host the activations are fp32 too).
  void logits_forward(float* logits, const act* x, const act* w, int N, int K, int M) {
    cpu::matmul_forward(logits, x, w, N, K, M);
  }
  void logits_backward(act* dx, float* dw, const float* dlogits, const act* x, const act* w, int N, int K, int M) {
    cpu::matmul_backward(dx, dw, dlogits, x, w, N, K, M);
  }
  void rope_forward(act* x, const int* pos, int N, int H, int D) {
    cpu::rope_forward(x, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling);
  }
  void rope_backward(act* dx, const int* pos, int N, int H, int D) {
    cpu::rope_backward(dx, pos, N, H, D, static_cast<float>(cfg_.rope_theta), cfg_.rope_scaling);
  }
  void attention_forward(act* out, float* lse, const act* q, const act* k, const act* v, int B, int T, int H,
                         int HK, int D) {
    cpu::attention_forward(out, lse, q, k, v, B, T, H, HK, D);
  }
  void attention_backward(act* dq, act* dk, act* dv, const act* dout, const act* q, const act* k, const act* v,
                          const act* out, const float* lse, int B, int T, int H, int HK, int D) {
    cpu::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, HK, D);
  }
  void kv_cache_write(act* kc, act* vc, const act* k, const act* v, int B, int T, int S, int HK, int D) {
    cpu::kv_cache_write(kc, vc, k, v, B, T, S, HK, D);
  }
  void attention_decode(act* out, const act* q, const act* k, const act* v, act* kc, act* vc, const int* pos, int B,
                        int S, int H, int HK, int D) {
    cpu::attention_decode(out, q, k, v, kc, vc, pos, B, S, H, HK, D);
  }
  void swiglu_forward(act* out, const act* gate, const act* up, size_t n) { cpu::swiglu_forward(out, gate, up, n); }
  void swiglu_backward(act* dgate, act* dup, const act* dout, const act* gate, const act* up, size_t n) {
    cpu::swiglu_backward(dgate, dup, dout, gate, up, n);
  }
  void embedding_forward(act* out, const int* tokens, const act* table, int N, int C, int v0, int Vl, bool shard) {
    if (shard) return cpu::embedding_forward_shard(out, tokens, table, N, C, v0, Vl);
    cpu::embedding_forward(out, tokens, table, N, C);
  }
  void embedding_backward(float* dtable, const act* dout, const int* tokens, int N, int C, int v0, int Vl,
                          bool shard) {
    if (shard) return cpu::embedding_backward_shard(dtable, dout, tokens, N, C, v0, Vl);
    cpu::embedding_backward(dtable, dout, tokens, N, Vl, C);
  }

 private:
  std::vector<float>& params_;
  std::vector<float>& lora_;
  std::vector<float>& grads_;
  bool frozen_;
  Communicator* tp_;
  const ModelConfig& cfg_;
  std::unordered_map<std::string, std::vector<float>> floats_;
  std::unordered_map<std::string, std::vector<int>> ints_;
};

// The decoder of a host model on the CPU (model/decoder_impl.h) over its flat arrays (see CpuBackend).
std::unique_ptr<Decoder> make_cpu_decoder(const DecoderShape& shape, std::vector<float>& params,
                                          std::vector<float>& lora, std::vector<float>& grads, Communicator* tp,
                                          const ModelConfig& cfg);

}  // namespace opd
