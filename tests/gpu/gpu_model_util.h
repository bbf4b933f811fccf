// What the GPU model tests share: a small random model at the GPU attention's head size (whole,
// or this rank's shards under tensor parallelism) with weights exactly representable in bf16, so
// that the CPU reference reads what the GPU reads; token ids; and the error measure. Only for
// builds with CUDA.
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gpu/device_buffer.h"
#include "model/memory_plan.h"
#include "model/transformer.h"

namespace opd::testing {

inline ModelConfig small_gpu_config(bool tied) {
  ModelConfig c;
  c.vocab = 256;
  c.d_model = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_dim = 512;
  c.max_seq = 128;
  c.tie_embeddings = tied;
  return c;
}

inline std::shared_ptr<const Tokenizer> numbered_tokenizer(int n) {
  std::vector<std::string> pieces;
  for (int i = 0; i < n; ++i) pieces.push_back("<" + std::to_string(i) + ">");
  return std::make_shared<CharTokenizer>(pieces, 1, 0);
}

// Larger-than-default weights so that logits and gradients stand well above rounding noise. With
// tp, this rank's shards of the same model.
inline std::unique_ptr<Transformer> bf16_model(bool tied, uint64_t seed, Communicator* tp = nullptr) {
  auto m = std::make_unique<Transformer>(small_gpu_config(tied), numbered_tokenizer(256), tp);
  m->init_random(seed);
  for (float& w : m->params()) w *= 4.0f;
  m->params() = bf16_rounded(m->params());
  return m;
}

inline std::vector<int> random_tokens(size_t n, uint32_t seed) {
  std::vector<int> t(n);
  uint32_t x = seed;
  for (int& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int>((x >> 8) % 256);
  }
  return t;
}

inline std::vector<float> to_host(const float* device, size_t n) {
  std::vector<float> h(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(h.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// ||a - b|| / ||b||: the error measure for whole tensors computed through bf16 activations.
inline double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

inline MemoryPlanOptions training_plan(int B, int T, bool recompute = false) {
  MemoryPlanOptions o;
  o.train = true;
  o.recompute = recompute;
  o.batch = B;
  o.seq = T;
  return o;
}

}  // namespace opd::testing
