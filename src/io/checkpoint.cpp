#include "io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "core/durable.h"
#include "core/error.h"

namespace opd {

namespace fs = std::filesystem;

namespace {
// checkpoints/step_000150.h5 -> 150; -1 for other names.
int64_t step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind("step_", 0) != 0 || p.extension() != ".h5") return -1;
  try {
    return std::stoll(name.substr(5, name.size() - 8));
  } catch (...) {
    return -1;
  }
}

std::vector<fs::path> checkpoints_newest_first(const std::string& run_dir) {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir))
    if (step_of(e.path()) >= 0) files.push_back(e.path());
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) > step_of(b); });
  return files;
}
}  // namespace

void save_checkpoint(const std::string& path, const Transformer& model, const std::vector<float>& adam_m,
                     const std::vector<float>& adam_v, int adam_updates, const TrainState& state,
                     const std::string& config) {
  // What is trained and checkpointed: the model, or a LoRA model's adapters (its base is named).
  const bool lora = model.has_lora();
  const std::vector<ParamSpec>& specs = model.trainable_specs();
  OPD_REQUIRE(adam_m.size() == model.trainable_params().size() && adam_v.size() == model.trainable_params().size(),
              path, ": optimizer state does not match the model");
  // Everything but the tensors; the optimizer group exists already in a sharded save.
  auto describe = [&](h5::File& f) {
    h5::write_attr(f.id(), "format", std::string("opd-checkpoint"));
    h5::write_attr(f.id(), "format_version", kModelFormatVersion);
    h5::write_attr(f.id(), "opd_version", std::string(OPD_VERSION));
    h5::write_attr(f.id(), "step", state.step);
    h5::write_attr(f.id(), "tokens_seen", state.tokens);
    h5::write_attr(f.id(), "config", config);
    h5::write_attr(f.id(), "created_utc", h5::utc_now());
    {
      h5::Handle opt = h5::exists(f.id(), "optimizer") ? h5::open_group(f, "optimizer")
                                                       : h5::create_group(f.id(), "optimizer");
      h5::write_attr(opt.id(), "updates", static_cast<int64_t>(adam_updates));
    }
    h5::Handle st = h5::create_group(f.id(), "state");
    h5::write_attr(st.id(), "samples", state.samples);
    h5::write_attr(st.id(), "data_cursor", static_cast<int64_t>(state.data_cursor));
    h5::write_attr(st.id(), "counters", state.counters);
  };
  if (model.tp()) {
    const auto describe_sharded = [&](h5::File& f) {
      describe(f);
      if (!lora) return;
      h5::Handle g = h5::open_group(f, "adapter");
      write_adapter_description(g.id(), model);
    };
    save_sharded(path, model,
                 {{lora ? "adapter" : "model", &model.trainable_params(), &specs},
                  {"optimizer/m", &adam_m, &specs},
                  {"optimizer/v", &adam_v, &specs}},
                 describe_sharded, state.step);
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    h5::File f = h5::File::create(tmp);
    describe(f);
    if (lora)
      write_adapter_group(f, model);
    else
      write_model_group(f, model);
    crash_drill("OPD_FAULT_MID_SAVE", state.step);
    {
      h5::Handle opt = h5::open_group(f, "optimizer");
      h5::Handle m = h5::create_group(opt.id(), "m"), v = h5::create_group(opt.id(), "v");
      for (const ParamSpec& s : specs) {
        write_tensor(m.id(), s.name, adam_m.data() + s.offset, s.shape);
        write_tensor(v.id(), s.name, adam_v.data() + s.offset, s.shape);
      }
    }
    f.flush();
    f.close();
  }
  crash_drill("OPD_FAULT_BEFORE_RENAME", state.step);
  publish_file(tmp, path);
}

namespace {
Checkpoint read_checkpoint(const std::string& path, Communicator* tp) {
  h5::File f = h5::File::open_read(path);
  const std::string format = h5::read_attr_string(f.id(), "format", path);
  OPD_REQUIRE(format == "opd-checkpoint", path, ": format '", format, "' is not an opd checkpoint");
  const int64_t version = h5::read_attr_int(f.id(), "format_version", path);
  OPD_REQUIRE(version == kModelFormatVersion, path, ": format_version ", version, " is not supported");
  // Counters are never negative; the step and the optimizer's update count also fit an int.
  auto counter = [](hid_t obj, const char* key, const std::string& where, int64_t max) {
    const int64_t v = h5::read_attr_int(obj, key, where);
    OPD_REQUIRE(v >= 0 && v <= max, where, ": attribute '", key, "' = ", v, " is out of range [0, ", max, "]");
    return v;
  };
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max(), kMaxInt64 = std::numeric_limits<int64_t>::max();
  Checkpoint c;
  if (h5::exists(f.id(), "adapter"))
    c.adapters = read_adapter_group(f, tp);
  else
    c.model = read_model_group(f, tp);
  c.state.step = counter(f.id(), "step", path, kMaxInt - 1);
  c.state.tokens = counter(f.id(), "tokens_seen", path, kMaxInt64);
  c.config = h5::read_attr_string(f.id(), "config", path);
  h5::Handle opt = h5::open_group(f, "optimizer");
  c.adam_updates = static_cast<int>(counter(opt.id(), "updates", path + ":/optimizer", kMaxInt));
  h5::Handle m = h5::open_group(f, "optimizer/m"), v = h5::open_group(f, "optimizer/v");
  // The moments are laid out like what was trained: the model's parameters or the adapters.
  const std::vector<ParamSpec>& specs = c.adapters ? c.adapters->specs : c.model->specs();
  const size_t n = total_size(specs);
  c.adam_m.assign(n, 0.0f);
  c.adam_v.assign(n, 0.0f);
  const bool split = tp && tp->size() > 1;
  if (split && c.adapters) {
    const Adapters& a = *c.adapters;
    const auto specs_of = [&](int r) { return lora_specs(a.base_config, a.lora, tp->size(), r); };
    read_tensor_blocks(m.id(), *tp, specs_of, c.adam_m.data(), path + ":/optimizer/m");
    read_tensor_blocks(v.id(), *tp, specs_of, c.adam_v.data(), path + ":/optimizer/v");
  } else if (split) {
    read_tensor_blocks(m.id(), *c.model, c.adam_m.data(), path + ":/optimizer/m");
    read_tensor_blocks(v.id(), *c.model, c.adam_v.data(), path + ":/optimizer/v");
  } else {
    for (const ParamSpec& s : specs) {
      read_tensor(m.id(), s.name, c.adam_m.data() + s.offset, s.shape, path + ":/optimizer/m");
      read_tensor(v.id(), s.name, c.adam_v.data() + s.offset, s.shape, path + ":/optimizer/v");
    }
  }
  h5::Handle st = h5::open_group(f, "state");
  c.state.samples = counter(st.id(), "samples", path + ":/state", kMaxInt64);
  c.state.data_cursor = static_cast<uint64_t>(counter(st.id(), "data_cursor", path + ":/state", kMaxInt64));
  c.state.counters = h5::read_attr_string(st.id(), "counters", path + ":/state");
  return c;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path, Communicator* tp) {
  try {
    return read_checkpoint(path, tp);
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

std::optional<Checkpoint> newest_valid_checkpoint(const std::string& run_dir, std::vector<std::string>& skipped,
                                                  std::string* path, Communicator* tp) {
  for (const fs::path& p : checkpoints_newest_first(run_dir)) {
    try {
      Checkpoint c = load_checkpoint(p.string(), tp);
      if (path) *path = p.string();
      return c;
    } catch (const Error& e) {
      skipped.push_back(e.what());
    }
  }
  return std::nullopt;
}

void restore_trained(Checkpoint& ck, Transformer& student, const std::string& from) {
  if (!ck.adapters) {
    OPD_REQUIRE(!student.has_lora(), from, ": the checkpoint is of full fine-tuning, but this run trains LoRA "
                "adapters (--lora-rank ", student.lora().rank, "); resume without --lora-rank");
    // Files hold whole tensors; under TP each rank has read its shards, whatever tp wrote the file.
    OPD_REQUIRE(ck.model->params().size() == student.params().size() &&
                    ck.model->tokenizer().same_as(student.tokenizer()),
                from, ": the checkpoint's model does not match the student's shape or tokenizer");
    student.params() = ck.model->params();
    return;
  }
  const Adapters& a = *ck.adapters;
  OPD_REQUIRE(student.has_lora(), from, ": the checkpoint holds LoRA adapters; resume with --lora-rank ", a.lora.rank,
              " --lora-alpha ", a.lora.alpha, " --lora-targets ", a.lora.targets_text());
  OPD_REQUIRE(a.lora == student.lora(), from, ": the checkpoint's adapters (rank ", a.lora.rank, ", alpha ",
              a.lora.alpha, ", targets ", a.lora.targets_text(), ") differ from this run's (rank ", student.lora().rank,
              ", alpha ", student.lora().alpha, ", targets ", student.lora().targets_text(), ")");
  OPD_REQUIRE(a.base.checksum == student.lora_base().checksum, from, ": the adapters were trained on ", a.base.path,
              " (tensor checksum ", a.base.checksum, "), but this run's base ", student.lora_base().path,
              " has checksum ", student.lora_base().checksum);
  OPD_REQUIRE(a.params.size() == student.lora_params().size(), from, ": ", a.params.size(),
              " adapter values for a student that takes ", student.lora_params().size());
  student.lora_params() = a.params;
}

void prune_checkpoints(const std::string& run_dir, int keep) {
  const auto files = checkpoints_newest_first(run_dir);
  for (size_t i = static_cast<size_t>(std::max(keep, 0)); i < files.size(); ++i) fs::remove(files[i]);
}

}  // namespace opd
