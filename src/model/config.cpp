#include "model/config.h"

#include <cmath>

#include "core/error.h"

namespace opd {

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](const char* field, long long v) {
    OPD_REQUIRE(v > 0, where, ": model config field '", field, "' must be positive, got ", v);
  };
  positive("vocab", vocab);
  positive("d_model", d_model);
  positive("n_layers", n_layers);
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("head_dim", head_dim);
  positive("ffn_dim", ffn_dim);
  positive("max_seq", max_seq);
  // Far above any real model, low enough that no size computed from them overflows 64 bits.
  auto at_most = [&](const char* field, long long v, long long max) {
    OPD_REQUIRE(v <= max, where, ": model config field '", field, "' = ", v, " is larger than the ", max, " opd accepts");
  };
  at_most("vocab", vocab, 1 << 24);
  at_most("d_model", d_model, 1 << 20);
  at_most("n_layers", n_layers, 1 << 12);
  at_most("n_heads", n_heads, 1 << 12);
  at_most("n_kv_heads", n_kv_heads, 1 << 12);
  at_most("head_dim", head_dim, 1 << 12);
  at_most("ffn_dim", ffn_dim, 1 << 20);
  at_most("max_seq", max_seq, 1 << 24);
  OPD_REQUIRE(n_heads % n_kv_heads == 0, where, ": model config field 'n_heads' (", n_heads,
              ") must be a multiple of 'n_kv_heads' (", n_kv_heads, ")");
  OPD_REQUIRE(head_dim % 2 == 0, where, ": model config field 'head_dim' must be even for RoPE, got ", head_dim);
  OPD_REQUIRE(rope_theta > 0 && std::isfinite(rope_theta), where,
              ": model config field 'rope_theta' must be positive and finite, got ", rope_theta);
  if (rope_scaling.enabled()) {
    const RopeScaling& r = rope_scaling;
    OPD_REQUIRE(r.factor >= 1 && std::isfinite(r.factor), where,
                ": model config field 'rope_scaling.factor' must be finite and at least 1, got ", r.factor);
    OPD_REQUIRE(r.low_freq_factor > 0 && r.low_freq_factor < r.high_freq_factor && std::isfinite(r.high_freq_factor),
                where, ": model config fields 'rope_scaling.low_freq_factor' (", r.low_freq_factor,
                ") and 'rope_scaling.high_freq_factor' (", r.high_freq_factor, ") must satisfy 0 < low < high");
    OPD_REQUIRE(r.original_max_position_embeddings > 0 && r.original_max_position_embeddings <= (1 << 24), where,
                ": model config field 'rope_scaling.original_max_position_embeddings' must be in [1, 2^24], got ",
                r.original_max_position_embeddings);
  }
  OPD_REQUIRE(rms_eps > 0 && rms_eps < 1, where, ": model config field 'rms_eps' must be in (0, 1), got ", rms_eps);
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = d_model, F = ffn_dim, V = vocab, D = head_dim;
  int64_t layer = 2 * C                                  // input and post-attention norms
                  + C * q_dim() + 2 * C * kv_dim()       // q, k, v
                  + int64_t(q_dim()) * C                 // o
                  + 3 * C * F                            // gate, up, down
                  + (qk_norm ? 2 * D : 0);
  return V * C + n_layers * layer + C + (tie_embeddings ? 0 : V * C);
}

}  // namespace opd
