#include "io/adapter_file.h"

#include <filesystem>
#include <set>

#include "core/crc32.h"
#include "core/durable.h"
#include "core/error.h"
#include "io/h5_check.h"
#include "io/model_file.h"

namespace opd {

namespace {

std::string root_format(const h5::File& f) { return h5::read_attr_string(f.id(), "format", f.path()); }

}  // namespace

uint32_t model_file_checksum(const std::string& path) {
  try {
    h5::File f = h5::File::open_read(path);
    const std::string format = root_format(f);
    OPD_REQUIRE(format != kAdapterFormat, path, ": an adapter file holds no base weights; merge it into its base "
                "first (opd merge) and use the merged model");
    OPD_REQUIRE(format == "opd-model" || format == "opd-checkpoint", path, ": format '", format,
                "' is not an opd model or checkpoint");
    h5::Handle cg = h5::open_group(f, "model/config");
    const ModelConfig c = read_config_attrs(cg.id(), path + ":/model/config");
    h5::Handle g = h5::open_group(f, "model");
    uint32_t crc = 0;
    for (const ParamSpec& s : param_specs(c)) {
      OPD_REQUIRE(h5::exists(g.id(), s.name), path, ":/model: no tensor '", s.name, "'");
      h5::Handle d(H5_CHECK(H5Dopen2(g.id(), s.name.c_str(), H5P_DEFAULT)), H5Dclose);
      const int64_t v = h5::read_attr_int(d.id(), "crc32", path + ":/model/" + s.name);
      const unsigned char word[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                     static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
      crc = crc32(word, 4, crc);
    }
    return crc;
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

Transformer::LoraBase lora_base_of(const std::string& model_path) {
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(model_path, ec);
  return {ec ? model_path : abs.lexically_normal().string(), model_file_checksum(model_path)};
}

void write_adapter_description(hid_t g, const Transformer& model) {
  OPD_REQUIRE(model.has_lora(), "adapter file: the model has no LoRA adapters");
  const LoraConfig& l = model.lora();
  h5::write_attr(g, "rank", static_cast<int64_t>(l.rank));
  h5::write_attr(g, "alpha", l.alpha);
  h5::write_attr(g, "targets", l.targets_text());
  h5::write_attr(g, "base_model", model.lora_base().path);
  h5::write_attr(g, "base_checksum", static_cast<int64_t>(model.lora_base().checksum));
  h5::Handle cg = h5::create_group(g, "base_config");
  write_config_attrs(cg.id(), model.config());
}

void write_adapter_group(h5::File& file, const Transformer& model) {
  OPD_REQUIRE(!model.tp(), file.path(), ": a tensor-parallel model's adapters are saved collectively (save_sharded)");
  h5::Handle g = h5::create_group(file.id(), "adapter");
  write_adapter_description(g.id(), model);
  for (const ParamSpec& s : model.lora_specs())
    write_tensor(g.id(), s.name, model.lora_params().data() + s.offset, s.shape);
}

Adapters read_adapter_group(const h5::File& file, Communicator* tp) {
  const std::string where = file.path() + ":/adapter";
  h5::Handle g = h5::open_group(file, "adapter");
  Adapters a;
  const int64_t rank = h5::read_attr_int(g.id(), "rank", where);
  OPD_REQUIRE(rank >= 1 && rank < (int64_t(1) << 20), where, ": attribute 'rank' = ", rank, " is out of range");
  a.lora.rank = static_cast<int>(rank);
  a.lora.alpha = h5::read_attr_double(g.id(), "alpha", where);
  a.lora.targets = parse_lora_targets(h5::read_attr_string(g.id(), "targets", where), where + " attribute 'targets'");
  a.base.path = h5::read_attr_string(g.id(), "base_model", where);
  const int64_t checksum = h5::read_attr_int(g.id(), "base_checksum", where);
  OPD_REQUIRE(checksum >= 0 && checksum <= int64_t(0xffffffffu), where, ": attribute 'base_checksum' = ", checksum,
              " is not a CRC-32");
  a.base.checksum = static_cast<uint32_t>(checksum);
  {
    h5::Handle cg = h5::open_group(file, "adapter/base_config");
    a.base_config = read_config_attrs(cg.id(), where + "/base_config");
  }
  check_lora(a.lora, a.base_config, where);
  // Every tensor there with its shape, and nothing else, before memory is sized from the attributes.
  std::set<std::string> expected = {"base_config"};
  for (const ParamSpec& s : lora_specs(a.base_config, a.lora)) {
    expected.insert(s.name);
    OPD_REQUIRE(h5::dataset_shape(g.id(), s.name, where) == s.shape, where, ": dataset '", s.name,
                "' has the wrong shape for rank ", a.lora.rank, " adapters of this base");
  }
  for (const std::string& name : h5::children(g.id()))
    OPD_REQUIRE(expected.count(name), where, ": unexpected entry '", name, "' (not an adapter of these targets)");
  const bool split = tp && tp->size() > 1;
  const int P = split ? tp->size() : 1;
  a.specs = lora_specs(a.base_config, a.lora, P, split ? tp->rank() : 0);
  a.params.assign(total_size(a.specs), 0.0f);
  if (split) {
    read_tensor_blocks(g.id(), *tp, [&](int r) { return lora_specs(a.base_config, a.lora, P, r); }, a.params.data(),
                       where);
  } else {
    for (const ParamSpec& s : a.specs) read_tensor(g.id(), s.name, a.params.data() + s.offset, s.shape, where);
  }
  return a;
}

void save_adapters(const std::string& path, const Transformer& model) {
  OPD_REQUIRE(model.has_lora(), path, ": the model has no LoRA adapters to save");
  auto describe_root = [](h5::File& f) {
    h5::write_attr(f.id(), "format", std::string(kAdapterFormat));
    h5::write_attr(f.id(), "format_version", kModelFormatVersion);
    h5::write_attr(f.id(), "opd_version", std::string(OPD_VERSION));
    h5::write_attr(f.id(), "created_utc", h5::utc_now());
  };
  if (model.tp()) {
    const auto describe = [&](h5::File& f) {
      describe_root(f);
      h5::Handle g(H5_CHECK(H5Gopen2(f.id(), "adapter", H5P_DEFAULT)), H5Gclose);
      write_adapter_description(g.id(), model);
    };
    save_sharded(path, model, {{"adapter", &model.lora_params(), &model.lora_specs()}}, describe, -1);
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    h5::File f = h5::File::create(tmp);
    describe_root(f);
    write_adapter_group(f, model);
    f.flush();
    f.close();
  }
  publish_file(tmp, path);
}

bool is_adapter_file(const std::string& path) {
  try {
    const h5::File f = h5::File::open_read(path);
    return h5::has_attr(f.id(), "format") && root_format(f) == kAdapterFormat;
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

Adapters load_adapters(const std::string& path, Communicator* tp) {
  try {
    h5::File f = h5::File::open_read(path);
    const std::string format = root_format(f);
    OPD_REQUIRE(format == kAdapterFormat || format == "opd-checkpoint", path, ": format '", format,
                "' holds no LoRA adapters (an adapter file or a LoRA run's checkpoint does)");
    const int64_t version = h5::read_attr_int(f.id(), "format_version", path);
    OPD_REQUIRE(version == kModelFormatVersion, path, ": format_version ", version, " is not supported");
    OPD_REQUIRE(h5::exists(f.id(), "adapter"), path, ": a checkpoint of full fine-tuning holds no LoRA adapters");
    return read_adapter_group(f, tp);
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

std::unique_ptr<Transformer> load_adapted(const Adapters& a, const std::string& base_path, Communicator* tp) {
  const std::string base = base_path.empty() ? a.base.path : base_path;
  OPD_REQUIRE(std::filesystem::exists(base), "LoRA adapters: their base model ", base, " is not there",
              base_path.empty() ? " (moved? give the base with --model / --base)" : "");
  const uint32_t checksum = model_file_checksum(base);
  OPD_REQUIRE(checksum == a.base.checksum, "LoRA adapters: ", base, " is not their base model (tensor checksum ",
              checksum, "; the adapters were trained on ", a.base.path, ", checksum ", a.base.checksum, ")");
  auto model = load_model(base, tp);
  model->enable_lora(a.lora, 0, {base, checksum});
  OPD_REQUIRE(model->lora_params().size() == a.params.size(), "LoRA adapters: ", a.params.size(),
              " adapter values for a model that takes ", model->lora_params().size());
  model->lora_params() = a.params;
  return model;
}

std::unique_ptr<Transformer> load_merged(const std::string& adapter_path, const std::string& base_path,
                                         Communicator* tp) {
  const Adapters a = load_adapters(adapter_path, tp);
  try {
    return load_adapted(a, base_path, tp)->merged();
  } catch (const Error& e) {
    if (std::string(e.what()).find(adapter_path) != std::string::npos) throw;
    throw Error(str(adapter_path, ": ", e.what()));
  }
}

}  // namespace opd
