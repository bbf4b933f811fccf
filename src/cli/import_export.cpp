// opd import / opd export: Hugging Face checkpoint directories <-> opd model files.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "core/options.h"
#include "io/hf_model.h"
#include "io/model_file.h"

namespace opd::cli {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
void describe(const Transformer& m) {
  const ModelConfig& c = m.config();
  std::printf("  %s model: vocab %d, d_model %d, %d layers, %d heads (%d kv) x %d, ffn %d, qk_norm %d, tied %d; "
              "%lld parameters; %s tokenizer of %d tokens, eos",
              c.qk_norm ? "qwen3" : "llama", c.vocab, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
              c.ffn_dim, int(c.qk_norm), int(c.tie_embeddings), static_cast<long long>(c.num_parameters()),
              m.tokenizer().type().c_str(), m.tokenizer().vocab_size());
  for (int id : m.tokenizer().eos_ids()) std::printf(" %d (%s)", id, m.tokenizer().piece(id).c_str());
  std::printf("\n");
}
}  // namespace

int import_model(const Args& args) {
  const Command cmd{"import",
                    "Converts a Hugging Face checkpoint directory (config.json, model.safetensors or its shards with "
                    "model.safetensors.index.json, tokenizer.json, tokenizer_config.json, generation_config.json) of "
                    "the Qwen3 or Llama-3 family into an opd model file. Weights become float32.",
                    "opd import --hf DIR --out model.h5"};
  po::options_description opts("Import");
  opts.add_options()("hf", po::value<std::string>()->required()->notifier(non_empty("hf")),
                     "Hugging Face checkpoint directory")(
      "out", po::value<std::string>()->required()->notifier(non_empty("out")), "model file to write (HDF5)");
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto model = import_hf(vm["hf"].as<std::string>());
  const double t_read = seconds_since(t0);
  save_model(vm["out"].as<std::string>(), *model);
  std::printf("imported %s -> %s in %.2f s (read %.2f s, write %.2f s)\n", vm["hf"].as<std::string>().c_str(),
              vm["out"].as<std::string>().c_str(), seconds_since(t0), t_read, seconds_since(t0) - t_read);
  describe(*model);
  return 0;
}

int export_model(const Args& args) {
  const Command cmd{"export",
                    "Writes an opd model file as a Hugging Face checkpoint directory that transformers' "
                    "from_pretrained loads: config.json, generation_config.json, model.safetensors and, for imported "
                    "models, tokenizer.json and tokenizer_config.json.",
                    "opd export --model model.h5 --hf DIR [--dtype f32|bf16]"};
  po::options_description opts("Export");
  opts.add_options()("model", po::value<std::string>()->required()->notifier(non_empty("model")),
                     "model file or checkpoint (HDF5)")(
      "hf", po::value<std::string>()->required()->notifier(non_empty("hf")), "directory to write")(
      "dtype", po::value<std::string>()->default_value("f32"), "tensor type in model.safetensors: f32 or bf16");
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  const std::string dt = vm["dtype"].as<std::string>();
  OPD_REQUIRE(dt == "f32" || dt == "bf16", "option --dtype = '", dt, "' must be f32 or bf16");
  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_model(vm["model"].as<std::string>());
  const double t_read = seconds_since(t0);
  export_hf(*model, vm["hf"].as<std::string>(), dt == "bf16" ? StDtype::kBF16 : StDtype::kF32);
  std::printf("exported %s -> %s in %.2f s (read %.2f s, write %.2f s)\n", vm["model"].as<std::string>().c_str(),
              vm["hf"].as<std::string>().c_str(), seconds_since(t0), t_read, seconds_since(t0) - t_read);
  if (model->tokenizer().type() != "bpe")
    std::printf("  note: the %s tokenizer has no tokenizer.json form; only the weights and configs were written\n",
                model->tokenizer().type().c_str());
  describe(*model);
  return 0;
}

}  // namespace opd::cli
