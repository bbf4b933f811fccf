// Options every compute subcommand shares, and applying them to the process.
#pragma once
#include "core/options.h"

namespace opd::cli {

// --threads: OpenMP and BLAS threads (default: OMP_NUM_THREADS, else the cores available).
void add_runtime_options(po::options_description& desc);
// Sets the thread counts; returns the number in use.
int apply_runtime_options(const po::variables_map& vm);

}  // namespace opd::cli
