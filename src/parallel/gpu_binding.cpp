#include "parallel/gpu_binding.h"

#include <mpi.h>

#include <cstdlib>

#include "parallel/mpi_check.h"
#include "parallel/mpi_communicator.h"

#ifdef OPD_WITH_CUDA
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#endif

namespace opd {

DeviceKind parse_device(const std::string& value, const std::string& option) {
  if (value == "cpu") return DeviceKind::kCpu;
  if (value == "cuda") return DeviceKind::kCuda;
  throw Error(str("option ", option, " = '", value, "': expected cpu or cuda"));
}

const char* device_name(DeviceKind kind) { return kind == DeviceKind::kCuda ? "cuda" : "cpu"; }

NodeRank node_rank_from(const EnvLookup& env, const NodeRank& fallback) {
  // The launcher's own numbering wins: it is what its GPU binding options (srun --gpu-bind,
  // mpirun --map-by) were planned against, and it needs no communication.
  static const char* kVars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                                "MV2_COMM_WORLD_LOCAL_RANK"};
  for (const char* var : kVars) {
    const char* value = env(var);
    if (!value || !*value) continue;
    char* end = nullptr;
    const long r = std::strtol(value, &end, 10);
    OPD_REQUIRE(*end == '\0' && r >= 0 && r < (1 << 20), "environment variable ", var, " = '", value,
                "' is not a node-local rank");
    NodeRank nr = fallback;
    nr.rank = static_cast<int>(r);
    nr.source = var;
    // The split counts this job's ranks on the node; a launcher rank beyond it means two launches
    // share the node, and the count that matters for sharing GPUs is the launcher's.
    if (nr.rank >= nr.size) nr.size = nr.rank + 1;
    return nr;
  }
  return fallback;
}

NodeRank this_node_rank() {
  int mpi = 0;
  MPI_CHECK(MPI_Initialized(&mpi));
  const NodeShare share = node_share();
  NodeRank split;
  split.rank = share.rank;
  split.size = share.size;
  split.source = mpi ? "MPI shared-memory split" : "a single process";
  return node_rank_from([](const char* name) { return std::getenv(name); }, split);
}

int choose_gpu(const NodeRank& local, int visible) {
  OPD_REQUIRE(visible >= 1, "choose_gpu: no visible GPU to choose from");
  return local.rank % visible;
}

int visible_gpu_count() {
#ifdef OPD_WITH_CUDA
  if (!cuda::device_available()) return 0;
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  return count;
#else
  return 0;
#endif
}

std::string device_label(DeviceKind kind, const NodeRank& local, int visible) {
  if (kind == DeviceKind::kCpu) return "cpu";
  return visible < 1 ? "cuda:none" : str("cuda:", choose_gpu(local, visible));
}

int bind_gpu(const NodeRank& local, int world_rank, const std::string& host) {
  const char* mask = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string where = str("rank ", world_rank, " on host ", host, " (node-local rank ", local.rank, " from ",
                                local.source, ", CUDA_VISIBLE_DEVICES=", mask ? mask : "(unset)", ")");
#ifdef OPD_WITH_CUDA
  const int visible = visible_gpu_count();
  OPD_REQUIRE(visible >= 1, "--device cuda: ", where, " sees no CUDA device");
  const int gpu = choose_gpu(local, visible);
  CUDA_CHECK(cudaSetDevice(gpu));
  return gpu;
#else
  throw Error(str("--device cuda: ", where, ": this opd was built without CUDA (configure with -DOPD_CUDA=ON)"));
#endif
}

std::vector<RankSite> gather_rank_sites(Communicator& world, DeviceKind kind, std::string* local_source) {
  struct Packed {
    char host[256], local[16], device[16], source[48];
  };
  const NodeRank local = this_node_rank();
  Packed mine{};
  const auto put = [](char* dst, size_t cap, const std::string& src) { src.copy(dst, cap - 1); };
  put(mine.host, sizeof(mine.host), processor_name());
  put(mine.local, sizeof(mine.local), std::to_string(local.rank));
  put(mine.device, sizeof(mine.device), device_label(kind, local, kind == DeviceKind::kCuda ? visible_gpu_count() : 0));
  put(mine.source, sizeof(mine.source), local.source);
  std::vector<Packed> all(world.size());
  world.all_gather(&mine, sizeof(Packed), all.data());
  std::vector<RankSite> sites;
  for (const Packed& p : all) sites.push_back({p.host, p.local, p.device});
  if (local_source) *local_source = all[0].source;
  return sites;
}

void add_device_option(po::options_description& desc) {
  desc.add_options()("device", po::value<std::string>()->default_value("cpu")->notifier([](const std::string& v) {
    parse_device(v);
  }),
                     "cpu, or cuda: one GPU per rank, GPU = node-local rank modulo the GPUs the rank sees");
}

DeviceKind device_option(const po::variables_map& vm) { return parse_device(vm["device"].as<std::string>()); }

}  // namespace opd
