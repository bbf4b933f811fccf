// Tensor parallelism against one process: ranks in pairs form TP groups of 2 (a third rank sits
// out); each holds its shards of the same model, and every result — logits (its vocabulary slab),
// gradients (gathered), KV-cache steps, the objectives' losses and logit gradients, sampled
// tokens, teacher scores, one AdamW update from the same state — must equal the whole model's in
// one process, within the rounding of summing in another order (tests/common/rounding.h), or
// exactly where the arithmetic is the same (initialisation, saved shards, sampled tokens).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "common/check.h"
#include "common/rounding.h"
#include "io/model_file.h"
#include "kernels/cpu/sample.h"
#include "model/shards.h"
#include "parallel/tensor_shard.h"
#include "model/tiny_model.h"
#include "model/vocab_parallel.h"
#include "parallel/mpi_communicator.h"
#include "train/objectives.h"
#include "train/optimizer.h"
#include "train/teacher.h"

namespace opd {
namespace {

constexpr int kTp = 2;

// Tolerances, as fractions of the compared tensor's largest magnitude (tests/common/rounding.h).
// TP sums the same products in another order: the o and down projections as two partial sums
// of K/2 terms and an all-reduce, softmax and log-sum-exp per vocabulary shard and then across,
// the norm gradients of q/k per rank and then across; and OpenBLAS picks its kernels by shape.
// The tiny model's longest sum has 40 terms (ffn_dim; the batches below have at most 45 rows).
// Logits end a chain of 22 sums: per layer the two RMS norms, q/k/v, the q/k norms, scores,
// softmax, weighted values, o, gate/up and down; then the final norm and the LM head.
const double kLogitsTol = testing::chain_tolerance(22, 40);     // ~1.0e-4
// Log-probs, losses and dlogits: the log-sum-exp over the vocabulary and the sum over rows on top.
const double kScoresTol = testing::chain_tolerance(24, 45);     // ~1.3e-4
// Gradients: the chain back through the same 22 sums, then each weight's sum over the rows.
const double kGradientsTol = testing::chain_tolerance(45, 45);  // ~2.4e-4

// The tiny test model with a vocabulary of 12, so that heads, kv heads, ffn and vocabulary split
// over 2 ranks; the whole model when tp is null, else this rank's shards of the same model.
std::unique_ptr<Transformer> model(Communicator* tp, bool tied, uint64_t seed) {
  return testing::tiny_model(tied, seed, 12, tp);
}

// The whole flat buffer (param_specs(cfg) layout) from every TP rank's shards, on every rank.
std::vector<float> gather_shards(Communicator& tp, const ModelConfig& cfg, const std::vector<float>& local) {
  const std::vector<ParamSpec> whole_specs = param_specs(cfg);
  std::vector<float> all(local.size() * tp.size()), whole(total_size(whole_specs));
  tp.all_gather(local.data(), local.size() * sizeof(float), all.data());
  for (int r = 0; r < tp.size(); ++r) {
    const std::vector<ParamSpec> specs = param_specs(cfg, tp.size(), r);
    for (size_t i = 0; i < specs.size(); ++i)
      copy_shard_in(all.data() + r * local.size() + specs[i].offset, specs[i].shard, whole.data() + whole_specs[i].offset);
  }
  return whole;
}

// The TP group of this rank (pairs of ranks), or null on a rank left over.
std::unique_ptr<Communicator> tp_group(Communicator& world) {
  const int pairs = world.size() / kTp;
  const bool in = world.rank() < pairs * kTp;
  return world.split(in ? world.rank() / kTp : -1, world.rank(), "tp group");
}

// a: the whole model's, b: the TP ranks'.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, double rel, const std::string& what) {
  testing::expect_close_to_scale(b, a, rel, "tp: " + what);
}

// This rank's shards (param_specs(cfg, tp) layout) of the whole flat buffer: gather_shards' inverse.
std::vector<float> shards_of(Communicator& tp, const ModelConfig& cfg, const std::vector<float>& whole) {
  const std::vector<ParamSpec> whole_specs = param_specs(cfg), specs = param_specs(cfg, tp.size(), tp.rank());
  std::vector<float> local(total_size(specs));
  for (size_t i = 0; i < specs.size(); ++i)
    copy_shard_out(whole.data() + whole_specs[i].offset, specs[i].shard, local.data() + specs[i].offset);
  return local;
}

// Rows [N, V] of the whole model, this rank's columns.
std::vector<float> slab(const float* rows, int N, const VocabShard& vs) {
  return slice_columns(rows, N, vs.vocab, vs.begin, vs.size);
}

std::vector<Sequence> sequences() {
  std::vector<Sequence> seqs;
  for (int i = 0; i < 5; ++i) {
    Sequence s;
    for (int t = 0; t < 2 + i % 3; ++t) s.prompt.push_back(2 + (i * 3 + t) % 10);
    for (int t = 0; t < 1 + (i * 5) % 6; ++t) s.completion.push_back(2 + (i * 7 + t * 2) % 10);
    s.group = i / 2;
    seqs.push_back(s);
  }
  return seqs;
}

class TensorParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::world();
    tp_ = tp_group(*world_);
  }
  std::unique_ptr<Communicator> world_, tp_;
};

TEST_F(TensorParallel, InitialisationIsTheSameModelAtAnyDegree) {
  if (!tp_) return;
  auto whole = model(nullptr, false, 4);
  auto mine = model(tp_.get(), false, 4);
  EXPECT_EQ(gather_shards(*tp_, mine->config(), mine->params()), whole->params());
}

TEST_F(TensorParallel, ForwardAndBackwardMatchTheWholeModel) {
  if (!tp_) return;
  for (bool tied : {false, true}) {
    auto whole = model(nullptr, tied, 7);
    auto mine = model(tp_.get(), tied, 7);
    const int B = 3, T = 7, N = B * T, V = 12;
    std::vector<int> tokens(N);
    for (int i = 0; i < N; ++i) tokens[i] = (i * 5 + 3) % V;
    const float* lw = whole->forward(tokens.data(), B, T);
    const std::vector<float> logits(lw, lw + N * V);
    const VocabShard& vs = mine->vocab_shard();
    const float* local = mine->forward(tokens.data(), B, T);
    expect_close(slab(logits.data(), N, vs), std::vector<float>(local, local + N * vs.size), kLogitsTol, "logits");

    const auto dlogits = testing::random_vector<float>(size_t(N) * V, 11);
    whole->zero_grad();
    whole->backward(dlogits.data());
    mine->zero_grad();
    mine->backward(slab(dlogits.data(), N, vs).data());
    mine->reduce_partial_grads();
    expect_close(whole->grads(), gather_shards(*tp_, mine->config(), mine->grads()), kGradientsTol,
                 tied ? "gradients (tied)" : "gradients");
  }
}

// A model saved collectively by its TP ranks (parallel HDF5, one hyperslab each) is the whole
// model, bit for bit: it loads in one process (resharding tp 2 -> 1) with identical logits, and
// back at tp 2 (each rank reading its hyperslabs) with identical shards; a corrupted element of a
// split tensor fails the combined checksum on every rank.
TEST_F(TensorParallel, SavedShardsLoadAtAnotherDegree) {
  if (!tp_) return;
  auto whole = model(nullptr, true, 13);
  auto mine = model(tp_.get(), true, 13);
  char dir[256] = {};
  if (tp_->rank() == 0) {
    std::snprintf(dir, sizeof(dir), "/tmp/opd_tp_save_XXXXXX");
    if (!mkdtemp(dir)) dir[0] = '\0';
  }
  tp_->broadcast(dir, sizeof(dir), 0);
  ASSERT_NE(dir[0], '\0');
  const std::string path = std::string(dir) + "/model.h5";
  save_model(path, *mine);
  auto loaded = load_model(path);
  EXPECT_EQ(loaded->params(), whole->params());
  const std::vector<int> tokens = {2, 4, 6, 8, 10, 3, 5, 7};
  const float* a = whole->forward(tokens.data(), 2, 4);
  const std::vector<float> expect(a, a + 8 * 12);
  const float* b = loaded->forward(tokens.data(), 2, 4);
  EXPECT_EQ(std::vector<float>(b, b + 8 * 12), expect);
  auto again = load_model(path, tp_.get());
  ASSERT_TRUE(again->tp());
  EXPECT_EQ(again->params(), mine->params());
  tp_->barrier();
  if (tp_->rank() == 0) {  // one element of rank 1's half of a row-parallel (column-split) tensor
    h5::File f = h5::File::open_rw(path);
    h5::Handle d(H5Dopen2(f.id(), "model/model.layers.1.mlp.down_proj.weight", H5P_DEFAULT), H5Dclose);
    h5::Handle space(H5Dget_space(d.id()), H5Sclose);
    const hsize_t at[2] = {3, 39}, one[2] = {1, 1};
    H5Sselect_hyperslab(space.id(), H5S_SELECT_SET, at, nullptr, one, nullptr);
    h5::Handle mem(H5Screate_simple(2, one, nullptr), H5Sclose);
    const float bad = 12345.0f;
    ASSERT_GE(H5Dwrite(d.id(), H5T_NATIVE_FLOAT, mem.id(), space.id(), H5P_DEFAULT, &bad), 0);
  }
  tp_->barrier();
  testing::expect_error([&] { load_model(path, tp_.get()); },
                        {"model.layers.1.mlp.down_proj.weight: checksum mismatch"});
  tp_->barrier();
  if (tp_->rank() == 0) std::filesystem::remove_all(dir);
}

TEST_F(TensorParallel, KvCacheStepsMatchTheWholeModel) {
  if (!tp_) return;
  auto whole = model(nullptr, false, 8);
  auto mine = model(tp_.get(), false, 8);
  const VocabShard& vs = mine->vocab_shard();
  const int B = 2, T = 4;
  const std::vector<int> prompt = {2, 5, 7, 3, 4, 4, 9, 11};
  KVCache cw, cm;
  whole->reset_cache(cw, B, 12);
  mine->reset_cache(cm, B, 12);
  const float* lw = whole->prefill(cw, prompt.data(), B, T);
  const float* lm = mine->prefill(cm, prompt.data(), B, T);
  expect_close(slab(lw, B * T, vs), std::vector<float>(lm, lm + B * T * vs.size), kLogitsTol, "prefill");
  const std::vector<int> next = {6, 10}, pos = {4, 4};
  lw = whole->decode(cw, next.data(), pos.data());
  lm = mine->decode(cm, next.data(), pos.data());
  expect_close(slab(lw, B, vs), std::vector<float>(lm, lm + B * vs.size), kLogitsTol, "decode");
  const std::vector<int> more = {2, 3, 4, 5}, start = {5, 5};
  lw = whole->extend(cw, more.data(), 2, start.data());
  lm = mine->extend(cm, more.data(), 2, start.data());
  expect_close(slab(lw, B * 2, vs), std::vector<float>(lm, lm + B * 2 * vs.size), kLogitsTol, "extend");
}

TEST_F(TensorParallel, SampledTokensAreTheWholeRowsTokens) {
  if (!tp_) return;
  const int N = 96, V = 12;
  VocabShard vs(V);
  vs.tp = tp_.get();
  vs.size = V / kTp;
  vs.begin = vs.size * tp_->rank();
  std::vector<uint32_t> seq(N), pos(N);
  for (int n = 0; n < N; ++n) {
    seq[n] = n / 4;
    pos[n] = 3 + n % 4;
  }
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    auto logits = testing::random_vector<float>(size_t(N) * V, seed, -3.0, 3.0);
    if (seed == 4)  // flat rows and rows of ties: the nucleus spans both shards, cut at a tie
      for (int n = 0; n < N; ++n)
        for (int v = 0; v < V; ++v) logits[size_t(n) * V + v] = n % 2 ? 0.0f : float((v * 7 + n) % 3);
    const auto local = slab(logits.data(), N, vs);
    struct Case {
      float temperature, top_p;
      int top_k;
    } cases[] = {{1.0f, 1.0f, 0}, {0.7f, 1.0f, 0}, {1.0f, 1.0f, 5}, {1.0f, 0.9f, 0},
                 {1.0f, 0.5f, 0}, {0.8f, 0.8f, 5}, {0.0f, 1.0f, 0}};
    for (const auto& c : cases) {
      cpu::SampleParams p;
      p.temperature = c.temperature;
      p.top_p = c.top_p;
      p.top_k = c.top_k;
      p.seed = seed;
      p.step = 4;
      std::vector<int> expect(N), got(N);
      cpu::sample_tokens(expect.data(), logits.data(), seq.data(), pos.data(), N, V, p);
      vocab_parallel::sample(vs, got.data(), local.data(), seq.data(), pos.data(), N, p);
      EXPECT_EQ(got, expect) << "temperature " << c.temperature << " top_p " << c.top_p << " top_k " << c.top_k;
    }
  }
}

TEST_F(TensorParallel, ObjectivesAndTeacherScoresMatchTheWholeRows) {
  if (!tp_) return;
  auto student = model(nullptr, false, 9), teacher = model(nullptr, false, 10);
  auto student_tp = model(tp_.get(), false, 9), teacher_tp = model(tp_.get(), false, 10);
  const VocabShard& vs = student_tp->vocab_shard();
  const SequenceBatch b = make_batch(sequences(), 0);
  const int N = b.B * b.T, V = 12;
  const std::vector<float> adv = {0.5f, -0.25f, 1.0f, 0.0f, -1.0f};
  for (const std::string kl_text : {"sampled", "full", "topk:3"}) {
    const KlSpec kl = parse_kl(kl_text, V);
    ColocatedTeacher tw(*teacher), tt(*teacher_tp);
    const TeacherScores sw = tw.score(b, kl), st = tt.score(b, kl);
    expect_close(sw.logp, st.logp, kScoresTol, kl_text + ": teacher log-probs");
    if (kl.mode == KlSpec::kFull) expect_close(slab(sw.full.data(), N, vs), st.full, kScoresTol, "teacher log-softmax");
    if (kl.mode == KlSpec::kTopK) {
      EXPECT_EQ(sw.topk_ids, st.topk_ids);
      expect_close(sw.topk_logp, st.topk_logp, kScoresTol, "teacher top-K log-probs");
    }
    DistillOptions o;
    o.kl = kl;
    o.reward_coef = 0.5;
    std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
    const float* lw = student->forward(b.tokens.data(), b.B, b.T);
    const TokenSums a = distill_objective(dw.data(), lw, b, V, sw, o, adv, 0.1f);
    const float* lt = student_tp->forward(b.tokens.data(), b.B, b.T);
    const TokenSums c = distill_objective(dt.data(), lt, b, vs, st, o, adv, 0.1f);
    testing::expect_near_rel(c.loss, a.loss, kScoresTol, "tp: " + kl_text + ": loss");
    testing::expect_near_rel(c.kl, a.kl, kScoresTol, "tp: " + kl_text + ": kl");
    testing::expect_near_rel(c.kl_exact, a.kl_exact, kScoresTol, "tp: " + kl_text + ": kl_exact");
    testing::expect_near_rel(c.entropy, a.entropy, kScoresTol, "tp: " + kl_text + ": entropy");
    expect_close(slab(dw.data(), N, vs), dt, kScoresTol, kl_text + ": dlogits");
  }
  std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
  const TokenSums a = sft_objective(dw.data(), student->forward(b.tokens.data(), b.B, b.T), b, V, 0.1f);
  const TokenSums c = sft_objective(dt.data(), student_tp->forward(b.tokens.data(), b.B, b.T), b, vs, 0.1f);
  testing::expect_near_rel(c.loss, a.loss, kScoresTol, "tp: sft loss");
  expect_close(slab(dw.data(), N, vs), dt, kScoresTol, "sft dlogits");
  const TokenSums g = policy_gradient_objective(dw.data(), student->forward(b.tokens.data(), b.B, b.T), b, V, adv, 0.1f);
  const TokenSums h =
      policy_gradient_objective(dt.data(), student_tp->forward(b.tokens.data(), b.B, b.T), b, vs, adv, 0.1f);
  testing::expect_near_rel(h.loss, g.loss, kScoresTol, "tp: policy-gradient loss");
  expect_close(slab(dw.data(), N, vs), dt, kScoresTol, "policy-gradient dlogits");
}

// One AdamW update at a time from the same state: before each of 3 updates the TP ranks take
// their shards of the whole model's parameters and moments, both compute the gradient of the same
// tokens and update; parameters and moments must then agree within what AdamW makes of the gap
// between the two gradients (tests/common/rounding.h: adamw_bounds). Not a 3-step trajectory
// compared at the end: AdamW divides by sqrt(v), so a gradient that rounds differently near 0
// steps differently, and trajectories that part at one update need not meet again.
TEST_F(TensorParallel, OneAdamWUpdateFromTheSameStateMatchesTheWholeModel) {
  if (!tp_) return;
  auto whole = model(nullptr, false, 12);
  auto mine = model(tp_.get(), false, 12);
  const ModelConfig& cfg = mine->config();
  const VocabShard& vs = mine->vocab_shard();
  const SequenceBatch b = make_batch(sequences(), 0);
  const int N = b.B * b.T, V = 12;
  OptimizerOptions o;
  o.lr = 1e-2;
  o.grad_clip = 0.5;  // the global norm crosses the shards
  o.weight_decay = 0.1;
  AdamW ow(*whole, o), om(*mine, o);
  const std::vector<float> start = whole->params();
  for (int step = 1; step <= 3; ++step) {
    const std::string what = "tp: update " + std::to_string(step);
    mine->params() = shards_of(*tp_, cfg, whole->params());
    om.restore(shards_of(*tp_, cfg, ow.m()), shards_of(*tp_, cfg, ow.v()), step - 1);
    std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
    whole->zero_grad();
    sft_objective(dw.data(), whole->forward(b.tokens.data(), b.B, b.T), b, V, 0.1f);
    whole->backward(dw.data());
    mine->zero_grad();
    sft_objective(dt.data(), mine->forward(b.tokens.data(), b.B, b.T), b, vs, 0.1f);
    mine->backward(dt.data());
    mine->reduce_partial_grads();
    const std::vector<float> grads_tp = gather_shards(*tp_, cfg, mine->grads());
    expect_close(whole->grads(), grads_tp, kGradientsTol, "gradients before update " + std::to_string(step));
    testing::AdamWState before{whole->params(), ow.m(), ow.v(), whole->grads(), {}, float(o.lr), float(o.beta1),
                               float(o.beta2), float(o.eps), float(o.weight_decay), step, 1.0f};
    for (const ParamSpec& s : whole->specs()) before.decay.insert(before.decay.end(), s.size, s.decay ? 1 : 0);
    const double nw = ow.step(step), nm = om.step(step);
    // The global norm of the gradient: each entry within kGradientsTol of the largest, and the
    // largest dominate the norm.
    testing::expect_near_rel(nm, nw, kGradientsTol, what + ": gradient norm");
    before.scale = testing::clip_scale(nw, o.grad_clip);
    const testing::AdamWResult one{whole->params(), ow.m(), ow.v(), whole->grads(), before.scale};
    const testing::AdamWResult tp{gather_shards(*tp_, cfg, mine->params()), gather_shards(*tp_, cfg, om.m()),
                                  gather_shards(*tp_, cfg, om.v()), grads_tp, testing::clip_scale(nm, o.grad_clip)};
    testing::expect_same_update(before, one, tp, what);
  }
  double moved = 0;
  for (size_t i = 0; i < start.size(); ++i) moved = std::max(moved, double(std::abs(whole->params()[i] - start[i])));
  EXPECT_GT(moved, 1e-3) << "no update happened";
}

}  // namespace
}  // namespace opd
