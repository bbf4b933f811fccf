// Sampling the next token from logits with temperature, top-k and top-p, randomness from Philox
// keyed by (seed, step, sequence, position) so the draw of a token depends on nothing else:
// not on batch composition, rank count or device.
#pragma once
#include <cstdint>

namespace opd::cpu {

struct SampleParams {
  float temperature = 1.0f;  // 0 means greedy (argmax, lowest id on ties)
  float top_p = 1.0f;        // nucleus: smallest set of most likely tokens with mass >= top_p
  int top_k = 0;             // 0 = no limit
  uint64_t seed = 0;
  uint32_t step = 0;
};

// logits: [N, V]. seq[n], pos[n]: the sequence id and position that key row n's random draw.
// tokens[n] receives the id.
void sample_tokens(int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N, int V,
                   const SampleParams& p);

}  // namespace opd::cpu
