// Hugging Face checkpoint directories of the Qwen3 and Llama-3 families <-> opd models:
// config.json, model.safetensors (or shards with their index), tokenizer.json, and
// tokenizer_config.json / generation_config.json for the special and EOS tokens.
#pragma once
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "model/transformer.h"

namespace opd {

// The model shape a config.json describes; an architecture or option opd does not implement
// (biases, RoPE scaling, sliding windows, another activation) is an error naming the field.
// `family` is set to "qwen3" or "llama".
ModelConfig hf_config_from_json(const std::string& json_text, const std::string& where, std::string* family);

// Reads a checkpoint directory (weights converted to float32, every tensor checked against the
// config's shapes, none missing and none left over).
std::unique_ptr<Transformer> import_hf(const std::string& dir);

// Writes config.json, generation_config.json, model.safetensors (F32 or BF16) and, for a model
// with a BPE tokenizer, tokenizer.json and tokenizer_config.json into `dir` (created if needed),
// each file atomically. Qwen3 when the model has QK-norm, Llama otherwise.
void export_hf(const Transformer& model, const std::string& dir, StDtype dtype);

// A LoRA model's adapters as a PEFT adapter directory that peft's PeftModel.from_pretrained loads
// onto the base (the model's weights, exported by export_hf): adapter_config.json (peft_type LORA,
// r, lora_alpha, target_modules, base_model_name_or_path = `base_name`) and
// adapter_model.safetensors ("base_model.model.<opd name>", lora_A [r, in], lora_B [out, r]).
void export_peft_adapter(const Transformer& model, const std::string& dir, const std::string& base_name,
                         StDtype dtype);

}  // namespace opd
