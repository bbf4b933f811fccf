// LoRA students on the CPU model (model/lora.h, docs/ARCHITECTURE.md §2): adapters named and split
// like the projections they adapt, a fresh adapter that leaves the model its base bit for bit, a
// student identical to its teacher that gets a reverse KL of exactly 0 and no update, gradients for
// the adapters only and equal to the merged model's gradient projected onto them (the chain rule:
// dB = s G A^T, dA = s B^T G), the merged model giving the adapted logits, and adapter files and
// LoRA checkpoints that name their base and refuse another.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <unistd.h>

#include "common/check.h"
#include "common/rounding.h"
#include "io/adapter_file.h"
#include "io/checkpoint.h"
#include "io/model_file.h"
#include "model/generate.h"
#include "tiny_model.h"
#include "train/objectives.h"
#include "train/optimizer.h"
#include "train/teacher.h"

namespace opd {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("opd_lora_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

LoraConfig lora(int rank, const std::string& targets = "q,k,v,o,gate,up,down", double alpha = 8) {
  LoraConfig l;
  l.rank = rank;
  l.alpha = alpha;
  l.targets = parse_lora_targets(targets, "--lora-targets");
  return l;
}

// A tiny model with adapters whose B is random too, so that the adapters change the function.
std::unique_ptr<Transformer> adapted_model(const LoraConfig& l, uint64_t seed = 3) {
  auto m = testing::tiny_model(false, seed);
  m->enable_lora(l, 17, {"(test)", 0});
  const auto noise = testing::random_vector<float>(m->lora_params().size(), 29, -0.05, 0.05);
  for (const ParamSpec& s : m->lora_specs())
    if (s.name.find("lora_B") != std::string::npos)
      for (size_t i = 0; i < s.size; ++i) m->lora_params()[s.offset + i] = noise[s.offset + i];
  return m;
}

std::vector<int> tokens(int B, int T, int V) {
  std::vector<int> t(size_t(B) * T);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int((i * 7 + 3) % V);
  return t;
}

std::vector<float> logits_of(Transformer& m, const std::vector<int>& t, int B, int T) {
  const float* l = m.forward(t.data(), B, T);
  return std::vector<float>(l, l + size_t(B) * T * m.config().vocab);
}

// Tolerances as fractions of the compared tensor's largest magnitude (tests/common/rounding.h): the
// merged model computes the same function in another order. The tiny model's logits end a chain of
// 22 sums of at most 40 terms; an adapted projection adds one (u = x A^T before u B^T) forward and
// one backward (du before du A): 8 projections on the logits' path, 16 on the gradients', and the
// projection of G onto the adapters one more sum of up to 40 terms.
const double kLogitsTol = testing::chain_tolerance(22 + 8, 40);
const double kGradientsTol = testing::chain_tolerance(45 + 16 + 1, 45);

void expect_close_to_scale(const std::vector<float>& got, const std::vector<double>& want, double rel,
                           const std::string& what) {
  testing::expect_close_to_scale(std::vector<double>(got.begin(), got.end()), want, rel, what);
}

TEST(Lora, SpecsNameEveryAdapterAndSplitItLikeItsProjection) {
  const ModelConfig c = testing::tiny_model()->config();  // d 24, q 32, kv 16, ffn 40, 2 layers
  const auto specs = lora_specs(c, lora(3));
  ASSERT_EQ(specs.size(), size_t(c.n_layers) * 7 * 2);
  EXPECT_EQ(specs[0].name, "model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(specs[0].shape, (std::vector<int64_t>{3, 24}));
  EXPECT_EQ(specs[1].name, "model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(specs[1].shape, (std::vector<int64_t>{32, 3}));
  EXPECT_EQ(specs[7].name, "model.layers.0.self_attn.o_proj.lora_B.weight");
  EXPECT_EQ(specs[13].name, "model.layers.0.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(specs[12].shape, (std::vector<int64_t>{3, 40}));
  EXPECT_EQ(lora_base_tensor(specs[12].name), "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(lora_specs(c, lora(2, "q,v")).size(), size_t(c.n_layers) * 2 * 2);
  EXPECT_TRUE(lora_specs(c, LoraConfig{}).empty());

  // Under TP 2: column-parallel q splits B by rows and replicates A (partial gradient); row-parallel
  // down splits A by columns and replicates B (partial gradient).
  const auto tp = lora_specs(c, lora(3), 2, 1);
  EXPECT_TRUE(tp[0].shard.replicated() && tp[0].partial_grad);
  EXPECT_EQ(tp[1].shard.split_dim, 0);
  EXPECT_EQ(tp[1].shape, (std::vector<int64_t>{16, 3}));
  EXPECT_EQ(tp[12].shard.split_dim, 1);
  EXPECT_EQ(tp[12].shape, (std::vector<int64_t>{3, 20}));
  EXPECT_TRUE(tp[13].shard.replicated() && tp[13].partial_grad);
}

TEST(Lora, OptionsAreValidatedNamingTheOption) {
  EXPECT_EQ(lora(1, "o,down").targets_text(), "o,down");
  EXPECT_EQ(lora(1).targets_text(), "q,k,v,o,gate,up,down");
  expect_error([] { parse_lora_targets("q,x", "--lora-targets"); }, {"--lora-targets", "'x'"});
  expect_error([] { parse_lora_targets("q,q", "--lora-targets"); }, {"--lora-targets", "twice"});
  expect_error([] { parse_lora_targets("", "--lora-targets"); }, {"--lora-targets", "no projection"});
  const ModelConfig c = testing::tiny_model()->config();
  expect_error([&] { check_lora(lora(17), c, "--lora-rank"); }, {"--lora-rank", "narrowest projection (16)"});
  expect_error([&] { check_lora(lora(2, "q", -1), c, "--lora-alpha"); }, {"alpha"});
}

// B = 0: the adapted model is its base bit for bit, in the training forward and in generation.
TEST(Lora, AFreshAdapterLeavesTheModelItsBaseBitForBit) {
  auto base = testing::tiny_model();
  auto student = testing::tiny_model();
  student->enable_lora(lora(4), 5, {"(test)", 0});
  const int B = 2, T = 9, V = base->config().vocab;
  const auto t = tokens(B, T, V);
  const auto a = logits_of(*base, t, B, T), b = logits_of(*student, t, B, T);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));

  GenerateOptions g;
  g.max_new_tokens = 8;
  g.sampling.seed = 11;
  const std::vector<std::vector<int>> prompts = {{2, 3, 4}, {5, 6}};
  const auto ga = generate(*base, prompts, {0, 1}, g), gb = generate(*student, prompts, {0, 1}, g);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(ga[i].tokens, gb[i].tokens);
    EXPECT_EQ(ga[i].logp, gb[i].logp);
  }
}

TEST(Lora, OnlyTheAdaptersHaveGradientsAndOptimizerState) {
  auto m = adapted_model(lora(4));
  const size_t adapters = total_size(m->lora_specs());
  EXPECT_EQ(m->grads().size(), adapters);
  EXPECT_EQ(m->trainable_params().size(), adapters);
  const std::vector<float> base = m->params(), before = m->lora_params();
  const int B = 2, T = 7, V = m->config().vocab;
  const auto t = tokens(B, T, V);
  m->forward(t.data(), B, T);
  const auto dlogits = testing::random_vector<float>(size_t(B) * T * V, 31);
  m->zero_grad();
  m->backward(dlogits.data());
  AdamW opt(*m, OptimizerOptions{});
  EXPECT_EQ(opt.m().size(), adapters);
  opt.step(1);
  EXPECT_EQ(0, std::memcmp(base.data(), m->params().data(), base.size() * sizeof(float))) << "the base moved";
  EXPECT_NE(before, m->lora_params());
}

// The chain rule through W' = W + s B A: with G = dL/dW' (the merged model's gradient),
// dL/dB = s G A^T and dL/dA = s B^T G. The merged model's forward equals the adapted one's up to
// rounding, so the two sides agree to rounding.
TEST(Lora, AdapterGradientsAreTheMergedGradientProjected) {
  for (const std::string targets : {"q,k,v,o,gate,up,down", "v,down"}) {
    SCOPED_TRACE(targets);
    const LoraConfig l = lora(3, targets);
    auto m = adapted_model(l);
    auto merged = m->merged();
    const int B = 2, T = 8, V = m->config().vocab;
    const auto t = tokens(B, T, V);
    const auto dlogits = testing::random_vector<float>(size_t(B) * T * V, 41);
    m->forward(t.data(), B, T);
    m->zero_grad();
    m->backward(dlogits.data());
    merged->forward(t.data(), B, T);
    merged->zero_grad();
    merged->backward(dlogits.data());
    std::map<std::string, const ParamSpec*> base;
    for (const ParamSpec& s : merged->specs()) base[s.name] = &s;
    const double s = l.scale();
    const auto& specs = m->lora_specs();
    for (size_t i = 0; i < specs.size(); i += 2) {
      const ParamSpec &A = specs[i], &Bs = specs[i + 1];
      const ParamSpec& W = *base.at(lora_base_tensor(A.name));
      const int R = int(A.shape[0]), in = int(A.shape[1]), out = int(Bs.shape[0]);
      const float *a = m->lora_params().data() + A.offset, *b = m->lora_params().data() + Bs.offset;
      const float* G = merged->grads().data() + W.offset;
      std::vector<double> want_dA(size_t(R) * in, 0.0), want_dB(size_t(out) * R, 0.0);
      for (int o = 0; o < out; ++o)
        for (int k = 0; k < in; ++k)
          for (int r = 0; r < R; ++r) {
            want_dA[size_t(r) * in + k] += s * b[size_t(o) * R + r] * G[size_t(o) * in + k];
            want_dB[size_t(o) * R + r] += s * G[size_t(o) * in + k] * a[size_t(r) * in + k];
          }
      const std::vector<float> dA(m->grads().begin() + A.offset, m->grads().begin() + A.offset + A.size);
      const std::vector<float> dB(m->grads().begin() + Bs.offset, m->grads().begin() + Bs.offset + Bs.size);
      expect_close_to_scale(dA, want_dA, kGradientsTol, A.name);
      expect_close_to_scale(dB, want_dB, kGradientsTol, Bs.name);
    }
  }
}

TEST(Lora, TheMergedModelGivesTheAdaptedLogits) {
  auto m = adapted_model(lora(4));
  auto merged = m->merged();
  EXPECT_FALSE(merged->has_lora());
  const int B = 3, T = 6, V = m->config().vocab;
  const auto t = tokens(B, T, V);
  const auto a = logits_of(*m, t, B, T), b = logits_of(*merged, t, B, T);
  expect_close_to_scale(a, std::vector<double>(b.begin(), b.end()), kLogitsTol, "logits");
  auto plain = testing::tiny_model();
  const auto c = logits_of(*plain, t, B, T);
  EXPECT_NE(a, c) << "the adapters should change the function";
}

// A LoRA student scored by a teacher equal to its base (a fresh adapter): reverse KL exactly 0, a
// logit gradient of exactly 0, and an update that moves no adapter.
TEST(Lora, StudentIdenticalToItsTeacherGetsZeroKlAndNoUpdate) {
  for (const std::string kl : {"sampled", "full"}) {
    SCOPED_TRACE(kl);
    auto student = testing::tiny_model();
    student->enable_lora(lora(4), 9, {"(test)", 0});
    auto teacher = testing::tiny_model();
    GenerateOptions g;
    g.max_new_tokens = 9;
    g.sampling.seed = 3;
    const std::vector<std::vector<int>> prompts = {{2, 3, 4}, {5, 6}, {7}, {8, 2, 9, 3}};
    const auto gens = generate(*student, prompts, {0, 1, 2, 3}, g);
    std::vector<Sequence> seqs;
    for (size_t i = 0; i < prompts.size(); ++i) seqs.push_back({prompts[i], gens[i].tokens, int(i) / 2, gens[i].eos});
    const SequenceBatch b = make_batch(seqs, 0);
    const int V = student->config().vocab, N = b.B * b.T;
    DistillOptions o;
    o.kl = parse_kl(kl, V);
    ColocatedTeacher scorer(*teacher);
    const TeacherScores scores = scorer.score(b, o.kl);
    std::vector<float> dlogits(size_t(N) * V, 1.0f);
    const float* logits = student->forward(b.tokens.data(), b.B, b.T);
    const TokenSums s = distill_objective(dlogits.data(), logits, b, V, scores, o, {}, 1.0f / b.trained_rows);
    EXPECT_GT(s.tokens, 0);
    EXPECT_EQ(s.kl, 0.0);
    EXPECT_EQ(s.kl_exact, 0.0);
    for (float x : dlogits) ASSERT_EQ(x, 0.0f);
    student->zero_grad();
    student->backward(dlogits.data());
    for (float x : student->grads()) ASSERT_EQ(x, 0.0f);
    const std::vector<float> before = student->lora_params();
    AdamW opt(*student, OptimizerOptions{});
    opt.step(1);
    EXPECT_EQ(0, std::memcmp(before.data(), student->lora_params().data(), before.size() * sizeof(float)));
  }
}

// An adapter file holds the adapters and names its base by path and tensor checksum: it reads back
// bit for bit, loads (load_model) as the merged model, and refuses another base or a corrupt tensor.
TEST(LoraFiles, AdapterFilesNameTheirBaseAndRefuseAnother) {
  auto base = testing::tiny_model();
  const std::string base_path = temp_path("base.h5"), other_path = temp_path("other.h5");
  save_model(base_path, *base);
  save_model(other_path, *testing::tiny_model(false, 4));
  EXPECT_NE(model_file_checksum(base_path), model_file_checksum(other_path));
  EXPECT_EQ(model_file_checksum(base_path), model_file_checksum(base_path));

  auto m = load_model(base_path);
  m->enable_lora(lora(2, "q,o,up"), 3, lora_base_of(base_path));
  const auto noise = testing::random_vector<float>(m->lora_params().size(), 5, -0.1, 0.1);
  for (size_t i = 0; i < noise.size(); ++i) m->lora_params()[i] += noise[i];
  const std::string adapter_path = temp_path("adapter.h5");
  save_model(adapter_path, *m);  // a LoRA model saves as its adapters
  EXPECT_TRUE(is_adapter_file(adapter_path));
  EXPECT_FALSE(is_adapter_file(base_path));
  EXPECT_LT(fs::file_size(adapter_path), fs::file_size(base_path));

  const Adapters a = load_adapters(adapter_path);
  EXPECT_EQ(a.lora, m->lora());
  EXPECT_EQ(a.base.path, fs::absolute(base_path).lexically_normal().string());
  EXPECT_EQ(a.base.checksum, model_file_checksum(base_path));
  EXPECT_EQ(read_model_config(adapter_path).d_model, base->config().d_model);
  ASSERT_EQ(a.params.size(), m->lora_params().size());
  EXPECT_EQ(0, std::memcmp(a.params.data(), m->lora_params().data(), a.params.size() * sizeof(float)));

  const int B = 2, T = 7, V = m->config().vocab;
  const auto t = tokens(B, T, V);
  auto loaded = load_model(adapter_path);
  EXPECT_FALSE(loaded->has_lora());
  const auto want = logits_of(*m, t, B, T), got = logits_of(*loaded, t, B, T);
  expect_close_to_scale(got, std::vector<double>(want.begin(), want.end()), kLogitsTol, "merged logits");

  expect_error([&] { load_adapted(a, other_path); }, {"is not their base model", "other.h5"});
  expect_error([&] { model_file_checksum(adapter_path); }, {"adapter file holds no base weights"});
  {  // One element of an adapter changed on disk: its checksum no longer matches.
    hid_t f = H5Fopen(adapter_path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "adapter/model.layers.1.mlp.up_proj.lora_A.weight", H5P_DEFAULT);
    std::vector<float> w(2 * 24);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data());
    w[5] += 1e-3f;
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data());
    H5Dclose(d);
    H5Fclose(f);
  }
  expect_error([&] { load_adapters(adapter_path); }, {"lora_A.weight", "checksum mismatch"});
}

// A LoRA run's checkpoint: adapters and their moments (no base weights), restored only into a
// student with the same adapters on the same base.
TEST(LoraFiles, CheckpointsHoldTheAdaptersAndTheirMoments) {
  const std::string base_path = temp_path("ck_base.h5");
  save_model(base_path, *testing::tiny_model());
  auto m = load_model(base_path);
  m->enable_lora(lora(4), 3, lora_base_of(base_path));
  const size_t n = m->lora_params().size();
  const auto mv = testing::random_vector<float>(n, 8, 0.0, 1.0), vv = testing::random_vector<float>(n, 9, 0.0, 1.0);
  const std::string path = temp_path("ck.h5");
  save_checkpoint(path, *m, mv, vv, 7, TrainState{5, 40, 800, 40, "{}"}, "# config\n");
  Checkpoint ck = load_checkpoint(path);
  EXPECT_FALSE(ck.model);
  ASSERT_TRUE(ck.adapters);
  EXPECT_EQ(ck.adam_updates, 7);
  EXPECT_EQ(ck.state.step, 5);
  EXPECT_EQ(ck.adam_m, mv);
  EXPECT_EQ(ck.adam_v, vv);
  EXPECT_EQ(ck.adapters->params, m->lora_params());
  EXPECT_EQ(ck.adapters->base.checksum, model_file_checksum(base_path));
  {  // The file holds no base weights.
    h5::File f = h5::File::open_read(path);
    EXPECT_FALSE(h5::exists(f.id(), "model"));
  }

  auto same = load_model(base_path);
  same->enable_lora(lora(4), 99, lora_base_of(base_path));
  restore_trained(ck, *same, path);
  EXPECT_EQ(same->lora_params(), m->lora_params());

  auto other_rank = load_model(base_path);
  other_rank->enable_lora(lora(2), 3, lora_base_of(base_path));
  expect_error([&] { restore_trained(ck, *other_rank, path); }, {"ck.h5", "rank 4", "rank 2"});
  auto plain = load_model(base_path);
  expect_error([&] { restore_trained(ck, *plain, path); }, {"holds LoRA adapters", "--lora-rank 4"});
  const std::string other_base = temp_path("ck_other.h5");
  save_model(other_base, *testing::tiny_model(false, 4));
  auto on_other = load_model(other_base);
  on_other->enable_lora(lora(4), 3, lora_base_of(other_base));
  expect_error([&] { restore_trained(ck, *on_other, path); }, {"were trained on", "ck_base.h5", "ck_other.h5"});
}

}  // namespace
}  // namespace opd
