// Which device a rank computes on (--device cpu|cuda) and, for CUDA, which GPU of its node: the
// node-local rank as the launcher tells it (Open MPI, Slurm, MPICH/Hydra, MVAPICH variables,
// else MPI's shared-memory split) modulo the GPUs the rank can see. Under Slurm with one GPU per
// task (--gpus-per-task=1, or --gpu-bind), CUDA_VISIBLE_DEVICES already holds one GPU, so every
// rank takes its device 0; with all of a node's GPUs visible, local rank r takes GPU r % count.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/options.h"
#include "parallel/communicator.h"
#include "parallel/layout.h"

namespace opd {

enum class DeviceKind { kCpu, kCuda };

// "cpu" or "cuda"; anything else is an error naming `option`.
DeviceKind parse_device(const std::string& value, const std::string& option = "--device");
const char* device_name(DeviceKind kind);

// A rank's place on its node.
struct NodeRank {
  int rank = 0, size = 1;
  std::string source;  // where rank came from: a launcher variable's name, or "MPI shared-memory split"
};

using EnvLookup = std::function<const char*(const char*)>;

// The node-local rank from the launcher's variables (in this order: OMPI_COMM_WORLD_LOCAL_RANK,
// SLURM_LOCALID, MPI_LOCALRANKID, MV2_COMM_WORLD_LOCAL_RANK); `fallback` (MPI's split) when none
// is set. A set but malformed or out-of-range variable is an error naming it.
NodeRank node_rank_from(const EnvLookup& env, const NodeRank& fallback);
// The same for this process: MPI's split as fallback (collective over MPI_COMM_WORLD), or rank 0
// of 1 in a process that did not start MPI.
NodeRank this_node_rank();

// The GPU a rank at `local` drives among `visible` devices (visible >= 1).
int choose_gpu(const NodeRank& local, int visible);

// CUDA devices this process can see (0 in a build without CUDA, or with no driver or device).
int visible_gpu_count();

// What --dry-run prints in the device column: "cpu", "cuda:N", or "cuda:none" when no GPU is
// visible to the rank.
std::string device_label(DeviceKind kind, const NodeRank& local, int visible);

// Makes this process's CUDA device the chosen GPU (cudaSetDevice) and returns its index. With no
// visible GPU, or in a build without CUDA, throws an error naming the rank, its host and
// CUDA_VISIBLE_DEVICES.
int bind_gpu(const NodeRank& local, int world_rank, const std::string& host);

// Every rank's host, node-local rank and device, gathered to all ranks (collective over `world`,
// which must be MPI_COMM_WORLD's communicator). *local_source receives where rank 0 took its
// node-local rank from.
std::vector<RankSite> gather_rank_sites(Communicator& world, DeviceKind kind, std::string* local_source = nullptr);

// --device.
void add_device_option(po::options_description& desc);
DeviceKind device_option(const po::variables_map& vm);

}  // namespace opd
