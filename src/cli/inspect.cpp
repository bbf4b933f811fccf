// opd inspect: a model file's, adapter file's or checkpoint's metadata and tensors, every checksum
// verified.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/options.h"
#include "io/adapter_file.h"
#include "io/checkpoint.h"

namespace opd::cli {

namespace {

void print_config(const char* what, const ModelConfig& c) {
  std::printf("%s: vocab %d, d_model %d, %d layers, %d heads (%d kv) x %d, ffn %d, max_seq %d, rope_theta %g, "
              "rms_eps %g, qk_norm %d, tied %d; %lld parameters\n",
              what, c.vocab, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.max_seq,
              c.rope_theta, c.rms_eps, int(c.qk_norm), int(c.tie_embeddings),
              static_cast<long long>(c.num_parameters()));
  if (c.rope_scaling.enabled())
    std::printf("rope scaling: llama3, factor %g, low_freq_factor %g, high_freq_factor %g, "
                "original_max_position_embeddings %d\n",
                c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
                c.rope_scaling.original_max_position_embeddings);
}

void print_tensors(const std::vector<ParamSpec>& specs, const std::vector<float>& values) {
  std::printf("%-52s %-14s %12s\n", "tensor", "shape", "L2 norm");
  for (const ParamSpec& s : specs) {
    double sq = 0;
    for (size_t i = 0; i < s.size; ++i) sq += double(values[s.offset + i]) * values[s.offset + i];
    std::string shape;
    for (size_t i = 0; i < s.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(s.shape[i]);
    std::printf("%-52s %-14s %12.5g\n", s.name.c_str(), shape.c_str(), std::sqrt(sq));
  }
}

// The adapters, and whether the base they name is there with the checksum they were trained on.
void print_adapters(const Adapters& a) {
  const LoraConfig& l = a.lora;
  std::printf("LoRA adapters: rank %d, alpha %g (scale %g), targets %s; %zu parameters (%.2f%% of the base)\n",
              l.rank, l.alpha, double(l.scale()), l.targets_text().c_str(), a.params.size(),
              100.0 * double(a.params.size()) / double(a.base_config.num_parameters()));
  std::string state;
  if (!std::filesystem::exists(a.base.path)) {
    state = "not found here";
  } else {
    try {
      const uint32_t now = model_file_checksum(a.base.path);
      state = now == a.base.checksum ? "present, checksum matches" : str("present, but its checksum is now ", now);
    } catch (const Error& e) {
      state = str("unreadable: ", e.what());
    }
  }
  std::printf("base model: %s, tensor checksum %u (%s)\n", a.base.path.c_str(), a.base.checksum, state.c_str());
  print_config("base config", a.base_config);
}

}  // namespace

int inspect(const Args& args) {
  const Command cmd{"inspect",
                    "Prints a model file's, LoRA adapter file's or checkpoint's metadata and its tensors with shapes "
                    "and norms, and verifies every checksum (a bad file is an error naming the dataset at fault).",
                    "opd inspect FILE.h5"};
  po::options_description opts("Inspect");
  opts.add_options()("file", po::value<std::string>()->required(), "model file, adapter file or checkpoint (HDF5)");
  po::variables_map vm;
  std::vector<std::string> a = args;
  if (!a.empty() && a[0].rfind("--", 0) != 0) a.insert(a.begin(), "--file");  // the file may be given bare
  if (!parse_options(cmd, a, opts, vm)) return 0;
  const std::string path = vm["file"].as<std::string>();

  std::string format;
  {
    h5::File f = h5::File::open_read(path);
    format = h5::read_attr_string(f.id(), "format", path);
  }
  Checkpoint ck;
  if (format == "opd-checkpoint") {
    ck = load_checkpoint(path);
  } else if (format == kAdapterFormat) {
    ck.adapters = load_adapters(path);
  } else {
    ck.model = load_model(path);
  }
  std::printf("%s: %s, format_version %lld\n", path.c_str(), format.c_str(), static_cast<long long>(kModelFormatVersion));
  if (ck.model) {
    const Transformer& m = *ck.model;
    print_config("model", m.config());
    std::printf("tokenizer: %s, %d tokens, eos %d, pad %d\n", m.tokenizer().type().c_str(), m.tokenizer().vocab_size(),
                m.tokenizer().eos_id(), m.tokenizer().pad_id());
  } else {
    print_adapters(*ck.adapters);
  }
  if (format == "opd-checkpoint")
    std::printf("state: step %lld, samples %lld, tokens %lld, data cursor %llu, optimizer updates %d\n",
                static_cast<long long>(ck.state.step), static_cast<long long>(ck.state.samples),
                static_cast<long long>(ck.state.tokens), static_cast<unsigned long long>(ck.state.data_cursor),
                ck.adam_updates);
  const std::vector<ParamSpec>& specs = ck.model ? ck.model->specs() : ck.adapters->specs;
  print_tensors(specs, ck.model ? ck.model->params() : ck.adapters->params);
  const size_t tensors = specs.size() * (format == "opd-checkpoint" ? 3 : 1);
  std::printf("verified: all %zu tensor checksums match\n", tensors);
  return 0;
}

}  // namespace opd::cli
