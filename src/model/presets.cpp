#include "model/presets.h"

#include "core/error.h"

namespace opd {

ModelConfig qwen3_preset(const std::string& name, int max_seq, const std::string& option) {
  struct Shape {
    const char* name;
    int d_model, n_layers, n_heads, ffn_dim;
    bool tied;
  };
  // All share vocab 151936, 8 kv heads of 128, rope_theta 1e6, rms_eps 1e-6 and QK-norm.
  static const Shape kShapes[] = {{"qwen3-0.6b", 1024, 28, 16, 3072, true},
                                  {"qwen3-1.7b", 2048, 28, 16, 6144, true},
                                  {"qwen3-4b", 2560, 36, 32, 9728, true},
                                  {"qwen3-8b", 4096, 36, 32, 12288, false}};
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    ModelConfig c;
    c.vocab = 151936;
    c.d_model = s.d_model;
    c.n_layers = s.n_layers;
    c.n_heads = s.n_heads;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.ffn_dim = s.ffn_dim;
    c.rope_theta = 1e6;
    c.rms_eps = 1e-6;
    c.qk_norm = true;
    c.tie_embeddings = s.tied;
    c.max_seq = max_seq;
    c.validate(option + " " + name);
    return c;
  }
  throw Error(str("option ", option, " = '", name, "': not a known shape (qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b)"));
}

}  // namespace opd
