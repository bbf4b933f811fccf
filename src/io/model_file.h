// Model files (docs/ARCHITECTURE.md §6, the /model group): config attributes, the tokenizer, and one
// float32 dataset per tensor under its Hugging Face name, each with a crc32 attribute checked on load.
// Checkpoints hold the same /model group, so the reader and writer of that group live here.
#pragma once
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "io/h5.h"
#include "parallel/tensor_shard.h"
#include "model/transformer.h"

namespace opd {

inline constexpr int64_t kModelFormatVersion = 1;

// Writes `path` atomically: into `path.tmp`, flushed and closed, then renamed over `path`. A
// tensor-parallel model is written collectively by its TP group (save_sharded).
void save_model(const std::string& path, const Transformer& model);
// With tp (of size > 1): collective over it, each rank reading only its blocks of the tensors, whatever
// tp wrote the file; checksums are verified by combining the ranks' piece checksums.
std::unique_ptr<Transformer> load_model(const std::string& path, Communicator* tp = nullptr);
// The shape alone (to plan a rank layout before loading anything large).
ModelConfig read_model_config(const std::string& path);
// Its tokenizer, without reading any tensor.
std::shared_ptr<const Tokenizer> read_model_tokenizer(const std::string& path);

// One float32 tensor with its crc32 attribute; reading checks shape and checksum, naming `where`.
void write_tensor(hid_t group, const std::string& name, const float* data, const std::vector<int64_t>& shape);
void read_tensor(hid_t group, const std::string& name, float* data, const std::vector<int64_t>& shape,
                 const std::string& where);

// The same dataset, crc32 included, written by the ranks of `comm` that each hold one shard, into a
// file from h5::File::create_parallel (collective: every rank calls it with the same name and
// shape). Split tensors: each rank writes its hyperslab in one collective transfer; the crc32 of
// the whole is combined from the ranks' piece checksums, never gathering the tensor. Replicated
// tensors: rank 0 writes. Shards that do not tile the split dimension in rank order are an error
// on every rank.
void write_tensor_shard(hid_t group, const std::string& name, const float* local, const TensorShard& shard,
                        MPI_Comm comm);

// The /model group alone, for files that hold more (checkpoints, fixtures); a whole model.
void write_model_group(h5::File& file, const Transformer& model);

// Under tensor parallelism: collective over the model's TP group. Each group (e.g. "model",
// "optimizer/m") gets one full-shape dataset per tensor of `data` (a flat buffer laid out like the
// model's shards), every rank writing its hyperslabs with parallel HDF5 (write_tensor_shard); then
// TP rank 0 adds the /model description and whatever `describe` writes, and renames the file into
// place (written to path.tmp first, like every save). `step`: a checkpoint's, for the
// crash drills of core/durable.h (-1: none).
struct ShardedGroup {
  std::string group;
  const std::vector<float>* data;
};
void save_sharded(const std::string& path, const Transformer& model, const std::vector<ShardedGroup>& groups,
                  const std::function<void(h5::File&)>& describe, int64_t step);
std::unique_ptr<Transformer> read_model_group(const h5::File& file, Communicator* tp = nullptr);
// This rank's blocks of the tensors of `group` into `out` (laid out like model.specs()), each
// checked against its crc32: collective over the model's TP group.
void read_tensor_blocks(hid_t group, const Transformer& model, float* out, const std::string& where);

}  // namespace opd
