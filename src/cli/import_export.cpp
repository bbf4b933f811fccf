// opd import / opd export: Hugging Face checkpoint directories <-> opd model files (a LoRA run's
// adapters -> a PEFT adapter directory beside its base); opd merge: adapters into their base.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/options.h"
#include "io/adapter_file.h"
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

namespace {
// A file that holds LoRA adapters rather than a model: an adapter file, or a LoRA run's checkpoint.
bool holds_adapters(const std::string& path) {
  if (is_adapter_file(path)) return true;
  const h5::File f = h5::File::open_read(path);
  return h5::exists(f.id(), "adapter") && !h5::exists(f.id(), "model");
}
}  // namespace

int export_model(const Args& args) {
  const Command cmd{"export",
                    "Writes an opd model file as a Hugging Face checkpoint directory that transformers' "
                    "from_pretrained loads: config.json, generation_config.json, model.safetensors and, for imported "
                    "models, tokenizer.json and tokenizer_config.json. A LoRA run's final.h5 (or checkpoint) writes "
                    "its base model there and the adapters as a PEFT adapter directory DIR/adapter "
                    "(adapter_config.json, adapter_model.safetensors) that peft loads onto it.",
                    "opd export --model model.h5 --hf DIR [--dtype f32|bf16] [--base BASE.h5]"};
  po::options_description opts("Export");
  opts.add_options()("model", po::value<std::string>()->required()->notifier(non_empty("model")),
                     "model file, checkpoint, or a LoRA run's adapter file (HDF5)")(
      "hf", po::value<std::string>()->required()->notifier(non_empty("hf")), "directory to write")(
      "dtype", po::value<std::string>()->default_value("f32"), "tensor type in the safetensors files: f32 or bf16")(
      "base", po::value<std::string>(), "LoRA adapters: their base model file, where it is not where they name it");
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  const std::string dt = vm["dtype"].as<std::string>();
  OPD_REQUIRE(dt == "f32" || dt == "bf16", "option --dtype = '", dt, "' must be f32 or bf16");
  const StDtype dtype = dt == "bf16" ? StDtype::kBF16 : StDtype::kF32;
  const std::string path = vm["model"].as<std::string>(), dir = vm["hf"].as<std::string>();
  const auto t0 = std::chrono::steady_clock::now();
  const bool lora = holds_adapters(path);
  OPD_REQUIRE(lora || !vm.count("base"), "option --base applies to LoRA adapters only; ", path, " is a model");
  // A LoRA run's file: the base it names (checked by checksum), with the adapters on it.
  auto model = lora ? load_adapted(load_adapters(path), vm.count("base") ? vm["base"].as<std::string>() : "")
                    : load_model(path);
  const double t_read = seconds_since(t0);
  export_hf(*model, dir, dtype);  // a LoRA model's weights are its base
  if (lora) {
    std::error_code ec;
    const std::string base_name = std::filesystem::absolute(dir, ec).lexically_normal().string();
    export_peft_adapter(*model, dir + "/adapter", ec ? dir : base_name, dtype);
  }
  std::printf("exported %s -> %s in %.2f s (read %.2f s, write %.2f s)\n", path.c_str(), dir.c_str(),
              seconds_since(t0), t_read, seconds_since(t0) - t_read);
  if (lora)
    std::printf("  LoRA rank %d, alpha %g on %s: base model %s -> %s, PEFT adapter -> %s/adapter\n",
                model->lora().rank, model->lora().alpha, model->lora().targets_text().c_str(),
                model->lora_base().path.c_str(), dir.c_str(), dir.c_str());
  if (model->tokenizer().type() != "bpe")
    std::printf("  note: the %s tokenizer has no tokenizer.json form; only the weights and configs were written\n",
                model->tokenizer().type().c_str());
  describe(*model);
  return 0;
}

int merge_model(const Args& args) {
  const Command cmd{"merge",
                    "Merges a LoRA run's adapters into their base model: every adapted projection W becomes "
                    "W + (alpha / rank) B A, written as a plain model file. The base must be the one the adapters "
                    "were trained on (checked by the checksum of its tensors).",
                    "opd merge --model BASE.h5 --adapter RUN/final.h5 --out MERGED.h5"};
  po::options_description opts("Merge");
  opts.add_options()("model", po::value<std::string>()->required()->notifier(non_empty("model")),
                     "the base model file the adapters were trained on")(
      "adapter", po::value<std::string>()->required()->notifier(non_empty("adapter")),
      "a LoRA run's adapter file (final.h5) or checkpoint")(
      "out", po::value<std::string>()->required()->notifier(non_empty("out")), "merged model file to write (HDF5)");
  po::variables_map vm;
  if (!parse_options(cmd, args, opts, vm)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string adapter_path = vm["adapter"].as<std::string>();
  std::unique_ptr<Transformer> adapted;
  try {
    adapted = load_adapted(load_adapters(adapter_path), vm["model"].as<std::string>());
  } catch (const Error& e) {
    if (std::string(e.what()).find(adapter_path) != std::string::npos) throw;
    throw Error(str(adapter_path, ": ", e.what()));
  }
  const auto merged = adapted->merged();
  save_model(vm["out"].as<std::string>(), *merged);
  const LoraConfig& l = adapted->lora();
  std::printf("merged %s (LoRA rank %d, alpha %g on %s) into %s -> %s in %.2f s\n", adapter_path.c_str(), l.rank,
              l.alpha, l.targets_text().c_str(), vm["model"].as<std::string>().c_str(),
              vm["out"].as<std::string>().c_str(), seconds_since(t0));
  describe(*merged);
  return 0;
}

}  // namespace opd::cli
