// opd inspect: a model file's or checkpoint's metadata and tensors, every checksum verified.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "core/options.h"
#include "io/checkpoint.h"

namespace opd::cli {

int inspect(const Args& args) {
  const Command cmd{"inspect",
                    "Prints a model file's or checkpoint's metadata and its tensors with shapes and norms, and "
                    "verifies every checksum (a bad file is an error naming the dataset at fault).",
                    "opd inspect FILE.h5"};
  po::options_description opts("Inspect");
  opts.add_options()("file", po::value<std::string>()->required(), "model file or checkpoint (HDF5)");
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
  } else {
    ck.model = load_model(path);
  }
  const Transformer& m = *ck.model;
  const ModelConfig& c = m.config();
  std::printf("%s: %s, format_version %lld\n", path.c_str(), format.c_str(), static_cast<long long>(kModelFormatVersion));
  std::printf("model: vocab %d, d_model %d, %d layers, %d heads (%d kv) x %d, ffn %d, max_seq %d, rope_theta %g, "
              "rms_eps %g, qk_norm %d, tied %d; %lld parameters\n",
              c.vocab, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.max_seq, c.rope_theta,
              c.rms_eps, int(c.qk_norm), int(c.tie_embeddings), static_cast<long long>(c.num_parameters()));
  if (c.rope_scaling.enabled())
    std::printf("rope scaling: llama3, factor %g, low_freq_factor %g, high_freq_factor %g, "
                "original_max_position_embeddings %d\n",
                c.rope_scaling.factor, c.rope_scaling.low_freq_factor, c.rope_scaling.high_freq_factor,
                c.rope_scaling.original_max_position_embeddings);
  std::printf("tokenizer: %s, %d tokens, eos %d, pad %d\n", m.tokenizer().type().c_str(), m.tokenizer().vocab_size(),
              m.tokenizer().eos_id(), m.tokenizer().pad_id());
  if (format == "opd-checkpoint")
    std::printf("state: step %lld, samples %lld, tokens %lld, data cursor %llu, optimizer updates %d\n",
                static_cast<long long>(ck.state.step), static_cast<long long>(ck.state.samples),
                static_cast<long long>(ck.state.tokens), static_cast<unsigned long long>(ck.state.data_cursor),
                ck.adam_updates);
  std::printf("%-52s %-14s %12s\n", "tensor", "shape", "L2 norm");
  for (const ParamSpec& s : m.specs()) {
    double sq = 0;
    for (size_t i = 0; i < s.size; ++i) sq += double(m.params()[s.offset + i]) * m.params()[s.offset + i];
    std::string shape;
    for (size_t i = 0; i < s.shape.size(); ++i) shape += (i ? "x" : "") + std::to_string(s.shape[i]);
    std::printf("%-52s %-14s %12.5g\n", s.name.c_str(), shape.c_str(), std::sqrt(sq));
  }
  const size_t tensors = m.specs().size() * (format == "opd-checkpoint" ? 3 : 1);
  std::printf("verified: all %zu tensor checksums match\n", tensors);
  return 0;
}

}  // namespace opd::cli
