#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "kernels/cpu/logprobs.h"
#include "model/generate.h"
#include "tiny_model.h"

namespace opd {
namespace {

// Decoding token by token against the KV cache gives the logits of one full forward pass.
TEST(Generation, KvCacheDecodeMatchesFullForward) {
  auto m = testing::tiny_model();
  const int V = m->config().vocab, B = 3, T = 12;
  const std::vector<int> lens = {4, 1, 7};  // prompts of different lengths in one batch
  std::vector<int> seqs(B * T);
  for (int i = 0; i < B * T; ++i) seqs[i] = (i * 7 + 3) % V;
  const float* full_ptr = m->forward(seqs.data(), B, T);
  std::vector<float> full(full_ptr, full_ptr + size_t(B) * T * V);

  const int P = *std::max_element(lens.begin(), lens.end());
  std::vector<int> prompts(B * P, 0);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < lens[b]; ++t) prompts[b * P + t] = seqs[b * T + t];
  KVCache cache;
  m->reset_cache(cache, B, T);
  const float* pre = m->prefill(cache, prompts.data(), B, P);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < lens[b]; ++t)
      for (int v = 0; v < V; ++v)
        EXPECT_NEAR(pre[(size_t(b) * P + t) * V + v], full[(size_t(b) * T + t) * V + v], 1e-4) << b << "," << t;

  std::vector<int> pos(B), tok(B);
  for (int step = 0;; ++step) {
    bool any = false;
    for (int b = 0; b < B; ++b) {
      pos[b] = std::min(lens[b] + step, T - 1);
      tok[b] = seqs[b * T + pos[b]];
      any = any || lens[b] + step < T;
    }
    if (!any) break;
    const float* logits = m->decode(cache, tok.data(), pos.data());
    for (int b = 0; b < B; ++b) {
      if (lens[b] + step >= T) continue;
      for (int v = 0; v < V; ++v)
        ASSERT_NEAR(logits[size_t(b) * V + v], full[(size_t(b) * T + pos[b]) * V + v], 1e-4)
            << "sequence " << b << " position " << pos[b];
    }
  }
}

// Right padding never changes the logits of the real tokens before it (up to BLAS blocking,
// which may sum in another order for another row count).
TEST(Generation, PaddingIsInvisible) {
  auto m = testing::tiny_model();
  const int V = m->config().vocab;
  std::vector<int> a = {2, 3, 4, 5, 6}, padded = {2, 3, 4, 5, 6, 9, 9, 9};
  const float* la = m->forward(a.data(), 1, 5);
  std::vector<float> ra(la, la + 5 * V);
  const float* lp = m->forward(padded.data(), 1, 8);
  for (int i = 0; i < 5 * V; ++i) EXPECT_NEAR(ra[i], lp[i], 1e-5 * (1 + std::fabs(ra[i])));
}

TEST(Generation, StopsAtEosAndMaxNewTokens) {
  auto m = testing::tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 6;
  o.sampling.seed = 5;
  std::vector<std::vector<int>> prompts = {{2, 3}, {4, 5, 6, 7}, {8}};
  auto gens = generate(*m, prompts, {0, 1, 2}, o);
  ASSERT_EQ(gens.size(), 3u);
  for (const auto& g : gens) {
    ASSERT_FALSE(g.tokens.empty());
    EXPECT_LE(g.tokens.size(), 6u);
    EXPECT_EQ(g.tokens.size(), g.logp.size());
    const bool ends_eos = g.tokens.back() == m->tokenizer().eos_id();
    EXPECT_EQ(g.eos, ends_eos);
    if (!g.eos) EXPECT_EQ(g.tokens.size(), 6u);
    for (size_t i = 0; i + 1 < g.tokens.size(); ++i) EXPECT_NE(g.tokens[i], m->tokenizer().eos_id());
    for (float lp : g.logp) EXPECT_LE(lp, 0.0f);
  }
}

// A sequence's completion depends on its id and the seed, not on the other prompts in the batch.
TEST(Generation, CompletionIndependentOfBatch) {
  auto m = testing::tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.seed = 11;
  auto together = generate(*m, {{2, 3, 4}, {5}, {6, 7}}, {10, 20, 30}, o);
  auto alone = generate(*m, {{5}}, {20}, o);
  EXPECT_EQ(together[1].tokens, alone[0].tokens);
  for (size_t i = 0; i < alone[0].logp.size(); ++i) EXPECT_NEAR(together[1].logp[i], alone[0].logp[i], 1e-5);
}

// The recorded log-probabilities are those a forward pass over prompt + completion gives.
TEST(Generation, RecordedLogprobsMatchForward) {
  auto m = testing::tiny_model();
  GenerateOptions o;
  o.max_new_tokens = 7;
  o.sampling.seed = 2;
  std::vector<int> prompt = {2, 6, 3};
  auto g = generate(*m, {prompt}, {4}, o)[0];
  std::vector<int> seq = prompt;
  seq.insert(seq.end(), g.tokens.begin(), g.tokens.end());
  const int T = static_cast<int>(seq.size()), V = m->config().vocab;
  const float* logits = m->forward(seq.data(), 1, T);
  std::vector<int> targets(T, -1);
  for (int t = 0; t + 1 < T; ++t) targets[t] = seq[t + 1];
  std::vector<float> logp(T);
  cpu::logprobs_forward(logp.data(), static_cast<float*>(nullptr), logits, targets.data(), T, V);
  for (size_t i = 0; i < g.tokens.size(); ++i) EXPECT_NEAR(g.logp[i], logp[prompt.size() - 1 + i], 1e-4);
}

}  // namespace
}  // namespace opd
