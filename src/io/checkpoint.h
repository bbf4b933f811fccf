// Training checkpoints (docs/ARCHITECTURE.md §6): the /model group of a model file plus the optimizer's
// moments, the training state needed to continue bit for bit, and the resolved configuration.
// Every dataset carries a crc32 checked on load; files are written to *.tmp and renamed.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/model_file.h"

namespace opd {

struct TrainState {
  int64_t step = 0;          // the last completed step
  int64_t samples = 0, tokens = 0;
  uint64_t data_cursor = 0;  // examples consumed from the shuffled training set
  std::string counters;      // JSON text: FLOPs, summary so far (the trainer's own bookkeeping)
};

struct Checkpoint {
  std::unique_ptr<Transformer> model;
  std::vector<float> adam_m, adam_v;
  int adam_updates = 0;
  TrainState state;
  std::string config;  // the resolved INI text of the run that wrote it
};

void save_checkpoint(const std::string& path, const Transformer& model, const std::vector<float>& adam_m,
                     const std::vector<float>& adam_v, int adam_updates, const TrainState& state,
                     const std::string& config);
// Verifies every checksum; an error names the file and the dataset at fault. With tp (of size > 1):
// collective over it, the model and moments read as this rank's shards (see load_model).
Checkpoint load_checkpoint(const std::string& path, Communicator* tp = nullptr);

// The newest checkpoints/step_*.h5 of a run directory that loads and verifies; newer ones that do
// not are listed in `skipped` with the reason. nullopt when there is none.
std::optional<Checkpoint> newest_valid_checkpoint(const std::string& run_dir, std::vector<std::string>& skipped,
                                                  std::string* path = nullptr, Communicator* tp = nullptr);

// Deletes all but the newest `keep` checkpoints/step_*.h5 of a run directory.
void prune_checkpoints(const std::string& run_dir, int keep);

}  // namespace opd
