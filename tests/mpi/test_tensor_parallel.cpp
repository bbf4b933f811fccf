// Tensor parallelism against one process: ranks in pairs form TP groups of 2 (a third rank sits
// out); each holds its shards of the same model, and every result — logits (its vocabulary slab),
// gradients (gathered), KV-cache steps, the objectives' losses and logit gradients, sampled
// tokens, teacher scores, AdamW updates — must equal the whole model's in one process.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "common/check.h"
#include "io/model_file.h"
#include "kernels/cpu/sample.h"
#include "model/shards.h"
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

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double rel, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(a[i])));
  }
  EXPECT_LE(worst, rel * scale) << what << ": worst difference " << worst << " of scale " << scale;
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
    expect_close(slab(logits.data(), N, vs), std::vector<float>(local, local + N * vs.size), 1e-5, "logits");

    const auto dlogits = testing::random_vector<float>(size_t(N) * V, 11);
    whole->zero_grad();
    whole->backward(dlogits.data());
    mine->zero_grad();
    mine->backward(slab(dlogits.data(), N, vs).data());
    mine->reduce_partial_grads();
    expect_close(whole->grads(), gather_shards(*tp_, mine->config(), mine->grads()), 1e-5,
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
  expect_close(slab(lw, B * T, vs), std::vector<float>(lm, lm + B * T * vs.size), 1e-5, "prefill");
  const std::vector<int> next = {6, 10}, pos = {4, 4};
  lw = whole->decode(cw, next.data(), pos.data());
  lm = mine->decode(cm, next.data(), pos.data());
  expect_close(slab(lw, B, vs), std::vector<float>(lm, lm + B * vs.size), 1e-5, "decode");
  const std::vector<int> more = {2, 3, 4, 5}, start = {5, 5};
  lw = whole->extend(cw, more.data(), 2, start.data());
  lm = mine->extend(cm, more.data(), 2, start.data());
  expect_close(slab(lw, B * 2, vs), std::vector<float>(lm, lm + B * 2 * vs.size), 1e-5, "extend");
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
    expect_close(sw.logp, st.logp, 1e-5, kl_text + ": teacher log-probs");
    if (kl.mode == KlSpec::kFull) expect_close(slab(sw.full.data(), N, vs), st.full, 1e-5, "teacher log-softmax");
    if (kl.mode == KlSpec::kTopK) {
      EXPECT_EQ(sw.topk_ids, st.topk_ids);
      expect_close(sw.topk_logp, st.topk_logp, 1e-5, "teacher top-K log-probs");
    }
    DistillOptions o;
    o.kl = kl;
    o.reward_coef = 0.5;
    std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
    const float* lw = student->forward(b.tokens.data(), b.B, b.T);
    const TokenSums a = distill_objective(dw.data(), lw, b, V, sw, o, adv, 0.1f);
    const float* lt = student_tp->forward(b.tokens.data(), b.B, b.T);
    const TokenSums c = distill_objective(dt.data(), lt, b, vs, st, o, adv, 0.1f);
    EXPECT_NEAR(a.loss, c.loss, 1e-5 * std::abs(a.loss)) << kl_text;
    EXPECT_NEAR(a.kl, c.kl, 1e-5 * std::abs(a.kl)) << kl_text;
    EXPECT_NEAR(a.kl_exact, c.kl_exact, 1e-5 * std::abs(a.kl_exact) + 1e-6) << kl_text;
    EXPECT_NEAR(a.entropy, c.entropy, 1e-5 * std::abs(a.entropy)) << kl_text;
    expect_close(slab(dw.data(), N, vs), dt, 1e-5, kl_text + ": dlogits");
  }
  std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
  const TokenSums a = sft_objective(dw.data(), student->forward(b.tokens.data(), b.B, b.T), b, V, 0.1f);
  const TokenSums c = sft_objective(dt.data(), student_tp->forward(b.tokens.data(), b.B, b.T), b, vs, 0.1f);
  EXPECT_NEAR(a.loss, c.loss, 1e-5 * std::abs(a.loss));
  expect_close(slab(dw.data(), N, vs), dt, 1e-5, "sft dlogits");
  const TokenSums g = policy_gradient_objective(dw.data(), student->forward(b.tokens.data(), b.B, b.T), b, V, adv, 0.1f);
  const TokenSums h =
      policy_gradient_objective(dt.data(), student_tp->forward(b.tokens.data(), b.B, b.T), b, vs, adv, 0.1f);
  EXPECT_NEAR(g.loss, h.loss, 1e-5 * std::abs(g.loss));
  expect_close(slab(dw.data(), N, vs), dt, 1e-5, "policy-gradient dlogits");
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

TEST_F(TensorParallel, AdamWStepsKeepTheShardsOnTheWholeTrajectory) {
  if (!tp_) return;
  auto whole = model(nullptr, false, 12);
  auto mine = model(tp_.get(), false, 12);
  const VocabShard& vs = mine->vocab_shard();
  const SequenceBatch b = make_batch(sequences(), 0);
  const int N = b.B * b.T, V = 12;
  OptimizerOptions o;
  o.lr = 1e-2;
  o.grad_clip = 0.5;  // the global norm crosses the shards
  o.weight_decay = 0.1;
  AdamW ow(*whole, o), om(*mine, o);
  for (int step = 1; step <= 3; ++step) {
    std::vector<float> dw(size_t(N) * V), dt(size_t(N) * vs.size);
    whole->zero_grad();
    sft_objective(dw.data(), whole->forward(b.tokens.data(), b.B, b.T), b, V, 0.1f);
    whole->backward(dw.data());
    mine->zero_grad();
    sft_objective(dt.data(), mine->forward(b.tokens.data(), b.B, b.T), b, vs, 0.1f);
    mine->backward(dt.data());
    mine->reduce_partial_grads();
    const double nw = ow.step(step), nm = om.step(step);
    EXPECT_NEAR(nw, nm, 1e-5 * nw) << "step " << step;
  }
  // As for data parallelism: gradients equal to ~1e-7 relative become visible fractions of lr on
  // components with tiny gradients, since AdamW divides by sqrt(v).
  const std::vector<float> gathered = gather_shards(*tp_, mine->config(), mine->params());
  double worst = 0;
  for (size_t i = 0; i < gathered.size(); ++i)
    worst = std::max(worst, double(std::abs(gathered[i] - whole->params()[i])));
  EXPECT_LE(worst, 1e-4) << "parameters after 3 steps: TP vs one process";
}

}  // namespace
}  // namespace opd
