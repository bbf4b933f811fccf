// A small randomly initialised model for model-level tests.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/transformer.h"

namespace opd::testing {

// vocab: 11 by default (pad, eos, 9 letters); 12 splits over 2 tensor-parallel ranks (tp, optional).
inline std::unique_ptr<Transformer> tiny_model(bool tied = false, uint64_t seed = 3, int vocab = 11,
                                               Communicator* tp = nullptr) {
  ModelConfig c;
  c.vocab = vocab;
  c.d_model = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 40;
  c.max_seq = 32;
  c.tie_embeddings = tied;
  std::vector<std::string> pieces = {"<pad>", "<eos>"};
  for (char ch = 'a'; ch < 'a' + vocab - 2; ++ch) pieces.push_back(std::string(1, ch));
  auto m = std::make_unique<Transformer>(c, std::make_shared<CharTokenizer>(pieces, 1, 0), tp);
  m->init_random(seed);
  // Larger weights than the training init, so that attention and norms are far from trivial.
  for (auto& w : m->params()) w *= 20.0f;
  for (const auto& s : m->specs())
    if (s.shape.size() == 1)
      for (size_t i = 0; i < s.size; ++i) m->param(s)[i] = 1.0f + 0.01f * static_cast<float>(i % 7);
  return m;
}

}  // namespace opd::testing
