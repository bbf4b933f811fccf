// Scoring: the log-probability a model gives every token of a sequence after the first, in that
// sequence's own context. This is the teacher's job in distillation.
#pragma once
#include <vector>

#include "model/transformer.h"

namespace opd {

// Returns, per sequence, len-1 log-probabilities (token t+1 given tokens 0..t). Sequences are
// scored `batch` at a time, right-padded; padding never changes a result.
std::vector<std::vector<float>> score_sequences(Transformer& model, const std::vector<std::vector<int>>& sequences,
                                                int batch);

}  // namespace opd
