#include "train/step_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace opd {

void add_step_metrics(json& line, const StepSums& s, const TrainConfig& c, bool sampled) {
  if (sampled) {
    line["truncated"] = int64_t(s.truncated);
    line["completion_length"] = s.completion_tokens / std::max(1.0, s.sequences);
    line["reward"] = s.reward / std::max(1.0, s.sequences);
  }
  const double n = std::max<int64_t>(1, s.tokens.tokens);
  line["loss"] = s.loss();
  line["logp_student"] = s.tokens.logp_student / n;
  if (c.method != Method::kSft) line["entropy"] = s.tokens.entropy / n;
  if (c.method == Method::kDistill) {
    line["kl"] = s.tokens.kl / n;
    line["logp_teacher"] = s.tokens.logp_teacher / n;
    if (c.distill.kl.mode != KlSpec::kSampled) line["kl_exact"] = s.tokens.kl_exact / n;
  }
}

std::string progress_fields(const json& line) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "loss %.4f", line["loss"].get<double>());
  std::string fields = buf;
  if (line.contains("kl")) fields += str(" | kl ", std::round(line["kl"].get<double>() * 1e4) / 1e4);
  if (line.contains("reward")) fields += str(" | reward ", std::round(line["reward"].get<double>() * 1e3) / 1e3);
  if (line.contains("eval"))
    for (const auto& [set, r] : line["eval"].items()) fields += str(" | ", set, " acc ", r["accuracy"].get<double>());
  std::snprintf(buf, sizeof(buf), " | %.0f tok/s", line["tokens_per_s"].get<double>());
  return fields + buf;
}

namespace {

json tokens_json(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) a.push_back(std::round(x * 1e4) / 1e4);
  return a;
}

}  // namespace

json sample_rows(const std::vector<Example>& examples, const Rollout& r,
                 const std::vector<std::vector<float>>& teacher_logp, int n) {
  json rows = json::array();
  for (int i = 0; i < std::min<int>(n, static_cast<int>(r.seqs.size())); ++i) {
    json row = {{"prompt", examples[r.seqs[i].group].prompt}, {"completion", r.completions[i]}};
    if (!r.rewards.empty()) row["reward"] = r.rewards[i];
    if (!r.logp.empty()) row["logp_student"] = tokens_json(r.logp[i]);
    if (i < static_cast<int>(teacher_logp.size())) row["logp_teacher"] = tokens_json(teacher_logp[i]);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace opd
