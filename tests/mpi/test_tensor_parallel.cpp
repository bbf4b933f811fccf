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
#include "io/adapter_file.h"
#include "io/checkpoint.h"
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
#include "train/update.h"

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

// The same for a LoRA model's adapters (lora_specs layout).
std::vector<float> gather_lora(Communicator& tp, const ModelConfig& cfg, const LoraConfig& l,
                               const std::vector<float>& local) {
  const std::vector<ParamSpec> whole_specs = lora_specs(cfg, l);
  std::vector<float> all(local.size() * tp.size()), whole(total_size(whole_specs));
  tp.all_gather(local.data(), local.size() * sizeof(float), all.data());
  for (int r = 0; r < tp.size(); ++r) {
    const std::vector<ParamSpec> specs = lora_specs(cfg, l, tp.size(), r);
    for (size_t i = 0; i < specs.size(); ++i)
      copy_shard_in(all.data() + r * local.size() + specs[i].offset, specs[i].shard, whole.data() + whole_specs[i].offset);
  }
  return whole;
}

// The tiny model (whole or this rank's shards) with rank-2 adapters on every projection, B drawn
// whole from `seed` too (a fresh B is zero, which would hide half of the adapters' algebra).
std::unique_ptr<Transformer> lora_model(Communicator* tp, uint64_t seed) {
  auto m = testing::tiny_model(false, seed, 12, tp);
  LoraConfig l;
  l.rank = 2;
  l.alpha = 4;
  m->enable_lora(l, seed + 100, {"(test)", 0});
  for (size_t i = 0; i < m->lora_specs().size(); ++i) {
    const ParamSpec& s = m->lora_specs()[i];
    if (s.name.find("lora_B") == std::string::npos) continue;
    const auto whole = testing::random_vector<float>(size_t(s.shard.full_size()), uint32_t(seed * 1000 + i), -0.3, 0.3);
    copy_shard_out(whole.data(), s.shard, m->lora_params().data() + s.offset);
  }
  return m;
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

// The streamed LM head under tensor parallelism (docs/ARCHITECTURE.md §2, §4): each rank streams
// blocks of rows of its own vocabulary shard, exchanging [rows]-sized statistics per block; the
// objectives, the update's gradients and the teacher's scores equal the whole model's [N, V] rows.
TEST_F(TensorParallel, StreamedHeadMatchesTheWholeRows) {
  if (!tp_) return;
  const SequenceBatch b = make_batch(sequences(), 0);
  const int V = 12;
  const std::vector<float> adv = {0.5f, -0.25f, 1.0f, 0.0f, -1.0f};
  for (bool tied : {false, true}) {
    auto student = model(nullptr, tied, 9), teacher = model(nullptr, tied, 10);
    auto student_tp = model(tp_.get(), tied, 9), teacher_tp = model(tp_.get(), tied, 10);
    student->set_head_rows(kHeadRowsAll);
    teacher->set_head_rows(kHeadRowsAll);
    student_tp->set_head_rows(4);  // the batch's rows do not divide into blocks of 4
    teacher_tp->set_head_rows(3);
    const VocabShard& vs = student_tp->vocab_shard();
    for (const std::string kl_text : {"sampled", "full", "topk:3", "rl", "sft"}) {
      const Method method = kl_text == "rl" ? Method::kRl : kl_text == "sft" ? Method::kSft : Method::kDistill;
      DistillOptions o;
      o.kl = parse_kl(method == Method::kDistill ? kl_text : "sampled", V);
      o.reward_coef = 0.5;
      o.kl_discount = kl_text == "sampled" ? 0.5 : 0.0;  // the advantage reads later blocks
      ColocatedTeacher tw(*teacher), tt(*teacher_tp);
      const TeacherScores sw = tw.score(b, o.kl), st = tt.score(b, o.kl);
      const std::string what = kl_text + (tied ? " (tied)" : "");
      expect_close(sw.logp, st.logp, 1e-5, what + ": teacher log-probs");
      if (o.kl.mode == KlSpec::kFull && method == Method::kDistill)
        expect_close(slab(sw.full.data(), b.B * b.T, vs), st.full, 1e-5, what + ": teacher log-softmax");
      if (o.kl.mode == KlSpec::kTopK) EXPECT_EQ(sw.topk_ids, st.topk_ids) << what;
      const bool distill = method == Method::kDistill;
      const std::vector<float> a = method == Method::kSft ? std::vector<float>() : adv;
      student->zero_grad();
      const TokenSums x = update_micro_batch(*student, b, method, o, distill ? &sw : nullptr, a);
      student_tp->zero_grad();
      const TokenSums y = update_micro_batch(*student_tp, b, method, o, distill ? &st : nullptr, a);
      student_tp->reduce_partial_grads();
      EXPECT_NEAR(x.loss, y.loss, 1e-5 * std::max(1.0, std::abs(x.loss))) << what;
      EXPECT_NEAR(x.kl_exact, y.kl_exact, 1e-5 * std::max(1.0, std::abs(x.kl_exact))) << what;
      EXPECT_NEAR(x.entropy, y.entropy, 1e-5 * std::max(1.0, std::abs(x.entropy))) << what;
      expect_close(student->grads(), gather_shards(*tp_, student_tp->config(), student_tp->grads()), 1e-5,
                   what + ": gradients");
    }
  }
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

// LoRA under tensor parallelism (docs/ARCHITECTURE.md §4): each adapter split like its projection
// (column-parallel: B by rows, A whole with a partial gradient; row-parallel: A by columns, B whole
// with a partial gradient) gives the whole model's adapters (exactly), merged weights, logits,
// adapter gradients and AdamW updates from the same state (within the rounding of another
// summation order); adapters and a LoRA checkpoint saved collectively read back whole and in
// shards. An adapted projection adds one sum to the chain (u = x A^T before u B^T) forward and
// one backward (du = s dy B before du A): 8 projections on the logits' path, 16 on the gradients'.
const double kLoraLogitsTol = testing::chain_tolerance(22 + 8, 40);
const double kLoraGradientsTol = testing::chain_tolerance(45 + 16, 45);

TEST_F(TensorParallel, LoraMatchesOneProcess) {
  if (!tp_) return;
  auto whole = lora_model(nullptr, 14);
  auto mine = lora_model(tp_.get(), 14);
  const ModelConfig& cfg = mine->config();
  const LoraConfig& l = mine->lora();
  EXPECT_EQ(gather_lora(*tp_, cfg, l, mine->lora_params()), whole->lora_params()) << "initialisation";
  EXPECT_EQ(mine->grads().size(), mine->lora_params().size()) << "gradients for the adapters only";
  // Merged shard by shard: each weight plus a sum of R = 2 products, in another BLAS blocking.
  expect_close(whole->merged()->params(), gather_shards(*tp_, cfg, mine->merged()->params()),
               testing::chain_tolerance(1, 3), "merged weights");

  const VocabShard& vs = mine->vocab_shard();
  const SequenceBatch b = make_batch(sequences(), 0);
  const int N = b.B * b.T, V = 12;
  const float* lw = whole->forward(b.tokens.data(), b.B, b.T);
  const std::vector<float> logits(lw, lw + size_t(N) * V);
  const float* lt = mine->forward(b.tokens.data(), b.B, b.T);
  expect_close(slab(logits.data(), N, vs), std::vector<float>(lt, lt + size_t(N) * vs.size), kLoraLogitsTol,
               "LoRA logits");

  // One AdamW update at a time from the same state (see OneAdamWUpdateFromTheSameState...).
  const std::vector<ParamSpec> my_specs = lora_specs(cfg, l, tp_->size(), tp_->rank()), whole_specs = lora_specs(cfg, l);
  const auto lora_shards = [&](const std::vector<float>& w) {
    std::vector<float> local(total_size(my_specs));
    for (size_t i = 0; i < my_specs.size(); ++i)
      copy_shard_out(w.data() + whole_specs[i].offset, my_specs[i].shard, local.data() + my_specs[i].offset);
    return local;
  };
  OptimizerOptions o;
  o.lr = 1e-2;
  o.grad_clip = 0.5;  // the global norm crosses the shards
  AdamW ow(*whole, o), om(*mine, o);
  for (int step = 1; step <= 3; ++step) {
    const std::string what = "tp: LoRA update " + std::to_string(step);
    mine->lora_params() = lora_shards(whole->lora_params());
    om.restore(lora_shards(ow.m()), lora_shards(ow.v()), step - 1);
    std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
    whole->zero_grad();
    sft_objective(dw.data(), whole->forward(b.tokens.data(), b.B, b.T), b, V, 0.1f);
    whole->backward(dw.data());
    mine->zero_grad();
    sft_objective(dt.data(), mine->forward(b.tokens.data(), b.B, b.T), b, vs, 0.1f);
    mine->backward(dt.data());
    mine->reduce_partial_grads();
    const std::vector<float> grads_tp = gather_lora(*tp_, cfg, l, mine->grads());
    expect_close(whole->grads(), grads_tp, kLoraGradientsTol, "adapter gradients before update " + std::to_string(step));
    testing::AdamWState before{whole->lora_params(), ow.m(), ow.v(), whole->grads(), {}, float(o.lr), float(o.beta1),
                               float(o.beta2), float(o.eps), float(o.weight_decay), step, 1.0f};
    for (const ParamSpec& s : whole_specs) before.decay.insert(before.decay.end(), s.size, s.decay ? 1 : 0);
    const double nw = ow.step(step), nm = om.step(step);
    testing::expect_near_rel(nm, nw, kLoraGradientsTol, what + ": gradient norm");
    before.scale = testing::clip_scale(nw, o.grad_clip);
    const testing::AdamWResult one{whole->lora_params(), ow.m(), ow.v(), whole->grads(), before.scale};
    const testing::AdamWResult tp{gather_lora(*tp_, cfg, l, mine->lora_params()), gather_lora(*tp_, cfg, l, om.m()),
                                  gather_lora(*tp_, cfg, l, om.v()), grads_tp, testing::clip_scale(nm, o.grad_clip)};
    testing::expect_same_update(before, one, tp, what);
  }

  char dir[256] = {};
  if (tp_->rank() == 0) {
    std::snprintf(dir, sizeof(dir), "/tmp/opd_tp_lora_XXXXXX");
    if (!mkdtemp(dir)) dir[0] = '\0';
  }
  tp_->broadcast(dir, sizeof(dir), 0);
  ASSERT_NE(dir[0], '\0');
  const std::string path = std::string(dir) + "/adapter.h5";
  save_model(path, *mine);  // collectively: each rank its hyperslabs of the split adapters
  const std::vector<float> gathered = gather_lora(*tp_, cfg, l, mine->lora_params());
  EXPECT_EQ(load_adapters(path).params, gathered);
  EXPECT_EQ(load_adapters(path, tp_.get()).params, mine->lora_params());
  // A LoRA checkpoint written collectively: adapters and moments, read back whole or in shards.
  const std::string ck_path = std::string(dir) + "/ck.h5";
  save_checkpoint(ck_path, *mine, om.m(), om.v(), om.updates(), TrainState{3, 15, 300, 15, "{}"}, "# tp\n");
  const Checkpoint ck1 = load_checkpoint(ck_path), ck2 = load_checkpoint(ck_path, tp_.get());
  ASSERT_TRUE(ck1.adapters && ck2.adapters);
  EXPECT_EQ(ck1.adapters->params, gathered);
  EXPECT_EQ(ck1.adam_m, gather_lora(*tp_, cfg, l, om.m()));
  EXPECT_EQ(ck2.adapters->params, mine->lora_params());
  EXPECT_EQ(ck2.adam_v, om.v());
  EXPECT_EQ(ck2.adam_updates, 3);
  tp_->barrier();
  if (tp_->rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace opd
