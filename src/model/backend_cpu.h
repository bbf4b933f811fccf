// The CPU backend of the decoder (model/decoder_impl.h): fp32 everywhere, the ops of kernels/cpu,
// host arrays by name, grown on demand. It is the reference the CUDA backend is tested against.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/decoder.h"
#include "model/config.h"

namespace opd {

class CpuBackend {
 public:
  using act = float;  // activations
  static constexpr bool kDevice = false;

  // params, grads: the host model's flat arrays, read and written in place (they may be reassigned
  // between calls, so they are held by reference). tp: the model's tensor-parallel group, or null.
  CpuBackend(std::vector<float>& params, std::vector<float>& grads, Communicator* tp, const ModelConfig& cfg)
      : params_(params), grads_(grads), tp_(tp), cfg_(cfg) {}

  // ---- memory ----
  // A named array of at least n elements, kept between calls (what the GPU plans up front).
  template <typename T>
  T* buffer(const std::string& name, size_t n);
  // Host ints made visible to the ops: here a kept copy.
  const int* ints(const std::string& name, const int* host, size_t n);
  const act* weights() const { return params_.data(); }
  float* grads() { return grads_.data(); }
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
  void rmsnorm_forward(act* out, float* rstd, const act* x, const act* w, int N, int C, float eps);
  void rmsnorm_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, const float* rstd, int N,
                        int C);
  void matmul_forward(act* out, const act* x, const act* w, int N, int K, int M, bool accumulate);
  void matmul_backward(act* dx, float* dw, const act* dout, const act* x, const act* w, int N, int K, int M);
  // The LM head: fp32 logits from activations, and back.
  void logits_forward(float* logits, const act* x, const act* w, int N, int K, int M);
  void logits_backward(act* dx, float* dw, const float* dlogits, const act* x, const act* w, int N, int K, int M);
  void rope_forward(act* x, const int* pos, int N, int H, int D);
  void rope_backward(act* dx, const int* pos, int N, int H, int D);
  void attention_forward(act* out, float* lse, const act* q, const act* k, const act* v, int B, int T, int H,
                         int HK, int D);
  void attention_backward(act* dq, act* dk, act* dv, const act* dout, const act* q, const act* k, const act* v,
                          const act* out, const float* lse, int B, int T, int H, int HK, int D);
  void kv_cache_write(act* kc, act* vc, const act* k, const act* v, int B, int T, int S, int HK, int D);
  void attention_decode(act* out, const act* q, const act* k, const act* v, act* kc, act* vc, const int* pos, int B,
                        int S, int H, int HK, int D);
  void swiglu_forward(act* out, const act* gate, const act* up, size_t n);
  void swiglu_backward(act* dgate, act* dup, const act* dout, const act* gate, const act* up, size_t n);
  void embedding_forward(act* out, const int* tokens, const act* table, int N, int C, int v0, int Vl, bool shard);
  void embedding_backward(float* dtable, const act* dout, const int* tokens, int N, int C, int v0, int Vl,
                          bool shard);

 private:
  std::vector<float>& params_;
  std::vector<float>& grads_;
  Communicator* tp_;
  const ModelConfig& cfg_;
  std::unordered_map<std::string, std::vector<float>> floats_;
  std::unordered_map<std::string, std::vector<int>> ints_;
};

// The decoder of a host model on the CPU (model/decoder_impl.h) over its flat arrays.
std::unique_ptr<Decoder> make_cpu_decoder(const DecoderShape& shape, std::vector<float>& params,
                                          std::vector<float>& grads, Communicator* tp, const ModelConfig& cfg);

}  // namespace opd
