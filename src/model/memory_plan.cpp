#include "model/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "model/params.h"

namespace opd {

const char* memory_kind_name(MemoryKind kind) {
  static const char* kNames[kMemoryKinds] = {"weights (bf16)", "master weights (fp32)", "gradients (fp32)",
                                             "optimizer state",  "activations",           "logits",
                                             "KV cache",         "workspace"};
  return kNames[static_cast<int>(kind)];
}

void MemoryPlan::add(const std::string& name, MemoryKind kind, size_t bytes, bool in_arena) {
  OPD_REQUIRE(!has(name), "memory plan: block '", name, "' planned twice");
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  index_[name] = blocks_.size();
  blocks_.push_back({name, kind, in_arena ? arena_ : 0, rounded, in_arena});
  total_ += rounded;
  if (in_arena) arena_ += rounded;
}

bool MemoryPlan::has(const std::string& name) const { return index_.count(name) > 0; }

const MemoryBlock& MemoryPlan::at(const std::string& name) const {
  const auto it = index_.find(name);
  OPD_REQUIRE(it != index_.end(), "memory plan: no block named '", name, "'");
  return blocks_[it->second];
}

size_t MemoryPlan::bytes(MemoryKind kind) const {
  size_t n = 0;
  for (const MemoryBlock& b : blocks_)
    if (b.kind == kind) n += b.bytes;
  return n;
}

std::string format_bytes(size_t bytes) {
  char buf[32];
  if (bytes >= (size_t(1) << 30))
    std::snprintf(buf, sizeof(buf), "%.2f GiB", double(bytes) / double(size_t(1) << 30));
  else
    std::snprintf(buf, sizeof(buf), "%.1f MiB", double(bytes) / double(size_t(1) << 20));
  return buf;
}

namespace {

// What lowers each kind, for the refusal.
const char* lever(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kActivations:
      return "--micro-batch (fewer sequences per forward), --recompute (keep only each layer's input), or a "
             "shorter --max-new-tokens";
    case MemoryKind::kLogits:
      return "--micro-batch (fewer sequences per forward)";
    case MemoryKind::kKVCache:
      return "--gen-batch (fewer sequences sampled at once) or a shorter --max-new-tokens";
    case MemoryKind::kWeights:
    case MemoryKind::kMaster:
    case MemoryKind::kGrads:
    case MemoryKind::kOptimizer:
      return "--tp (the student, and a colocated teacher with it) or --teacher-tp (dedicated teacher ranks): "
             "tensor parallelism splits them over that many GPUs";
    case MemoryKind::kWorkspace:
      return "--micro-batch (the attention backward's scratch grows with it)";
  }
  return "";
}

}  // namespace

std::string MemoryPlan::report(const std::string& title) const {
  std::string out = title + "\n";
  char line[160];
  for (int k = 0; k < kMemoryKinds; ++k) {
    const size_t b = bytes(static_cast<MemoryKind>(k));
    if (b == 0) continue;
    std::snprintf(line, sizeof(line), "  %-22s %12s  %5.1f%%\n", memory_kind_name(static_cast<MemoryKind>(k)),
                  format_bytes(b).c_str(), 100.0 * double(b) / double(total_));
    out += line;
  }
  std::snprintf(line, sizeof(line), "  %-22s %12s\n", "total", format_bytes(total_).c_str());
  return out + line;
}

void MemoryPlan::check_fits(size_t available, const std::string& who) const {
  if (total_ <= available) return;
  std::vector<std::pair<size_t, MemoryKind>> kinds;
  for (int k = 0; k < kMemoryKinds; ++k) kinds.push_back({bytes(static_cast<MemoryKind>(k)), static_cast<MemoryKind>(k)});
  std::sort(kinds.rbegin(), kinds.rend());
  std::string advice;
  for (int i = 0; i < 2 && kinds[i].first > 0; ++i)
    advice += str("; ", memory_kind_name(kinds[i].second), " take ", format_bytes(kinds[i].first), ": lower with ",
                  lever(kinds[i].second));
  throw Error(str(who, ": the planned device memory is ", format_bytes(total_), " but only ", format_bytes(available),
                  " is free", advice));
}

MemoryPlan plan_model_memory(const ModelConfig& cfg, const MemoryPlanOptions& o, const WorkspaceSizes& ws) {
  cfg.validate("memory plan");
  OPD_REQUIRE(o.tp >= 1 && cfg.n_heads % o.tp == 0 && cfg.n_kv_heads % o.tp == 0 && cfg.ffn_dim % o.tp == 0 &&
                  cfg.vocab % o.tp == 0,
              "memory plan: tp = ", o.tp, " does not divide the model's heads, kv heads, ffn and vocab");
  OPD_REQUIRE(o.batch >= 0 && o.seq >= 0 && o.kv_batch >= 0 && o.kv_capacity >= 0,
              "memory plan: negative batch or sequence sizes");
  OPD_REQUIRE(!o.train || o.batch * size_t(o.seq) > 0, "memory plan: training needs a forward batch");
  OPD_REQUIRE(!o.extend || (o.batch * size_t(o.seq) > 0 && o.kv_batch > 0 && o.kv_capacity > 0),
              "memory plan: extending a KV cache needs a forward batch and a cache");
  constexpr size_t kBf16 = 2, kF32 = 4;
  const size_t P = total_size(param_specs(cfg, o.tp, 0));
  const size_t N = size_t(o.batch) * o.seq, C = cfg.d_model, F = cfg.ffn_dim / o.tp, V = cfg.vocab / o.tp;
  const size_t H = cfg.n_heads / o.tp, HK = cfg.n_kv_heads / o.tp, QD = H * cfg.head_dim, KD = HK * cfg.head_dim;

  MemoryPlan plan;
  plan.add("weights.bf16", MemoryKind::kWeights, P * kBf16);
  if (o.train) {
    plan.add("weights.master", MemoryKind::kMaster, P * kF32);
    plan.add("grads", MemoryKind::kGrads, P * kF32);
    plan.add("adam.m", MemoryKind::kOptimizer, P * kF32);
    plan.add("adam.v", MemoryKind::kOptimizer, P * kF32);
    plan.add("adam.decay_mask", MemoryKind::kOptimizer, P);
  }
  // One layer's activations for n rows: name, bytes.
  const auto layer_set = [&](size_t n) {
    return std::vector<std::pair<const char*, size_t>>{
        {"ln1", n * C * kBf16},     {"rstd1", n * kF32},      {"q", n * QD * kBf16},    {"k", n * KD * kBf16},
        {"v", n * KD * kBf16},      {"qr", n * QD * kBf16},   {"kr", n * KD * kBf16},   {"q_rstd", n * H * kF32},
        {"k_rstd", n * HK * kF32},  {"att", n * QD * kBf16},  {"lse", n * H * kF32},    {"mid", n * C * kBf16},
        {"ln2", n * C * kBf16},     {"rstd2", n * kF32},      {"gate", n * F * kBf16},  {"up", n * F * kBf16},
        {"h", n * F * kBf16}};
  };
  if (N > 0) {
    if (o.train) {
      for (int l = 0; l < cfg.n_layers; ++l) {
        plan.add(str("L", l, ".resid"), MemoryKind::kActivations, N * C * kBf16);
        if (!o.recompute)
          for (const auto& [name, bytes] : layer_set(N)) plan.add(str("L", l, ".", name), MemoryKind::kActivations, bytes);
      }
    } else {
      plan.add("stream.resid", MemoryKind::kActivations, N * C * kBf16);
    }
    if (!o.train || o.recompute)
      for (const auto& [name, bytes] : layer_set(N)) plan.add(str("layer.", name), MemoryKind::kActivations, bytes);
    plan.add("final.resid", MemoryKind::kActivations, N * C * kBf16);
    plan.add("final.ln", MemoryKind::kActivations, N * C * kBf16);
    plan.add("final.rstd", MemoryKind::kActivations, N * kF32);
    plan.add("logits", MemoryKind::kLogits, N * V * kF32);
    if (o.train) {
      plan.add("dlogits", MemoryKind::kLogits, N * V * kF32);  // what the losses write, read by backward
      plan.add("dlogits.bf16", MemoryKind::kLogits, N * V * kBf16);
      for (const auto& [name, width] : std::vector<std::pair<const char*, size_t>>{
               {"dresid", C}, {"dln", C}, {"dh", F}, {"dgate", F}, {"dup", F}, {"datt", QD}, {"dq", QD}, {"dqp", QD},
               {"dk", KD}, {"dkp", KD}, {"dv", KD}})
        plan.add(str("grad.", name), MemoryKind::kActivations, N * width * kBf16);
    }
  }
  if (o.kv_batch > 0 && o.kv_capacity > 0) {
    const size_t cache = size_t(o.kv_batch) * o.kv_capacity * KD * kBf16;
    for (int l = 0; l < cfg.n_layers; ++l) {
      plan.add(str("kv.L", l, ".k"), MemoryKind::kKVCache, cache);
      plan.add(str("kv.L", l, ".v"), MemoryKind::kKVCache, cache);
    }
    const size_t B = o.kv_batch, n = std::max(B, o.extend ? N : 0);  // rows: a token per sequence, or a forward's
    plan.add("dec.x", MemoryKind::kActivations, n * C * kBf16);
    for (const auto& [name, bytes] : layer_set(n)) plan.add(str("dec.", name), MemoryKind::kActivations, bytes);
    plan.add("dec.logits", MemoryKind::kLogits, n * V * kF32);
    plan.add("dec.tokens", MemoryKind::kActivations, n * sizeof(int));
    plan.add("dec.positions", MemoryKind::kActivations, n * sizeof(int));
    plan.add("dec.pos", MemoryKind::kActivations, B * sizeof(int));
    if (o.extend) {
      for (const auto& [name, width] :
           std::vector<std::pair<const char*, size_t>>{{"q_t", QD}, {"k_t", KD}, {"v_t", KD}, {"att_t", QD}})
        plan.add(str("dec.", name), MemoryKind::kActivations, B * width * kBf16);
      plan.add("dec.pos_t", MemoryKind::kActivations, B * sizeof(int));
      plan.add("scores.logits", MemoryKind::kLogits, N * V * kF32);
    }
  }
  if (N > 0) {
    plan.add("tokens", MemoryKind::kActivations, N * sizeof(int));
    plan.add("positions", MemoryKind::kActivations, N * sizeof(int));
  }
  if (ws.kernels) plan.add("workspace.kernels", MemoryKind::kWorkspace, ws.kernels);
  if (ws.cublaslt) plan.add("workspace.cublaslt", MemoryKind::kWorkspace, ws.cublaslt, /*in_arena=*/false);
  return plan;
}

}  // namespace opd
