// A run's directory (docs/ARCHITECTURE.md §7): config.ini, metrics.jsonl, samples/, checkpoints/,
// summary.json; and the progress line rank 0 prints on stderr.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "core/jsonl.h"

namespace opd {

class RunDir {
 public:
  // Creates `path` (and samples/, checkpoints/); an existing metrics.jsonl is an error unless
  // `overwrite` — a finished run is never silently clobbered.
  // `resume`: continue a run whose metrics.jsonl exists; call keep_metrics_through() first.
  RunDir(const std::string& path, const std::string& config_ini, bool overwrite, bool resume = false);
  // Drops metrics lines of steps after `step` (written after the checkpoint a run resumes from).
  void keep_metrics_through(int64_t step);
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void log_metrics(const json& line) { metrics_->write(line); }
  void write_samples(int step, const json& rows) const;
  void write_summary(const json& summary) const;

 private:
  std::string path_;
  std::unique_ptr<JsonlWriter> metrics_;
};

// "step 12/100 | kl 0.321 | ... | ETA 1m20s" on stderr. At most one line a second (a job log of
// a long run stays readable), except lines that are `forced` (evaluations) and the last step.
class Progress {
 public:
  // jsonl: each report is the step's metrics object plus "elapsed_s" and "eta_s", for machines.
  Progress(std::string name, int total_steps, bool jsonl = false);
  void report(int step, const std::string& fields, const json& metrics, bool forced = false);

 private:
  bool jsonl_;
  std::string name_;
  int total_;
  std::chrono::steady_clock::time_point start_, last_;
};

std::string format_duration(double seconds);

}  // namespace opd
