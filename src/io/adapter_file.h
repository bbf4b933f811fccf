// LoRA adapter files (docs/ARCHITECTURE.md §6): what a LoRA run writes as final.h5, and the
// /adapter group its checkpoints hold instead of /model. The base weights are not in them: the file
// names its base model file with a checksum of that file's tensors, and whatever reads the
// adapters back (resume, opd merge, opd export, load_model) refuses another base.
//
//   /                      attrs format "opd-adapter", format_version, opd_version, created_utc
//   /adapter               attrs rank, alpha, targets ("q,k,v,o,gate,up,down"), base_model (path),
//                          base_checksum
//   /adapter/base_config   the base model's config, attributes as /model/config
//   /adapter/<name>        one f32 dataset per adapter tensor, full shape, attr crc32, named
//                          "model.layers.<l>.<module>.lora_A.weight" / "...lora_B.weight"
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/h5.h"
#include "model/lora.h"
#include "model/transformer.h"

namespace opd {

inline constexpr const char* kAdapterFormat = "opd-adapter";

// A LoRA model's adapters as read from a file: what they adapt, and this rank's shards of them.
struct Adapters {
  LoraConfig lora;
  ModelConfig base_config;
  Transformer::LoraBase base;
  std::vector<ParamSpec> specs;  // lora_specs(base_config, lora) at the reader's TP degree
  std::vector<float> params;
};

// The checksum that names a model file's weights: the crc32 attributes of its /model tensors, in
// the order of param_specs, run through CRC-32 as 4-byte little-endian words. Reads no tensor
// (load_model verifies each attribute against its data). An adapter file is refused: its weights
// are not in it.
uint32_t model_file_checksum(const std::string& path);

// What a LoRA run records of its base: the model file's absolute path and model_file_checksum.
Transformer::LoraBase lora_base_of(const std::string& model_path);

// The /adapter group's description (attributes and base_config; not the tensors), and all of the
// group for a whole model.
void write_adapter_description(hid_t adapter_group, const Transformer& model);
void write_adapter_group(h5::File& file, const Transformer& model);
// The /adapter group of `file`, every checksum verified; with tp (of size > 1) collective over it,
// each rank reading its shards, whatever tp wrote the file.
Adapters read_adapter_group(const h5::File& file, Communicator* tp = nullptr);

// A LoRA model's adapters alone (model.has_lora()), atomically; under TP collectively.
void save_adapters(const std::string& path, const Transformer& model);
Adapters load_adapters(const std::string& path, Communicator* tp = nullptr);
// Whether `path` is an adapter file (its root format attribute), without reading more.
bool is_adapter_file(const std::string& path);

// The adapters' base, loaded (sharded over tp) from `base_path` (empty: the path the adapters
// name) and checked against their checksum, with the adapters on it: the LoRA model they were
// trained as.
std::unique_ptr<Transformer> load_adapted(const Adapters& adapters, const std::string& base_path = "",
                                          Communicator* tp = nullptr);
// An adapter file as a plain model: its base with the adapters merged in (Transformer::merged).
std::unique_ptr<Transformer> load_merged(const std::string& adapter_path, const std::string& base_path = "",
                                         Communicator* tp = nullptr);

}  // namespace opd
