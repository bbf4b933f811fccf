// Moving a model's flat buffers (parameters, gradients, optimizer moments) between the whole
// layout of one process and the shards of tensor parallelism (ParamSpec's split), so that files,
// which always hold whole tensors, load at any TP degree.
#pragma once
#include <vector>

#include "model/params.h"
#include "parallel/communicator.h"

namespace opd {

// This rank's shards (local_specs) of a whole flat buffer laid out by param_specs(cfg).
std::vector<float> take_shards(const std::vector<ParamSpec>& local_specs, const std::vector<float>& whole);

// The whole flat buffer from every TP rank's shards; collective over `tp`, the result on every rank.
std::vector<float> gather_shards(Communicator& tp, const ModelConfig& cfg, const std::vector<float>& local);

// Rows [N, vocab] from each rank's columns [N, vocab / tp] (a TP teacher's log-softmax rows for the
// students); collective over `tp`.
std::vector<float> gather_columns(Communicator& tp, const float* local, int N, int local_cols);
// Columns [begin, begin + cols) of rows [N, width].
std::vector<float> slice_columns(const float* rows, int N, int width, int begin, int cols);

}  // namespace opd
