// Which GPU a rank drives: the node-local rank from the launcher's variables (in their order of
// precedence), else MPI's split; GPU = local rank modulo the GPUs the rank sees.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/error.h"
#include "parallel/gpu_binding.h"

using opd::NodeRank;

namespace {

opd::EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

NodeRank split(int rank, int size) {
  NodeRank r;
  r.rank = rank;
  r.size = size;
  r.source = "MPI shared-memory split";
  return r;
}

}  // namespace

TEST(GpuBinding, LauncherVariablesWinInOrder) {
  const NodeRank fallback = split(1, 4);
  EXPECT_EQ(opd::node_rank_from(env_of({}), fallback).source, "MPI shared-memory split");
  EXPECT_EQ(opd::node_rank_from(env_of({}), fallback).rank, 1);

  NodeRank r = opd::node_rank_from(env_of({{"SLURM_LOCALID", "3"}}), fallback);
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.size, 4);
  EXPECT_EQ(r.source, "SLURM_LOCALID");

  r = opd::node_rank_from(env_of({{"SLURM_LOCALID", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}}), fallback);
  EXPECT_EQ(r.rank, 2);
  EXPECT_EQ(r.source, "OMPI_COMM_WORLD_LOCAL_RANK");

  r = opd::node_rank_from(env_of({{"MPI_LOCALRANKID", "5"}}), fallback);
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.size, 6) << "a launcher rank beyond the split widens the node's count";

  // An empty variable is as good as unset.
  EXPECT_EQ(opd::node_rank_from(env_of({{"SLURM_LOCALID", ""}, {"MV2_COMM_WORLD_LOCAL_RANK", "1"}}), fallback).source,
            "MV2_COMM_WORLD_LOCAL_RANK");
}

TEST(GpuBinding, MalformedVariablesAreNamed) {
  for (const char* bad : {"x", "1x", "-1", "99999999"}) {
    try {
      opd::node_rank_from(env_of({{"SLURM_LOCALID", bad}}), split(0, 1));
      ADD_FAILURE() << bad << " was accepted";
    } catch (const opd::Error& e) {
      EXPECT_NE(std::string(e.what()).find("SLURM_LOCALID = '" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(GpuBinding, GpuIsLocalRankModuloVisible) {
  EXPECT_EQ(opd::choose_gpu(split(0, 8), 8), 0);
  EXPECT_EQ(opd::choose_gpu(split(7, 8), 8), 7);
  EXPECT_EQ(opd::choose_gpu(split(5, 8), 4), 1);  // two ranks per GPU
  EXPECT_EQ(opd::choose_gpu(split(3, 4), 1), 0);  // srun --gpus-per-task=1: one GPU visible
  EXPECT_THROW(opd::choose_gpu(split(0, 1), 0), opd::Error);

  EXPECT_EQ(opd::device_label(opd::DeviceKind::kCpu, split(3, 4), 8), "cpu");
  EXPECT_EQ(opd::device_label(opd::DeviceKind::kCuda, split(3, 4), 2), "cuda:1");
  EXPECT_EQ(opd::device_label(opd::DeviceKind::kCuda, split(3, 4), 0), "cuda:none");
}

TEST(GpuBinding, DeviceNames) {
  EXPECT_EQ(opd::parse_device("cpu"), opd::DeviceKind::kCpu);
  EXPECT_EQ(opd::parse_device("cuda"), opd::DeviceKind::kCuda);
  try {
    opd::parse_device("gpu");
    ADD_FAILURE();
  } catch (const opd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device = 'gpu': expected cpu or cuda"), std::string::npos) << e.what();
  }
}

TEST(GpuBinding, BindingWithoutADeviceNamesTheRank) {
  if (opd::visible_gpu_count() > 0) GTEST_SKIP() << "a GPU is visible";
  try {
    opd::bind_gpu(split(1, 2), 7, "node042");
    ADD_FAILURE();
  } catch (const opd::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("rank 7 on host node042 (node-local rank 1 from MPI shared-memory split"), std::string::npos) << m;
  }
}
