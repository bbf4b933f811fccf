#include "cli/runtime.h"

#include <omp.h>

#include <cstdlib>
#include <thread>

#include "kernels/cpu/matmul.h"

namespace opd::cli {

void add_runtime_options(po::options_description& desc) {
  desc.add_options()("threads", po::value<int>()->default_value(0)->notifier(in_range("threads", 0, 1024)),
                     "CPU threads for OpenMP and BLAS (0: OMP_NUM_THREADS, else all cores)");
}

int apply_runtime_options(const po::variables_map& vm) {
  int threads = vm["threads"].as<int>();
  if (threads == 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env ? std::atoi(env) : 0;
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  omp_set_num_threads(threads);
  cpu::set_blas_threads(threads);
  return threads;
}

}  // namespace opd::cli
