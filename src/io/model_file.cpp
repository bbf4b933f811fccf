#include "io/model_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/crc32.h"
#include "core/durable.h"
#include "core/error.h"
#include "io/h5_check.h"
#include "model/bpe_tokenizer.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_communicator.h"

namespace opd {

namespace {
const char* kConfigInts[] = {"vocab", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_seq"};

int* config_int(ModelConfig& c, const std::string& k) {
  if (k == "vocab") return &c.vocab;
  if (k == "d_model") return &c.d_model;
  if (k == "n_layers") return &c.n_layers;
  if (k == "n_heads") return &c.n_heads;
  if (k == "n_kv_heads") return &c.n_kv_heads;
  if (k == "head_dim") return &c.head_dim;
  if (k == "ffn_dim") return &c.ffn_dim;
  return &c.max_seq;
}
// The char tokenizer stores its pieces; the BPE one the tokenizer.json text it was imported from,
// its EOS ids and the other Hugging Face files kept for export.
void write_tokenizer(hid_t model_group, const Tokenizer& tok) {
  h5::Handle tg = h5::create_group(model_group, "tokenizer");
  h5::write_attr(tg.id(), "type", tok.type());
  h5::write_attr(tg.id(), "eos_id", static_cast<int64_t>(tok.eos_id()));
  h5::write_attr(tg.id(), "pad_id", static_cast<int64_t>(tok.pad_id()));
  if (const auto* ct = dynamic_cast<const CharTokenizer*>(&tok)) {
    h5::write_strings(tg.id(), "pieces", ct->pieces());
  } else if (const auto* bt = dynamic_cast<const BpeTokenizer*>(&tok)) {
    h5::write_strings(tg.id(), "tokenizer_json", {bt->json_text()});
    h5::write_i32(tg.id(), "eos_ids", std::vector<int32_t>(bt->eos_ids().begin(), bt->eos_ids().end()));
    std::vector<std::string> names, texts;
    for (const auto& [n, t] : bt->hf_files) {
      names.push_back(n);
      texts.push_back(t);
    }
    if (!names.empty()) {
      h5::write_strings(tg.id(), "hf_file_names", names);
      h5::write_strings(tg.id(), "hf_file_texts", texts);
    }
  } else {
    throw Error(str("model file: tokenizer type '", tok.type(), "' cannot be stored"));
  }
}

std::shared_ptr<const Tokenizer> read_tokenizer(const h5::File& file, const ModelConfig& c) {
  h5::Handle tg = h5::open_group(file, "model/tokenizer");
  const std::string twhere = file.path() + ":/model/tokenizer";
  const std::string type = h5::read_attr_string(tg.id(), "type", twhere);
  auto token_id = [&](const char* key) {
    const int64_t id = h5::read_attr_int(tg.id(), key, twhere);
    OPD_REQUIRE(id >= -1 && id < c.vocab, twhere, ": attribute '", key, "' = ", id, " is outside the vocabulary of ",
                c.vocab, " (-1: none)");
    return static_cast<int>(id);
  };
  const int eos = token_id("eos_id"), pad = token_id("pad_id");
  if (type == "char") {
    auto tok = std::make_shared<CharTokenizer>(h5::read_strings(tg.id(), "pieces", twhere), eos, pad);
    OPD_REQUIRE(tok->vocab_size() == c.vocab, twhere, ": ", tok->vocab_size(), " pieces but config vocab = ", c.vocab);
    return tok;
  }
  OPD_REQUIRE(type == "bpe", twhere, ": tokenizer type '", type, "' is not supported (expected 'char' or 'bpe')");
  const std::vector<std::string> text = h5::read_strings(tg.id(), "tokenizer_json", twhere);
  OPD_REQUIRE(text.size() == 1, twhere, ": dataset 'tokenizer_json' must hold one string, has ", text.size());
  auto tok = std::make_shared<BpeTokenizer>(text[0], twhere + "/tokenizer_json");
  const std::vector<int32_t> eos_ids = h5::read_i32(tg.id(), "eos_ids", twhere);
  OPD_REQUIRE(eos_ids.empty() ? eos == -1 : eos_ids.front() == eos, twhere,
              ": attribute eos_id disagrees with the first of dataset eos_ids");
  tok->set_special_tokens(std::vector<int>(eos_ids.begin(), eos_ids.end()), pad);
  if (h5::exists(tg.id(), "hf_file_names")) {
    const auto names = h5::read_strings(tg.id(), "hf_file_names", twhere);
    const auto texts = h5::read_strings(tg.id(), "hf_file_texts", twhere);
    OPD_REQUIRE(names.size() == texts.size(), twhere, ": hf_file_names and hf_file_texts differ in length");
    for (size_t i = 0; i < names.size(); ++i) tok->hf_files[names[i]] = texts[i];
  }
  OPD_REQUIRE(tok->vocab_size() <= c.vocab, twhere, ": ", tok->vocab_size(), " tokens but config vocab = ", c.vocab);
  return tok;
}

}  // namespace

namespace {
size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}

void write_crc(hid_t group, const std::string& name, uint32_t crc) {
  h5::Handle d(H5_CHECK(H5Dopen2(group, name.c_str(), H5P_DEFAULT)), H5Dclose);
  h5::write_attr(d.id(), "crc32", static_cast<int64_t>(crc));
}

void require_shape(hid_t group, const std::string& name, const std::vector<int64_t>& shape, const std::string& where) {
  OPD_REQUIRE(h5::dataset_shape(group, name, where) == shape, where, ": dataset '", name,
              "' has the wrong shape for this model config");
}

// "file.h5:/model/name", for errors of collective writes (which have no `where` of their own).
std::string object_path(hid_t group, const std::string& name) {
  std::string file(static_cast<size_t>(std::max<ssize_t>(H5Fget_name(group, nullptr, 0), 0)), '\0');
  if (!file.empty()) H5Fget_name(group, file.data(), file.size() + 1);
  std::string path(static_cast<size_t>(std::max<ssize_t>(H5Iget_name(group, nullptr, 0), 0)), '\0');
  if (!path.empty()) H5Iget_name(group, path.data(), path.size() + 1);
  return file + ":" + path + (path == "/" ? "" : "/") + name;
}

// Every rank's shard and file driver, gathered so that every rank checks the same table and
// throws the same error: one rank failing alone would leave the others in a collective call.
std::vector<TensorShard> gather_shards(hid_t group, const TensorShard& mine, bool has_data, MPI_Comm comm,
                                       const std::string& where) {
  int size = 0;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  const int64_t head[5] = {static_cast<int64_t>(mine.full_shape.size()), mine.split_dim, mine.offset, mine.extent,
                           has_data ? 1 : 0};
  std::vector<int64_t> heads(5 * size);
  MPI_CHECK(MPI_Allgather(head, 5, MPI_INT64_T, heads.data(), 5, MPI_INT64_T, comm));
  int parallel = h5::is_parallel(group) ? 1 : 0, all_parallel = 0, any_parallel = 0;
  MPI_CHECK(MPI_Allreduce(&parallel, &all_parallel, 1, MPI_INT, MPI_MIN, comm));
  MPI_CHECK(MPI_Allreduce(&parallel, &any_parallel, 1, MPI_INT, MPI_MAX, comm));
  OPD_REQUIRE(all_parallel == any_parallel && (all_parallel || size == 1), where, ": the file is not open through "
              "MPI-IO on every rank of the ", size, " (create it with h5::File::create_parallel)");
  for (int r = 1; r < size; ++r)
    OPD_REQUIRE(heads[5 * r] == heads[0], where, ": rank ", r, " writes a tensor of ", heads[5 * r],
                " dimensions, rank 0 one of ", heads[0]);
  const int ndim = static_cast<int>(heads[0]);
  std::vector<int64_t> dims(static_cast<size_t>(ndim) * size);
  MPI_CHECK(MPI_Allgather(mine.full_shape.data(), ndim, MPI_INT64_T, dims.data(), ndim, MPI_INT64_T, comm));
  std::vector<TensorShard> all(size);
  for (int r = 0; r < size; ++r) {
    all[r].full_shape.assign(dims.begin() + r * ndim, dims.begin() + (r + 1) * ndim);
    all[r].split_dim = static_cast<int>(heads[5 * r + 1]);
    all[r].offset = heads[5 * r + 2];
    all[r].extent = heads[5 * r + 3];
    OPD_REQUIRE(all[r].full_shape == all[0].full_shape && all[r].split_dim == all[0].split_dim, where, ": rank ", r,
                "'s shard has a full shape or split dimension other than rank 0's");
    all[r].validate(str(where, " (rank ", r, ")"));
    const bool writes = all[r].replicated() ? r == 0 : all[r].local_size() > 0;
    OPD_REQUIRE(heads[5 * r + 4] || !writes, where, ": rank ", r, " passed no data for its shard");
  }
  if (all[0].replicated()) return all;
  int64_t next = 0;
  for (int r = 0; r < size; ++r) {
    OPD_REQUIRE(all[r].offset == next, where, ": rank ", r, "'s shard starts at ", all[r].offset, " of dimension ",
                all[0].split_dim, ", expected ", next, " (shards tile the split dimension in rank order)");
    next += all[r].extent;
  }
  OPD_REQUIRE(next == all[0].full_shape[all[0].split_dim], where, ": the shards cover ", next, " of the ",
              all[0].full_shape[all[0].split_dim], " along dimension ", all[0].split_dim);
  return all;
}

// The full tensor is, run by run, the concatenation of every rank's run o: its crc32 folds the
// ranks' run checksums in that order, each combiner built once for its rank's run length.
uint32_t combined_crc(const float* local, const std::vector<TensorShard>& shards, int rank, MPI_Comm comm) {
  const TensorShard& mine = shards[rank];
  const int64_t runs = mine.outer(), run = mine.run();
  std::vector<uint32_t> piece(runs);
  for (int64_t o = 0; o < runs; ++o) piece[o] = crc32(local + o * run, static_cast<size_t>(run) * sizeof(float));
  const int size = static_cast<int>(shards.size());
  std::vector<uint32_t> all(static_cast<size_t>(runs) * size);
  MPI_CHECK(MPI_Allgather(piece.data(), static_cast<int>(runs), MPI_UINT32_T, all.data(), static_cast<int>(runs),
                          MPI_UINT32_T, comm));
  std::vector<Crc32Combiner> append;
  for (const TensorShard& s : shards) append.emplace_back(static_cast<uint64_t>(s.run()) * sizeof(float));
  uint32_t crc = 0;  // of nothing yet
  for (int64_t o = 0; o < runs; ++o)
    for (int r = 0; r < size; ++r) crc = append[r](crc, all[static_cast<size_t>(r) * runs + o]);
  return crc;
}
}  // namespace

void write_tensor(hid_t group, const std::string& name, const float* data, const std::vector<int64_t>& shape) {
  h5::write_f32(group, name, data, shape);
  write_crc(group, name, crc32(data, element_count(shape) * sizeof(float)));
}

void read_tensor(hid_t group, const std::string& name, float* data, const std::vector<int64_t>& shape,
                 const std::string& where) {
  const size_t n = element_count(shape);
  require_shape(group, name, shape, where);
  h5::read_f32(group, name, data, n, where);
  h5::Handle d(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose);
  const std::string dwhere = where + "/" + name;
  const int64_t stored = h5::read_attr_int(d.id(), "crc32", dwhere);
  const uint32_t actual = crc32(data, n * sizeof(float));
  OPD_REQUIRE(stored == static_cast<int64_t>(actual), dwhere, ": checksum mismatch (stored crc32 ", stored,
              ", data gives ", actual, "): the file is corrupt");
  // A checksum only says the file holds what was written: a run that diverged may have written
  // NaN or Inf, and training on from it would spread them to every weight.
  for (size_t i = 0; i < n; ++i)
    OPD_REQUIRE(std::isfinite(data[i]), dwhere, ": element ", i, " is ", data[i],
                ": the tensor holds a non-finite value");
}

void write_tensor_shard(hid_t group, const std::string& name, const float* local, const TensorShard& shard,
                        MPI_Comm comm) {
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const std::string where = object_path(group, name);
  const std::vector<TensorShard> shards = gather_shards(group, shard, local != nullptr, comm, where);
  const size_t ndim = shard.full_shape.size();
  std::vector<int64_t> start(ndim, 0), count = shard.full_shape;
  uint32_t crc = 0;
  if (shard.replicated()) {
    // Every rank holds the same values: rank 0's are the ones written and checksummed.
    if (rank == 0) crc = crc32(local, static_cast<size_t>(shard.full_size()) * sizeof(float));
    MPI_CHECK(MPI_Bcast(&crc, 1, MPI_UINT32_T, 0, comm));
    if (rank != 0) count.assign(ndim, 0);
  } else {
    crc = combined_crc(local, shards, rank, comm);
    start[shard.split_dim] = shard.offset;
    count[shard.split_dim] = shard.extent;
  }
  h5::write_f32_collective(group, name, shard.full_shape, local, start, count);
  // Attribute writes are collective in parallel HDF5: every rank writes the same value.
  write_crc(group, name, crc);
}

namespace {
// /model/config and /model/tokenizer: everything of the /model group but the tensors.
void write_model_description(hid_t g, const Transformer& model) {
  const ModelConfig& c = model.config();
  h5::Handle cg = h5::create_group(g, "config");
  ModelConfig copy = c;
  for (const char* k : kConfigInts) h5::write_attr(cg.id(), k, static_cast<int64_t>(*config_int(copy, k)));
  h5::write_attr(cg.id(), "rope_theta", c.rope_theta);
  if (c.rope_scaling.enabled()) {  // plain RoPE writes none of these, as files did before them
    h5::write_attr(cg.id(), "rope_type", std::string("llama3"));
    h5::write_attr(cg.id(), "rope_factor", c.rope_scaling.factor);
    h5::write_attr(cg.id(), "rope_low_freq_factor", c.rope_scaling.low_freq_factor);
    h5::write_attr(cg.id(), "rope_high_freq_factor", c.rope_scaling.high_freq_factor);
    h5::write_attr(cg.id(), "rope_original_max_position_embeddings",
                   static_cast<int64_t>(c.rope_scaling.original_max_position_embeddings));
  }
  h5::write_attr(cg.id(), "rms_eps", c.rms_eps);
  h5::write_attr(cg.id(), "qk_norm", static_cast<int64_t>(c.qk_norm));
  h5::write_attr(cg.id(), "tie_embeddings", static_cast<int64_t>(c.tie_embeddings));

  write_tokenizer(g, model.tokenizer());
}
}  // namespace

void write_model_group(h5::File& file, const Transformer& model) {
  OPD_REQUIRE(!model.tp(), file.path(), ": a tensor-parallel model is saved collectively (save_sharded)");
  h5::Handle g = h5::create_group(file.id(), "model");
  write_model_description(g.id(), model);
  for (const ParamSpec& s : model.specs()) write_tensor(g.id(), s.name, model.params().data() + s.offset, s.shape);
}

namespace {
// The MPI communicator behind a tensor-parallel model's TP group (HDF5 and the checksum combine speak MPI).
MPI_Comm tp_handle(const Transformer& model, const std::string& where) {
  return mpi_handle(*model.tp(), where);
}
}  // namespace

void read_tensor_blocks(hid_t group, const Transformer& model, float* out, const std::string& where) {
  Communicator& tp = *model.tp();
  const MPI_Comm comm = tp_handle(model, where);
  std::vector<std::vector<ParamSpec>> all;  // every rank's shards, to combine the checksums in order
  for (int r = 0; r < tp.size(); ++r) all.push_back(param_specs(model.config(), tp.size(), r));
  for (size_t i = 0; i < model.specs().size(); ++i) {
    const ParamSpec& s = model.specs()[i];
    require_shape(group, s.name, s.shard.full_shape, where);
    std::vector<int64_t> start(s.shape.size(), 0);
    if (!s.shard.replicated()) start[s.shard.split_dim] = s.shard.offset;
    h5::read_f32_block(group, s.name, out + s.offset, start, s.shape, where);
    const std::string dwhere = where + "/" + s.name;
    h5::Handle d(H5_CHECK(H5Dopen2(group, s.name.c_str(), H5P_DEFAULT)), H5Dclose);
    const int64_t stored = h5::read_attr_int(d.id(), "crc32", dwhere);
    uint32_t actual = 0;
    if (s.shard.replicated()) {
      actual = crc32(out + s.offset, s.size * sizeof(float));
    } else {
      std::vector<TensorShard> shards;
      for (const auto& specs : all) shards.push_back(specs[i].shard);
      actual = combined_crc(out + s.offset, shards, tp.rank(), comm);  // the same verdict on every rank
    }
    OPD_REQUIRE(stored == static_cast<int64_t>(actual), dwhere, ": checksum mismatch (stored crc32 ", stored,
                ", data gives ", actual, "): the file is corrupt");
  }
}

void save_sharded(const std::string& path, const Transformer& model, const std::vector<ShardedGroup>& groups,
                  const std::function<void(h5::File&)>& describe, int64_t step) {
  Communicator* tp = model.tp();
  OPD_REQUIRE(tp, path, ": save_sharded needs a tensor-parallel model");
  const MPI_Comm comm = tp_handle(model, path);
  const std::string tmp = path + ".tmp";
  {
    // Parallel HDF5 cannot write variable-length strings (the tokenizer, the config text), so the
    // collective pass writes the tensors and TP rank 0 then adds the rest with the serial library.
    h5::File f = h5::File::create_parallel(tmp, comm);
    for (const ShardedGroup& sg : groups) {
      if (&sg != &groups.front() && tp->rank() == 1) crash_drill("OPD_FAULT_MID_SAVE", step);  // mid-collective
      std::vector<h5::Handle> path_groups;
      hid_t at = f.id();
      std::stringstream names(sg.group);
      for (std::string name; std::getline(names, name, '/');) {
        path_groups.push_back(h5::exists(at, name) ? h5::Handle(H5_CHECK(H5Gopen2(at, name.c_str(), H5P_DEFAULT)),
                                                                H5Gclose)
                                                   : h5::create_group(at, name));
        at = path_groups.back().id();
      }
      OPD_REQUIRE(sg.data->size() == model.params().size(), path, ": ", sg.group, " holds ", sg.data->size(),
                  " floats for a shard of ", model.params().size());
      for (const ParamSpec& s : model.specs()) write_tensor_shard(at, s.name, sg.data->data() + s.offset, s.shard, comm);
    }
    f.close();
  }
  if (tp->rank() == 0) {
    h5::File f = h5::File::open_rw(tmp);
    {
      h5::Handle g = h5::open_group(f, "model");
      write_model_description(g.id(), model);
    }
    describe(f);
    f.flush();
    f.close();
  }
  tp->barrier();  // every rank's hyperslabs and rank 0's description are in the file
  if (tp->rank() == 0) {
    crash_drill("OPD_FAULT_BEFORE_RENAME", step);
    publish_file(tmp, path);
  }
  tp->barrier();  // the file is in place for every rank when the call returns
}

namespace {
ModelConfig read_config(const h5::File& file) {
  h5::Handle cg = h5::open_group(file, "model/config");
  const std::string cwhere = file.path() + ":/model/config";
  ModelConfig c;
  for (const char* k : kConfigInts) {
    int64_t v = h5::read_attr_int(cg.id(), k, cwhere);
    OPD_REQUIRE(v > 0 && v < (int64_t(1) << 31), cwhere, ": attribute '", k, "' = ", v, " is out of range");
    *config_int(c, k) = static_cast<int>(v);
  }
  c.rope_theta = h5::read_attr_double(cg.id(), "rope_theta", cwhere);
  if (h5::has_attr(cg.id(), "rope_type")) {
    const std::string rt = h5::read_attr_string(cg.id(), "rope_type", cwhere);
    OPD_REQUIRE(rt == "llama3", cwhere, ": attribute 'rope_type' = '", rt, "' is not supported (llama3 only)");
    c.rope_scaling.factor = h5::read_attr_double(cg.id(), "rope_factor", cwhere);
    c.rope_scaling.low_freq_factor = h5::read_attr_double(cg.id(), "rope_low_freq_factor", cwhere);
    c.rope_scaling.high_freq_factor = h5::read_attr_double(cg.id(), "rope_high_freq_factor", cwhere);
    const int64_t omp = h5::read_attr_int(cg.id(), "rope_original_max_position_embeddings", cwhere);
    OPD_REQUIRE(omp > 0 && omp < (int64_t(1) << 31), cwhere, ": attribute 'rope_original_max_position_embeddings' = ",
                omp, " is out of range");
    c.rope_scaling.original_max_position_embeddings = static_cast<int>(omp);
    // factor 0 would read back as plain RoPE: the file says llama3, so it must say how.
    OPD_REQUIRE(c.rope_scaling.enabled(), cwhere, ": attribute 'rope_factor' is 0 with rope_type 'llama3'");
  } else {
    for (const char* k : {"rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                          "rope_original_max_position_embeddings"})
      OPD_REQUIRE(!h5::has_attr(cg.id(), k), cwhere, ": attribute '", k, "' without a 'rope_type'");
  }
  c.rms_eps = h5::read_attr_double(cg.id(), "rms_eps", cwhere);
  c.qk_norm = h5::read_attr_int(cg.id(), "qk_norm", cwhere) != 0;
  c.tie_embeddings = h5::read_attr_int(cg.id(), "tie_embeddings", cwhere) != 0;
  c.validate(cwhere);
  return c;
}
}  // namespace

std::unique_ptr<Transformer> read_model_group(const h5::File& file, Communicator* tp) {
  const std::string where = file.path() + ":/model";
  h5::Handle g = h5::open_group(file, "model");
  const ModelConfig c = read_config(file);
  std::shared_ptr<const Tokenizer> tok = read_tokenizer(file, c);

  // Every tensor is there with its shape before the model's memory is allocated, and the file is
  // large enough to hold them: a wrong config or a lying dataset extent cannot ask for terabytes.
  std::set<std::string> expected = {"config", "tokenizer"};
  const std::vector<ParamSpec> specs = param_specs(c);
  for (const ParamSpec& s : specs) {
    expected.insert(s.name);
    OPD_REQUIRE(h5::dataset_shape(g.id(), s.name, where) == s.shape, where, ": dataset '", s.name,
                "' has the wrong shape for this model config");
  }
  for (const std::string& name : h5::children(g.id()))
    OPD_REQUIRE(expected.count(name), where, ": unexpected entry '", name, "' (not a tensor of this model config)");
  std::error_code ec;
  const uintmax_t file_bytes = std::filesystem::file_size(file.path(), ec);
  const uintmax_t tensor_bytes = total_size(specs) * sizeof(float);
  OPD_REQUIRE(!ec && file_bytes >= tensor_bytes, file.path(), ": the file has ", file_bytes, " bytes, fewer than the ",
              tensor_bytes, " its tensors need: it is truncated");

  auto model = std::make_unique<Transformer>(c, std::move(tok), tp && tp->size() > 1 ? tp : nullptr);
  if (model->tp())
    read_tensor_blocks(g.id(), *model, model->params().data(), where);
  else
    for (const ParamSpec& s : model->specs()) read_tensor(g.id(), s.name, model->param(s), s.shape, where);
  return model;
}

void save_model(const std::string& path, const Transformer& model) {
  auto describe = [](h5::File& f) {
    h5::write_attr(f.id(), "format", std::string("opd-model"));
    h5::write_attr(f.id(), "format_version", kModelFormatVersion);
    h5::write_attr(f.id(), "opd_version", std::string(OPD_VERSION));
  };
  if (model.tp()) return save_sharded(path, model, {{"model", &model.params()}}, describe, -1);
  const std::string tmp = path + ".tmp";
  {
    h5::File f = h5::File::create(tmp);
    describe(f);
    write_model_group(f, model);
    f.flush();
    f.close();
  }
  publish_file(tmp, path);
}

ModelConfig read_model_config(const std::string& path) {
  try {
    return read_config(h5::File::open_read(path));
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

std::shared_ptr<const Tokenizer> read_model_tokenizer(const std::string& path) {
  try {
    const h5::File f = h5::File::open_read(path);
    return read_tokenizer(f, read_config(f));
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

std::unique_ptr<Transformer> load_model(const std::string& path, Communicator* tp) {
  try {
    h5::File f = h5::File::open_read(path);
    const std::string format = h5::read_attr_string(f.id(), "format", path);
    OPD_REQUIRE(format == "opd-model" || format == "opd-checkpoint", path, ": format '", format,
                "' is not an opd model or checkpoint");
    const int64_t version = h5::read_attr_int(f.id(), "format_version", path);
    OPD_REQUIRE(version == kModelFormatVersion, path, ": format_version ", version,
                " is not supported (this opd reads ", kModelFormatVersion, ")");
    return read_model_group(f, tp);
  } catch (const Error& e) {
    h5::rethrow_naming(path, e);
  }
}

}  // namespace opd
