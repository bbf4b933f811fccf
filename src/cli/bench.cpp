// opd bench model: training and generation throughput of a model shape on this machine, next to
// the sgemm rate measured in the same run (the ceiling a CPU step is judged against).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "bench/op_bench.h"
#include "cli/commands.h"
#include "cli/runtime.h"
#include "core/error.h"
#include "core/options.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/matmul.h"
#include "model/generate.h"

namespace opd::cli {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// GFLOP/s of out[N, M] = a[N, K] @ b[M, K]^T, best of a few repetitions.
double sgemm_gflops(int N, int K, int M) {
  std::vector<float> a(size_t(N) * K, 0.5f), b(size_t(M) * K, 0.25f), out(size_t(N) * M);
  cpu::matmul_forward(out.data(), a.data(), b.data(), N, K, M);  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    auto t = Clock::now();
    cpu::matmul_forward(out.data(), a.data(), b.data(), N, K, M);
    best = std::min(best, seconds_since(t));
  }
  return 2.0 * N * K * M / best / 1e9;
}

int bench_model(const Args& args) {
  const Command cmd{"bench model",
                    "Times forward+backward and batched generation of a randomly initialised model of the given "
                    "shape.",
                    "opd bench model [--d-model 128 --layers 4 ...]"};
  po::options_description shape("Model shape and batch");
  shape.add_options()("vocab", po::value<int>()->default_value(64)->notifier(in_range("vocab", 2, 1 << 20)), "vocabulary")(
      "d-model", po::value<int>()->default_value(128)->notifier(in_range("d-model", 1, 1 << 16)), "hidden size")(
      "layers", po::value<int>()->default_value(4)->notifier(in_range("layers", 1, 1024)), "layers")(
      "heads", po::value<int>()->default_value(4)->notifier(in_range("heads", 1, 1024)), "query heads")(
      "kv-heads", po::value<int>()->default_value(2)->notifier(in_range("kv-heads", 1, 1024)), "key/value heads")(
      "head-dim", po::value<int>()->default_value(32)->notifier(in_range("head-dim", 2, 1024)), "head dimension")(
      "ffn", po::value<int>()->default_value(384)->notifier(in_range("ffn", 1, 1 << 18)), "MLP hidden size")(
      "batch", po::value<int>()->default_value(32)->notifier(in_range("batch", 1, 1 << 16)), "sequences per step")(
      "seq", po::value<int>()->default_value(64)->notifier(in_range("seq", 2, 1 << 16)), "tokens per sequence")(
      "steps", po::value<int>()->default_value(10)->notifier(in_range("steps", 1, 100000)), "timed steps")(
      "warmup", po::value<int>()->default_value(2)->notifier(in_range("warmup", 0, 1000)), "untimed steps first");
  add_runtime_options(shape);
  po::variables_map vm;
  if (!parse_options(cmd, args, shape, vm)) return 0;
  const int threads = apply_runtime_options(vm);

  ModelConfig c;
  c.vocab = vm["vocab"].as<int>();
  c.d_model = vm["d-model"].as<int>();
  c.n_layers = vm["layers"].as<int>();
  c.n_heads = vm["heads"].as<int>();
  c.n_kv_heads = vm["kv-heads"].as<int>();
  c.head_dim = vm["head-dim"].as<int>();
  c.ffn_dim = vm["ffn"].as<int>();
  const int B = vm["batch"].as<int>(), T = vm["seq"].as<int>();
  c.max_seq = T;
  c.validate("bench model");
  std::vector<std::string> pieces;
  for (int i = 0; i < c.vocab; ++i) pieces.push_back("<" + std::to_string(i) + ">");
  Transformer model(c, std::make_shared<CharTokenizer>(pieces, /*eos_id=*/-1, -1));  // no EOS: every sequence runs to full length
  model.init_random(1);

  std::vector<int> tokens(size_t(B) * T), targets(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 2654435761u) % c.vocab);
  for (size_t i = 0; i < tokens.size(); ++i) targets[i] = (i + 1) % T == 0 ? -1 : tokens[i + 1];
  std::vector<float> losses(size_t(B) * T), dlogits(size_t(B) * T * c.vocab);
  auto step = [&] {
    const float* logits = model.forward(tokens.data(), B, T);
    cpu::cross_entropy_forward_backward(losses.data(), dlogits.data(), logits, targets.data(), 1.0f / (B * T), B * T,
                                        c.vocab);
    model.backward(dlogits.data());
  };
  const int steps = vm["steps"].as<int>();
  for (int i = 0; i < vm["warmup"].as<int>(); ++i) step();
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double train_s = seconds_since(t0) / steps;
  const double train_flops = 3.0 * model.forward_flops(double(B) * T, (T + 1) / 2.0);

  const int prompt = std::min(8, T - 1);
  std::vector<std::vector<int>> prompts(B, std::vector<int>(tokens.begin(), tokens.begin() + prompt));
  std::vector<uint32_t> ids(B);
  for (int b = 0; b < B; ++b) ids[b] = b;
  GenerateOptions g;
  g.max_new_tokens = T - prompt;
  g.sampling.temperature = 1.0f;
  g.sampling.seed = 7;
  generate(model, prompts, ids, g);  // warm-up
  t0 = Clock::now();
  auto gens = generate(model, prompts, ids, g);
  const double gen_s = seconds_since(t0);
  size_t new_tokens = 0;
  for (const auto& gen : gens) new_tokens += gen.tokens.size();

  const double gemm_model = sgemm_gflops(B * T, c.d_model, c.ffn_dim);
  const double gemm_square = sgemm_gflops(1024, 1024, 1024);
  std::printf("model: %lld parameters (vocab %d, d_model %d, %d layers, %d/%d heads x %d, ffn %d), batch %d x %d, "
              "%d threads\n",
              static_cast<long long>(c.num_parameters()), c.vocab, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads,
              c.head_dim, c.ffn_dim, B, T, threads);
  std::printf("opd fwd+bwd: %.0f tokens/s, %.2f ms/step, %.1f GFLOP/s\n", B * T / train_s, train_s * 1e3,
              train_flops / train_s / 1e9);
  std::printf("opd generate: %.0f new tokens/s (%zu tokens, prompt %d, batch %d)\n", new_tokens / gen_s, new_tokens,
              prompt, B);
  std::printf("sgemm: %.1f GFLOP/s at the MLP shape %dx%dx%d, %.1f GFLOP/s at 1024^3\n", gemm_model, B * T,
              c.d_model, c.ffn_dim, gemm_square);
  std::printf("fwd+bwd efficiency: %.0f%% of the 1024^3 sgemm rate\n", 100.0 * train_flops / train_s / 1e9 / gemm_square);
  return 0;
}
int bench_ops(const Args& args) {
  const Command cmd{"bench ops",
                    "Checks every kernel against its CPU op on random inputs, then times it next to a GEMM and a "
                    "copy measured in the same run. Exits 1 if any check fails.",
                    "opd bench ops [--device cpu|cuda] [--op attention|attention-backward|vocab|pointwise] [--quick]"};
  po::options_description desc("Benchmark");
  desc.add_options()("device", po::value<std::string>()->default_value("cpu"), "cpu or cuda")(
      "op", po::value<std::string>()->default_value(""), "only this family of ops (default: all)")(
      "quick", po::bool_switch(), "small shapes and few repeats (a smoke test)")(
      "repeats", po::value<int>()->default_value(20)->notifier(in_range("repeats", 1, 100000)),
      "timed calls per shape; the median is reported");
  add_runtime_options(desc);
  po::variables_map vm;
  if (!parse_options(cmd, args, desc, vm)) return 0;
  apply_runtime_options(vm);
  bench::BenchOpsOptions o;
  const std::string device = vm["device"].as<std::string>();
  OPD_REQUIRE(device == "cpu" || device == "cuda", str("--device: '", device, "' is not cpu or cuda"));
  o.cuda = device == "cuda";
  o.quick = vm["quick"].as<bool>();
  o.repeats = vm["repeats"].as<int>();
  o.only = vm["op"].as<std::string>();
  if (!o.only.empty()) {
    const std::vector<std::string> known = bench::op_families();
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    OPD_REQUIRE(std::find(known.begin(), known.end(), o.only) != known.end(),
                str("--op: unknown family '", o.only, "' (known: ", list, ")"));
  }
  return bench::run_bench_ops(o);
}

}  // namespace

int bench(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: opd bench model|ops|step [options]   (opd bench model --help, opd bench ops --help,\n"
                 "       mpirun -n N opd bench step --help)\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "model") return bench_model(Args(args.begin() + 1, args.end()));
  if (args[0] == "ops") return bench_ops(Args(args.begin() + 1, args.end()));
  if (args[0] == "step") return bench_step(Args(args.begin() + 1, args.end()));
  throw Error(str("opd bench: unknown benchmark '", args[0], "' (known: model, ops, step)"));
}

}  // namespace opd::cli
