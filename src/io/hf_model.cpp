#include "io/hf_model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/durable.h"
#include "core/error.h"
#include "model/bpe_tokenizer.h"

namespace opd {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  OPD_REQUIRE(in, p.string(), ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

json parse(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(str(where, ": not valid JSON (", e.what(), ")"));
  }
}

// obj[key] when it is a string, `dflt` when absent or null; another type is an error.
std::string text(const json& obj, const char* key, const std::string& dflt, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return dflt;
  OPD_REQUIRE(obj[key].is_string(), where, ": field '", key, "' is not a string");
  return obj[key].get<std::string>();
}

void write_text(const fs::path& p, const std::string& text) {
  const std::string tmp = p.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    OPD_REQUIRE(out, tmp, ": cannot create");
    out << text;
    out.flush();
    OPD_REQUIRE(out, tmp, ": write failed");
  }
  publish_file(tmp, p.string());
}

int get_int(const json& c, const char* key, const std::string& where) {
  OPD_REQUIRE(c.contains(key), where, ": missing field '", key, "'");
  OPD_REQUIRE(c[key].is_number_integer() && c[key].get<int64_t>() > 0 && c[key].get<int64_t>() < (int64_t(1) << 31),
              where, ": field '", key, "' must be a positive integer, got ", c[key].dump());
  return c[key].get<int>();
}

bool falsy(const json& c, const char* key) { return !c.contains(key) || c[key].is_null() || c[key] == false; }

// A token given as a string or as {"content": ...} (tokenizer_config.json's two forms).
std::string token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

std::vector<int> id_list(const json& v, const std::string& where, const char* key) {
  std::vector<int> out;
  if (v.is_null()) return out;
  if (v.is_number_integer()) return {v.get<int>()};
  OPD_REQUIRE(v.is_array(), where, ": '", key, "' must be an id or a list of ids");
  for (const json& x : v) {
    OPD_REQUIRE(x.is_number_integer(), where, ": '", key, "' must hold integers");
    out.push_back(x.get<int>());
  }
  return out;
}

// RoPE scaling from rope_parameters or rope_scaling (`key`): none for rope_type "default", Llama 3.1's
// for "llama3"; any other type (linear, dynamic, yarn, ...) is refused rather than silently ignored.
RopeScaling rope_scaling_from(const json& r, const char* key, const std::string& where) {
  OPD_REQUIRE(r.is_object(), where, ": '", key, "' must be an object, got ", r.dump());
  const std::string rt = text(r, "rope_type", text(r, "type", "default", where), where);
  RopeScaling s;
  if (rt == "default") return s;
  OPD_REQUIRE(rt == "llama3", where, ": ", key, ".rope_type '", rt,
              "' is not supported (opd takes plain RoPE and Llama 3.1's 'llama3' scaling)");
  auto number = [&](const char* field) {
    OPD_REQUIRE(r.contains(field) && r[field].is_number(), where, ": ", key, " (rope_type llama3) has no number '",
                field, "'");
    return r[field].get<double>();
  };
  s.factor = number("factor");
  s.low_freq_factor = number("low_freq_factor");
  s.high_freq_factor = number("high_freq_factor");
  OPD_REQUIRE(s.factor >= 1, where, ": ", key, ".factor must be at least 1, got ", s.factor);
  s.original_max_position_embeddings = get_int(r, "original_max_position_embeddings", where);
  return s;
}

}  // namespace

ModelConfig hf_config_from_json(const std::string& json_text, const std::string& where, std::string* family) {
  const json c = parse(json_text, where);
  OPD_REQUIRE(c.is_object(), where, ": not a JSON object");
  const std::string type = text(c, "model_type", "", where);
  OPD_REQUIRE(type == "qwen3" || type == "llama", where, ": model_type '", type,
              "' is not supported (opd imports qwen3 and llama)");
  if (family) *family = type;
  ModelConfig m;
  m.vocab = get_int(c, "vocab_size", where);
  m.d_model = get_int(c, "hidden_size", where);
  m.n_layers = get_int(c, "num_hidden_layers", where);
  m.n_heads = get_int(c, "num_attention_heads", where);
  m.n_kv_heads = c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null()
                     ? get_int(c, "num_key_value_heads", where)
                     : m.n_heads;
  OPD_REQUIRE(m.d_model % m.n_heads == 0 || (c.contains("head_dim") && !c["head_dim"].is_null()), where,
              ": no head_dim and hidden_size is not a multiple of num_attention_heads");
  m.head_dim = c.contains("head_dim") && !c["head_dim"].is_null() ? get_int(c, "head_dim", where) : m.d_model / m.n_heads;
  m.ffn_dim = get_int(c, "intermediate_size", where);
  m.max_seq = get_int(c, "max_position_embeddings", where);
  OPD_REQUIRE(c.contains("rms_norm_eps") && c["rms_norm_eps"].is_number(), where, ": missing number 'rms_norm_eps'");
  m.rms_eps = c["rms_norm_eps"].get<double>();

  // RoPE: plain, or Llama 3.1's "llama3" scaling. transformers 5 writes rope_parameters (rope_type,
  // rope_theta and the scaling fields together), earlier versions rope_theta and rope_scaling.
  const json rp = c.value("rope_parameters", json());
  if (rp.is_object()) {
    OPD_REQUIRE(rp.contains("rope_theta") && rp["rope_theta"].is_number(), where, ": rope_parameters has no rope_theta");
    m.rope_theta = rp["rope_theta"].get<double>();
    m.rope_scaling = rope_scaling_from(rp, "rope_parameters", where);
  } else {
    OPD_REQUIRE(c.contains("rope_theta") && c["rope_theta"].is_number(), where, ": missing number 'rope_theta'");
    m.rope_theta = c["rope_theta"].get<double>();
  }
  const json rs = c.value("rope_scaling", json());
  if (!rs.is_null()) {
    const RopeScaling legacy = rope_scaling_from(rs, "rope_scaling", where);
    OPD_REQUIRE(!rp.is_object() || legacy == m.rope_scaling, where,
                ": rope_scaling and rope_parameters describe different RoPE scalings");
    m.rope_scaling = legacy;
  }

  const std::string act = text(c, "hidden_act", "silu", where);
  OPD_REQUIRE(act == "silu", where, ": hidden_act '", act, "' is not supported (SwiGLU with silu only)");
  OPD_REQUIRE(falsy(c, "attention_bias"), where, ": attention_bias is not supported");
  OPD_REQUIRE(falsy(c, "mlp_bias"), where, ": mlp_bias is not supported");
  OPD_REQUIRE(falsy(c, "use_sliding_window"), where, ": use_sliding_window is not supported");
  OPD_REQUIRE(!c.contains("pretraining_tp") || c["pretraining_tp"] == 1, where, ": pretraining_tp must be 1");
  m.tie_embeddings = c.contains("tie_word_embeddings") && c["tie_word_embeddings"] == true;
  m.qk_norm = type == "qwen3";  // Qwen3 normalises q and k per head; Llama does not
  m.validate(where);
  return m;
}

std::unique_ptr<Transformer> import_hf(const std::string& dir) {
  const fs::path d(dir);
  OPD_REQUIRE(fs::is_directory(d), dir, ": not a directory");
  const fs::path cfg_path = d / "config.json";
  OPD_REQUIRE(fs::exists(cfg_path), dir, ": no config.json");
  std::string family;
  const std::string cfg_text = read_text(cfg_path);
  ModelConfig cfg = hf_config_from_json(cfg_text, cfg_path.string(), &family);
  const json cfg_json = json::parse(cfg_text);

  const fs::path tok_path = d / "tokenizer.json";
  OPD_REQUIRE(fs::exists(tok_path), dir, ": no tokenizer.json (opd imports a model with its tokenizer)");
  auto tok = std::make_shared<BpeTokenizer>(read_text(tok_path), tok_path.string());
  OPD_REQUIRE(tok->vocab_size() <= cfg.vocab, tok_path.string(), ": ", tok->vocab_size(),
              " tokens, more than config.json's vocab_size ", cfg.vocab);

  // EOS: tokenizer_config.json's eos_token first (what chat fine-tuning appends), then every id
  // generation_config.json stops on, then config.json's eos_token_id.
  std::vector<int> eos;
  int pad = -1;
  auto add_eos = [&](int id, const std::string& from) {
    OPD_REQUIRE(id >= 0 && id < tok->vocab_size(), from, ": EOS id ", id, " is not a token of tokenizer.json");
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  };
  const fs::path tc_path = d / "tokenizer_config.json";
  if (fs::exists(tc_path)) {
    const std::string text = read_text(tc_path);
    const json tc = parse(text, tc_path.string());
    OPD_REQUIRE(tc.is_object(), tc_path.string(), ": not a JSON object");
    tok->hf_files["tokenizer_config.json"] = text;
    for (const char* key : {"eos_token", "pad_token"}) {
      if (!tc.contains(key) || tc[key].is_null()) continue;
      const std::string t = token_text(tc[key]);
      const int id = tok->token_id(t);
      OPD_REQUIRE(!t.empty() && id >= 0, tc_path.string(), ": ", key, " ", tc[key].dump(),
                  " is not a token of tokenizer.json");
      if (std::string(key) == "eos_token")
        add_eos(id, tc_path.string());
      else
        pad = id;
    }
  }
  const fs::path gc_path = d / "generation_config.json";
  if (fs::exists(gc_path)) {
    const json gc = parse(read_text(gc_path), gc_path.string());
    OPD_REQUIRE(gc.is_object(), gc_path.string(), ": not a JSON object");
    for (int id : id_list(gc.value("eos_token_id", json()), gc_path.string(), "eos_token_id")) add_eos(id, gc_path.string());
    if (pad < 0)
      for (int id : id_list(gc.value("pad_token_id", json()), gc_path.string(), "pad_token_id"))
        if (id >= 0 && id < tok->vocab_size()) pad = id;
  }
  for (int id : id_list(cfg_json.value("eos_token_id", json()), cfg_path.string(), "eos_token_id")) add_eos(id, cfg_path.string());
  tok->set_special_tokens(eos, pad);

  auto model = std::make_unique<Transformer>(cfg, tok);
  SafetensorsCheckpoint ck(dir);
  std::set<std::string> used;
  for (const ParamSpec& s : model->specs()) {
    OPD_REQUIRE(ck.has(s.name), dir, ": the checkpoint has no tensor '", s.name, "' (needed by config.json's ", family,
                " model)");
    const StTensor& t = ck.tensor(s.name);
    OPD_REQUIRE(t.shape == s.shape, dir, ": tensor '", s.name, "' has shape ", json(t.shape).dump(), ", config.json implies ",
                json(s.shape).dump());
    ck.read(s.name, model->param(s));
    used.insert(s.name);
  }
  if (cfg.tie_embeddings && ck.has("lm_head.weight")) {
    // A tied checkpoint may still carry the head; it must then be the embedding itself.
    const ParamSpec& e = model->specs().front();
    const StTensor& t = ck.tensor("lm_head.weight");
    OPD_REQUIRE(t.shape == e.shape, dir, ": tensor 'lm_head.weight' has the wrong shape for a tied head");
    std::vector<float> head(e.size);
    ck.read("lm_head.weight", head.data());
    OPD_REQUIRE(std::equal(head.begin(), head.end(), model->param(e)), dir,
                ": tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight");
    used.insert("lm_head.weight");
  }
  for (const std::string& name : ck.names()) {
    // Older checkpoints store RoPE's inverse frequencies, which opd recomputes from rope_theta.
    if (name.size() > 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0) continue;
    OPD_REQUIRE(used.count(name), dir, ": tensor '", name, "' is not part of a ", family,
                " model with this config.json (unsupported weights would be dropped)");
  }
  return model;
}

void export_hf(const Transformer& model, const std::string& dir, StDtype dtype) {
  const fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  OPD_REQUIRE(!ec && fs::is_directory(d), dir, ": cannot create the directory (", ec.message(), ")");
  const ModelConfig& c = model.config();
  const Tokenizer& tok = model.tokenizer();
  const bool qwen = c.qk_norm;

  json rope_parameters = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  if (c.rope_scaling.enabled()) {
    const RopeScaling& r = c.rope_scaling;
    rope_parameters = {{"rope_type", "llama3"},
                       {"rope_theta", c.rope_theta},
                       {"factor", r.factor},
                       {"low_freq_factor", r.low_freq_factor},
                       {"high_freq_factor", r.high_freq_factor},
                       {"original_max_position_embeddings", r.original_max_position_embeddings}};
  }
  json cfg = {
      {"architectures", {qwen ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", qwen ? "qwen3" : "llama"},
      {"vocab_size", c.vocab},
      {"hidden_size", c.d_model},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"intermediate_size", c.ffn_dim},
      {"max_position_embeddings", c.max_seq},
      {"rms_norm_eps", c.rms_eps},
      {"rope_theta", c.rope_theta},
      {"rope_parameters", rope_parameters},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", c.tie_embeddings},
      {"dtype", dtype == StDtype::kBF16 ? "bfloat16" : "float32"},
      {"use_cache", true},
  };
  if (c.rope_scaling.enabled()) {  // transformers 4 reads the scaling from rope_scaling
    cfg["rope_scaling"] = rope_parameters;
    cfg["rope_scaling"].erase("rope_theta");
  }
  if (qwen) cfg["use_sliding_window"] = false;
  else cfg["mlp_bias"] = false;
  if (tok.eos_id() >= 0) cfg["eos_token_id"] = tok.eos_id();
  if (tok.pad_id() >= 0) cfg["pad_token_id"] = tok.pad_id();

  std::vector<StWriteTensor> tensors;
  for (const ParamSpec& s : model.specs()) tensors.push_back({s.name, s.shape, model.params().data() + s.offset});
  write_safetensors((d / "model.safetensors").string(), tensors, dtype, {{"format", "pt"}});

  json gen = json::object();
  if (!tok.eos_ids().empty())
    gen["eos_token_id"] = tok.eos_ids().size() == 1 ? json(tok.eos_ids()[0]) : json(tok.eos_ids());
  if (tok.pad_id() >= 0) gen["pad_token_id"] = tok.pad_id();
  write_text(d / "generation_config.json", gen.dump(2) + "\n");

  if (const auto* bpe = dynamic_cast<const BpeTokenizer*>(&tok)) {
    write_text(d / "tokenizer.json", bpe->json_text());
    auto it = bpe->hf_files.find("tokenizer_config.json");
    if (it != bpe->hf_files.end()) {
      write_text(d / "tokenizer_config.json", it->second);
    } else {
      json tc = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"model_max_length", c.max_seq}};
      if (tok.eos_id() >= 0) tc["eos_token"] = tok.piece(tok.eos_id());
      if (tok.pad_id() >= 0) tc["pad_token"] = tok.piece(tok.pad_id());
      write_text(d / "tokenizer_config.json", tc.dump(2) + "\n");
    }
  }
  // config.json last: a directory without it is visibly unfinished.
  write_text(d / "config.json", cfg.dump(2) + "\n");
}

void export_peft_adapter(const Transformer& model, const std::string& dir, const std::string& base_name,
                         StDtype dtype) {
  OPD_REQUIRE(model.has_lora(), dir, ": the model has no LoRA adapters to export");
  OPD_REQUIRE(!model.tp(), dir, ": export a whole model's adapters");
  const fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  OPD_REQUIRE(!ec && fs::is_directory(d), dir, ": cannot create the directory (", ec.message(), ")");
  const LoraConfig& l = model.lora();
  json modules = json::array();
  for (int t = 0; t < kLoraTargetCount; ++t)
    if (l.adapts(t)) {
      const std::string m = lora_module(t);
      modules.push_back(m.substr(m.find('.') + 1));  // "self_attn.q_proj" -> "q_proj"
    }
  std::vector<StWriteTensor> tensors;
  for (const ParamSpec& s : model.lora_specs())
    tensors.push_back({"base_model.model." + s.name, s.shape, model.lora_params().data() + s.offset});
  write_safetensors((d / "adapter_model.safetensors").string(), tensors, dtype, {{"format", "pt"}});
  // PEFT's LoraConfig; the fields not named take peft's defaults. The scale alpha / r is PEFT's
  // own (use_rslora false), so the adapted model is the same function in both.
  const json cfg = {{"peft_type", "LORA"},
                    {"task_type", "CAUSAL_LM"},
                    {"base_model_name_or_path", base_name},
                    {"r", l.rank},
                    {"lora_alpha", l.alpha},
                    {"target_modules", modules},
                    {"lora_dropout", 0.0},
                    {"bias", "none"},
                    {"fan_in_fan_out", false},
                    {"use_rslora", false},
                    {"use_dora", false},
                    {"init_lora_weights", true},
                    {"inference_mode", true},
                    {"modules_to_save", nullptr},
                    {"layers_to_transform", nullptr}};
  write_text(d / "adapter_config.json", cfg.dump(2) + "\n");
}

}  // namespace opd
