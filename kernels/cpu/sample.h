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

// ---- Vocabulary-parallel sampling (tensor parallelism: each rank holds logits [N, Vl] for the
// global ids [v0, v0 + Vl)). Same draw, same float probabilities and the same selection arithmetic
// as sample_tokens, so the token equals sample_tokens' on the whole row (up to the rounding of the
// double mass sums, which the caller adds up over shards in another order). The caller does the
// max / sum / gather over shards between the calls. Temperature > 0 throughout; greedy is
// sample_shard_argmax and a max over shards.

// The uniform draw sample_tokens uses for row n, keyed by (seed, step, seq[n], pos[n]).
void sample_uniforms(float* u, const uint32_t* seq, const uint32_t* pos, int N, const SampleParams& p);

// Per-row max of the shard; the row's max over shards is the mx every shard's probabilities use.
void sample_shard_max(float* mx, const float* logits, int N, int Vl);

// Greedy on a shard: id (global) and value of the shard's largest logit, lowest id on ties. The
// caller keeps the largest value over shards, the lowest shard on ties.
void sample_shard_argmax(int* id, float* value, const float* logits, int N, int Vl, int v0);

// mass[n] = sum over the shard (in double) of the float probability exp((x - mx[n]) / temperature),
// mx the GLOBAL row max: the floats sample_tokens sums.
void sample_shard_mass(double* mass, const float* logits, const float* mx, int N, int Vl, float temperature);

// Plain sampling (no top-k, top_p 1): the inverse CDF over ids continued across shards.
// before[n]: the mass of the shards before this one (an exclusive scan of sample_shard_mass);
// target[n]: u * the total mass. token[n]: the global id where the running sum, starting at
// before[n], first exceeds target[n], else -1; last[n]: the shard's last id with positive
// probability, else -1. The row's token: the first shard's token >= 0, else the largest last.
void sample_shard_pick(int* token, int* last, const float* logits, const float* mx, const double* before,
                       const double* target, int N, int Vl, int v0, float temperature);

// Truncated sampling (top-k and/or top-p), step 1 on each shard: the shard's tokens sorted most
// likely first (ties lower id first) with their probabilities (the floats sample_tokens uses),
// prob, ids: [N, Vl]; count[n] = how many of them the row can need: with top_k > 0 the first
// min(top_k, Vl) (the global top k lies in the union of the shards' top k); with top_p alone the
// shortest prefix (at least 1) holding top_p * total[n] of the GLOBAL mass (total: [N], sum of
// sample_shard_mass over shards, read only then), counting the row's argmax (probability 1) too
// when it lies in another shard, else all Vl: the union over shards holds the whole nucleus
// (proof at the definition). A shard cannot see the other shards' probabilities, so one holding
// little of a flat row's mass keeps all Vl. Entries past count[n] hold the shard's other tokens in
// no particular order.
void sample_shard_candidates(float* prob, int* ids, int* count, const float* logits, const float* mx,
                             const double* total, int N, int Vl, int v0, const SampleParams& p);

// Top-p alone: a shard that cannot see the others' mass may keep all of its tokens (above). These
// two let the caller bisect, one all-reduce of [N] masses a round, for a probability threshold
// whose tokens (on all shards) still hold the nucleus, and cut each shard's count to them.
// prefix[n, i] = sum (double) of prob[n, 0..i] over the first count[n] (sorted) candidates.
void candidate_prefix_mass(double* prefix, const float* prob, const int* count, int N, int Vl);
// above[n] = how many of those candidates have prob >= threshold[n]; mass[n] = their summed prob.
void candidate_mass_above(double* mass, int* above, const float* prob, const double* prefix, const int* count,
                          const double* threshold, int N, int Vl);

// Truncated sampling, step 2 on the gathered candidates (prob, ids: [N, M], count[n] valid entries
// per row, any order, ids global in [0, V)): sorted and cut exactly as sample_tokens does, the
// top-k mass summed over the candidates when 0 < top_k < V, else mass_all[n] (the global mass, what
// sample_tokens' sum over all V tokens gives up to rounding); u: sample_uniforms' draws.
void sample_from_candidates(int* tokens, const float* prob, const int* ids, const int* count, int M,
                            const double* mass_all, const float* u, int N, int V, const SampleParams& p);

}  // namespace opd::cpu
