// Shapes of published Qwen3 models (their config.json), for benchmarks with random weights: a
// benchmark at the real shape without the real weights, which no machine here can download.
#pragma once
#include <string>

#include "model/config.h"

namespace opd {

// "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"; max_seq as given. An unknown name is an
// error listing the known ones, naming `option`.
ModelConfig qwen3_preset(const std::string& name, int max_seq, const std::string& option = "--preset");

}  // namespace opd
