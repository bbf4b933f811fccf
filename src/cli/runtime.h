// Options every compute subcommand shares, and applying them to the process.
#pragma once
#include "core/options.h"

namespace opd::cli {

// --threads: OpenMP and BLAS threads (default: OMP_NUM_THREADS, else the cores available).
void add_runtime_options(po::options_description& desc);
// Sets the thread counts; returns the number in use.
int apply_runtime_options(const po::variables_map& vm);

// --head-chunk: the LM head's block (docs/ARCHITECTURE.md §2), "auto", 0 or a row count.
void add_head_chunk_option(po::options_description& desc);
// kHeadRowsAuto (-1), kHeadRowsAll (0) or the rows; an error names the option.
int head_chunk_option(const po::variables_map& vm);

}  // namespace opd::cli
