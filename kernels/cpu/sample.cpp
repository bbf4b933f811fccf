#include "kernels/cpu/sample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace opd::cpu {

namespace {

// Below this many elements a parallel region costs more than the work it splits.
constexpr size_t kParallelMin = size_t(1) << 14;

void check_params(const char* op, const SampleParams& p) {
  OPD_REQUIRE(p.temperature >= 0.0f && std::isfinite(p.temperature), op,
              ": temperature must be finite and >= 0, got ", p.temperature);
  OPD_REQUIRE(p.top_p > 0.0f && p.top_p <= 1.0f, op, ": top_p must be in (0, 1], got ", p.top_p);
  OPD_REQUIRE(p.top_k >= 0, op, ": top_k must be >= 0, got ", p.top_k);
}

void check_shard(const char* op, int N, int Vl, int v0) {
  OPD_REQUIRE(N >= 0 && Vl > 0 && v0 >= 0, op, ": need N >= 0, Vl > 0 and v0 >= 0, got N=", N, " Vl=", Vl, " v0=", v0);
}

void check_temperature(const char* op, float temperature) {
  OPD_REQUIRE(temperature > 0.0f && std::isfinite(temperature), op,
              ": temperature must be finite and > 0 (greedy is sample_shard_argmax), got ", temperature);
}

int argmax(const float* x, int V) {
  int best = 0;
  for (int v = 1; v < V; ++v)
    if (x[v] > x[best]) best = v;  // strict: the lowest id wins a tie
  return best;
}

// The draw is keyed by the row's own (sequence, position), never by its index in the batch, so a
// token does not depend on which other rows share the batch.
float row_uniform(uint32_t seq, uint32_t pos, const SampleParams& p) {
  const uint64_t counter = (static_cast<uint64_t>(seq) << 32) | pos;
  return uniform01(philox_draw(p.seed, p.step, counter).v[0]);
}

// A token's unnormalised probability. Every path (whole row, shard) uses this one expression, so
// the floats, and with them the token, agree bit for bit.
float prob_of(float x, float mx, float temperature) { return std::exp((x - mx) / temperature); }

// Sums are in double so that u near 1 still lands inside the support.
double mass_of(const float* x, int V, float mx, float temperature) {
  double total = 0;
  for (int v = 0; v < V; ++v) total += prob_of(x[v], mx, temperature);
  return total;
}

// The unsorted inverse CDF over ids [0, V), the running sum starting at cum: the first id whose
// cumulative mass exceeds target, else -1. last: the last id with positive probability (left
// alone when there is none).
int first_past(const float* x, int V, float mx, float temperature, double cum, double target, int& last) {
  for (int v = 0; v < V; ++v) {
    const float pr = prob_of(x[v], mx, temperature);
    if (pr <= 0) continue;
    cum += pr;
    last = v;
    if (cum > target) return v;
  }
  return -1;
}

// Sorts order[0, n) (indices into prob) so that its first k entries are the k most likely, ties
// broken by id so that the order, and so the draw, is fully determined.
template <typename IdOf>
void sort_by_prob(int* order, int n, int k, const float* prob, const IdOf& id_of) {
  auto before = [&](int a, int b) { return prob[a] > prob[b] || (prob[a] == prob[b] && id_of(a) < id_of(b)); };
  if (k < n)
    std::partial_sort(order, order + k, order + n, before);
  else
    std::sort(order, order + n, before);
}

// The truncated pick on entries in sorted order (order[0, avail), indices into prob): the smallest
// prefix of the first k holding top_p of mass_k (the mass of the top k), never empty, then the
// inverse CDF at u over it. -1 when fewer than k entries were given and they run out first.
template <typename IdOf>
int pick_sorted(const int* order, int avail, int k, double mass_k, const float* prob, const IdOf& id_of,
                float top_p, float u) {
  const double need = static_cast<double>(top_p) * mass_k;
  const int end = std::min(k, avail);
  int m = 0;
  double mass = 0;
  bool reached = false;
  while (m < end) {
    mass += prob[order[m++]];
    if (mass >= need) {
      reached = true;
      break;
    }
  }
  if (!reached && end < k) return -1;
  const double target = u * mass;
  double cum = 0;
  for (int i = 0; i < m; ++i) {
    cum += prob[order[i]];
    if (cum > target) return id_of(order[i]);
  }
  return id_of(order[m - 1]);
}

// One row: unnormalised probabilities, optional top-k / top-p cut, then the inverse CDF at u.
int sample_row(const float* x, int V, float u, const SampleParams& p, std::vector<float>& prob, std::vector<int>& idx) {
  const float mx = x[argmax(x, V)];
  const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  if (k == V && p.top_p >= 1.0f) {
    const double target = u * mass_of(x, V, mx, p.temperature);
    int last = 0;
    const int t = first_past(x, V, mx, p.temperature, 0.0, target, last);
    return t >= 0 ? t : last;
  }
  for (int v = 0; v < V; ++v) {
    prob[v] = prob_of(x[v], mx, p.temperature);
    idx[v] = v;
  }
  auto id_of = [](int i) { return i; };
  sort_by_prob(idx.data(), V, k, prob.data(), id_of);
  double mass_k = 0;
  for (int i = 0; i < k; ++i) mass_k += prob[idx[i]];
  return pick_sorted(idx.data(), V, k, mass_k, prob.data(), id_of, p.top_p, u);
}

}  // namespace

void sample_tokens(int* tokens, const float* logits, const uint32_t* seq, const uint32_t* pos, int N, int V,
                   const SampleParams& p) {
  OPD_REQUIRE(N >= 0 && V > 0, "sample_tokens: need N >= 0 and V > 0, got N=", N, " V=", V);
  check_params("sample_tokens", p);
  if (p.temperature == 0.0f) {
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * V >= kParallelMin)
    for (int n = 0; n < N; ++n) tokens[n] = argmax(logits + static_cast<size_t>(n) * V, V);
    return;
  }
#pragma omp parallel if (static_cast<size_t>(N) * V >= kParallelMin)
  {
    std::vector<float> prob(V);
    std::vector<int> idx(V);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n)
      tokens[n] = sample_row(logits + static_cast<size_t>(n) * V, V, row_uniform(seq[n], pos[n], p), p, prob, idx);
  }
}

void sample_uniforms(float* u, const uint32_t* seq, const uint32_t* pos, int N, const SampleParams& p) {
  OPD_REQUIRE(N >= 0, "sample_uniforms: need N >= 0, got N=", N);
  for (int n = 0; n < N; ++n) u[n] = row_uniform(seq[n], pos[n], p);
}

void sample_shard_max(float* mx, const float* logits, int N, int Vl) {
  check_shard("sample_shard_max", N, Vl, 0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * Vl;
    mx[n] = x[argmax(x, Vl)];
  }
}

void sample_shard_argmax(int* id, float* value, const float* logits, int N, int Vl, int v0) {
  check_shard("sample_shard_argmax", N, Vl, v0);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * Vl;
    const int best = argmax(x, Vl);
    id[n] = v0 + best;
    value[n] = x[best];
  }
}

void sample_shard_mass(double* mass, const float* logits, const float* mx, int N, int Vl, float temperature) {
  check_shard("sample_shard_mass", N, Vl, 0);
  check_temperature("sample_shard_mass", temperature);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) mass[n] = mass_of(logits + static_cast<size_t>(n) * Vl, Vl, mx[n], temperature);
}

void sample_shard_pick(int* token, int* last, const float* logits, const float* mx, const double* before,
                       const double* target, int N, int Vl, int v0, float temperature) {
  check_shard("sample_shard_pick", N, Vl, v0);
  check_temperature("sample_shard_pick", temperature);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    int l = -1;
    const int t = first_past(logits + static_cast<size_t>(n) * Vl, Vl, mx[n], temperature, before[n], target[n], l);
    token[n] = t >= 0 ? v0 + t : -1;
    last[n] = l >= 0 ? v0 + l : -1;
  }
}

void sample_shard_candidates(float* prob, int* ids, int* count, const float* logits, const float* mx,
                             const double* total, int N, int Vl, int v0, const SampleParams& p) {
  check_shard("sample_shard_candidates", N, Vl, v0);
  check_params("sample_shard_candidates", p);
  check_temperature("sample_shard_candidates", p.temperature);
  OPD_REQUIRE(p.top_k > 0 || p.top_p < 1.0f,
              "sample_shard_candidates: neither top_k nor top_p truncates; plain sampling is sample_shard_pick");
  // Why the top_p cut keeps every token of the global nucleus. Order all V tokens as sample_tokens
  // does (probability descending, then id); the nucleus is the shortest prefix of that order whose
  // mass reaches need = top_p * total. For a token t of the nucleus, the tokens ranked before t
  // are in the nucleus too and hold B < need (else the nucleus would have ended before t). This
  // shard's order is the global order restricted to the shard, so the shard's tokens ranked before
  // t are some of those, with mass b <= B < need. Besides, when the shard's most likely token has
  // probability below 1, the row's argmax (probability exp(0) = 1 exactly) lies in another shard
  // and is ranked before every token of this one: then 1 + b <= B < need. So the shard's prefix,
  // which stops only once lead + b (lead = 1 or 0 as just said) holds need, has not stopped before
  // t and keeps it. In floating point lead + b and B are sequential double sums of the same floats
  // (lead + b of some of B's terms), each within a factor 1 +- g of its exact value, g < V 2^-53 <=
  // 2^-22 (V < 2^31), so computed lead + b <= computed B (1 + g) / (1 - g) < need (1 + 2^-20): the
  // cut below compares with that slightly larger bound. Keeping a few more tokens than needed
  // changes nothing: sample_from_candidates sorts and cuts the union again.
  const double slack = 1.0 + std::ldexp(1.0, -20);
  const int kk = p.top_k > 0 ? std::min(p.top_k, Vl) : Vl;
#pragma omp parallel if (static_cast<size_t>(N) * Vl >= kParallelMin)
  {
    std::vector<float> pl(Vl);
    std::vector<int> order(Vl);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* x = logits + static_cast<size_t>(n) * Vl;
      for (int v = 0; v < Vl; ++v) {
        pl[v] = prob_of(x[v], mx[n], p.temperature);
        order[v] = v;
      }
      sort_by_prob(order.data(), Vl, kk, pl.data(), [](int i) { return i; });
      float* pr = prob + static_cast<size_t>(n) * Vl;
      int* id = ids + static_cast<size_t>(n) * Vl;
      for (int j = 0; j < Vl; ++j) {
        pr[j] = pl[order[j]];
        id[j] = v0 + order[j];
      }
      int c = kk;
      if (p.top_k == 0) {
        const double need = static_cast<double>(p.top_p) * total[n] * slack;
        double mass = pr[0] < 1.0f ? 1.0 : 0.0;
        c = 0;
        while (c < Vl) {
          mass += pr[c++];
          if (mass >= need) break;
        }
      }
      count[n] = c;
    }
  }
}

void candidate_prefix_mass(double* prefix, const float* prob, const int* count, int N, int Vl) {
  OPD_REQUIRE(N >= 0 && Vl > 0, "candidate_prefix_mass: need N >= 0 and Vl > 0, got N=", N, " Vl=", Vl);
#pragma omp parallel for schedule(static) if (static_cast<size_t>(N) * Vl >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const float* pr = prob + static_cast<size_t>(n) * Vl;
    double* out = prefix + static_cast<size_t>(n) * Vl;
    double sum = 0;
    for (int i = 0; i < count[n]; ++i) out[i] = sum += pr[i];
  }
}

void candidate_mass_above(double* mass, int* above, const float* prob, const double* prefix, const int* count,
                          const double* threshold, int N, int Vl) {
  OPD_REQUIRE(N >= 0 && Vl > 0, "candidate_mass_above: need N >= 0 and Vl > 0, got N=", N, " Vl=", Vl);
  for (int n = 0; n < N; ++n) {
    OPD_REQUIRE(count[n] >= 0 && count[n] <= Vl, "candidate_mass_above: row ", n, " has ", count[n],
                " candidates of ", Vl);
    const float* pr = prob + static_cast<size_t>(n) * Vl;
    // Sorted most likely first: the candidates at or above the threshold are a prefix.
    const int k = static_cast<int>(std::partition_point(pr, pr + count[n], [&](float x) { return x >= threshold[n]; }) - pr);
    above[n] = k;
    mass[n] = k > 0 ? prefix[static_cast<size_t>(n) * Vl + k - 1] : 0.0;
  }
}

void sample_from_candidates(int* tokens, const float* prob, const int* ids, const int* count, int M,
                            const double* mass_all, const float* u, int N, int V, const SampleParams& p) {
  OPD_REQUIRE(N >= 0 && M > 0 && V > 0, "sample_from_candidates: need N >= 0, M > 0 and V > 0, got N=", N, " M=", M,
              " V=", V);
  check_params("sample_from_candidates", p);
  const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  OPD_REQUIRE(k < V || p.top_p < 1.0f,
              "sample_from_candidates: neither top_k nor top_p truncates; plain sampling is sample_shard_pick");
  // Checked before the parallel loop: an exception must not escape an OpenMP region.
  for (int n = 0; n < N; ++n) {
    OPD_REQUIRE(count[n] >= 1 && count[n] <= M, "sample_from_candidates: count[", n, "] = ", count[n],
                " is outside [1, M = ", M, "]");
    OPD_REQUIRE(k == V || count[n] >= k, "sample_from_candidates: row ", n, " has ", count[n],
                " candidates, fewer than top_k = ", k);
    for (int j = 0; j < count[n]; ++j) {
      const int id = ids[static_cast<size_t>(n) * M + j];
      OPD_REQUIRE(id >= 0 && id < V, "sample_from_candidates: ids[", n, ", ", j, "] = ", id,
                  " is outside the vocabulary [0, ", V, ")");
    }
  }
#pragma omp parallel if (static_cast<size_t>(N) * M >= kParallelMin)
  {
    std::vector<int> order(M);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* pr = prob + static_cast<size_t>(n) * M;
      const int* id = ids + static_cast<size_t>(n) * M;
      const int c = count[n];
      for (int j = 0; j < c; ++j) order[j] = j;
      auto id_of = [id](int j) { return id[j]; };
      sort_by_prob(order.data(), c, std::min(k, c), pr, id_of);
      double mass_k = mass_all[n];
      if (k < V) {
        mass_k = 0;
        for (int i = 0; i < k; ++i) mass_k += pr[order[i]];
      }
      tokens[n] = pick_sorted(order.data(), c, k, mass_k, pr, id_of, p.top_p, u[n]);
    }
  }
  for (int n = 0; n < N; ++n)
    OPD_REQUIRE(tokens[n] >= 0, "sample_from_candidates: row ", n, "'s ", count[n],
                " candidates hold less than top_p of mass_all; a shard cut its candidates short");
}

}  // namespace opd::cpu
