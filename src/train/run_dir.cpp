#include "train/run_dir.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

#include "core/error.h"

namespace opd {

namespace fs = std::filesystem;

RunDir::RunDir(const std::string& path, const std::string& config_ini, bool overwrite, bool resume) : path_(path) {
  OPD_REQUIRE(!path.empty(), "option --out must name a run directory");
  std::error_code ec;
  fs::create_directories(fs::path(path) / "samples", ec);
  OPD_REQUIRE(!ec, path, ": cannot create the run directory (", ec.message(), ")");
  fs::create_directories(fs::path(path) / "checkpoints", ec);
  OPD_REQUIRE(overwrite || resume || !fs::exists(file("metrics.jsonl")), path,
              ": already holds a run (metrics.jsonl); choose another --out, --resume auto or --overwrite");
  std::ofstream cfg(file("config.ini"));
  OPD_REQUIRE(cfg.good(), file("config.ini"), ": cannot write");
  cfg << config_ini;
  metrics_ = std::make_unique<JsonlWriter>(file("metrics.jsonl"), /*append=*/resume);
}

void RunDir::keep_metrics_through(int64_t step) {
  std::vector<std::string> kept;
  {
    std::ifstream in(file("metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_discarded() && j.contains("step") && j["step"].get<int64_t>() <= step) kept.push_back(line);
    }
  }
  metrics_.reset();
  {
    std::ofstream out(file("metrics.jsonl"), std::ios::trunc);
    for (const auto& l : kept) out << l << "\n";
    OPD_REQUIRE(out.good(), file("metrics.jsonl"), ": rewrite failed");
  }
  metrics_ = std::make_unique<JsonlWriter>(file("metrics.jsonl"), /*append=*/true);
}

void RunDir::write_samples(int step, const json& rows) const {
  char name[64];
  std::snprintf(name, sizeof(name), "samples/step_%06d.jsonl", step);
  JsonlWriter w(file(name));
  for (const auto& r : rows) w.write(r);
}

void RunDir::write_summary(const json& summary) const {
  const std::string tmp = file("summary.json.tmp");
  {
    std::ofstream out(tmp);
    out << summary.dump(2) << "\n";
    OPD_REQUIRE(out.good(), tmp, ": write failed");
  }
  fs::rename(tmp, file("summary.json"));
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof(buf), "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

Progress::Progress(std::string name, int total_steps, bool jsonl)
    : jsonl_(jsonl), name_(std::move(name)), total_(total_steps), start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::report(int step, const std::string& fields, const json& metrics, bool forced) {
  const auto now = std::chrono::steady_clock::now();
  if (!forced && step != total_ && step != 1 && now - last_ < std::chrono::seconds(1)) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = step > 0 ? elapsed / step * (total_ - step) : 0;
  if (jsonl_) {
    json j = metrics;
    j["command"] = name_;
    j["steps_planned"] = total_;
    j["elapsed_s"] = elapsed;
    j["eta_s"] = eta;
    std::cerr << j.dump() << std::endl;
    return;
  }
  std::cerr << "[" << name_ << "] step " << step << "/" << total_ << " | " << fields << " | "
            << format_duration(elapsed) << " elapsed, ETA " << format_duration(eta) << std::endl;
}

}  // namespace opd
