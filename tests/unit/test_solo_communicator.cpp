// The communicator of a job of one process that no launcher started: collectives are the
// identity, and a send or receive names the missing peer.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/solo_communicator.h"

TEST(SoloCommunicator, CollectivesAreTheIdentity) {
  opd::SoloCommunicator world("world");
  EXPECT_EQ(world.rank(), 0);
  EXPECT_EQ(world.size(), 1);
  std::vector<float> f = {1.5f, -2.0f};
  world.all_reduce(f.data(), f.size(), opd::ReduceOp::kSum);
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(opd::all_reduce_value<int64_t>(world, 7, opd::ReduceOp::kMax), 7);
  const int mine[2] = {3, 4};
  int all[2] = {0, 0};
  world.all_gather(mine, sizeof(mine), all);
  EXPECT_EQ(all[0], 3);
  EXPECT_EQ(all[1], 4);
  EXPECT_TRUE(opd::same_on_all_ranks(world, mine, sizeof(mine)));
  world.broadcast(all, sizeof(all), 0);
  world.barrier();
  opd::Incoming in;
  EXPECT_FALSE(world.probe(-1, 5, in));
  auto tp = world.split(0, 0, "tp");
  ASSERT_TRUE(tp);
  EXPECT_EQ(tp->size(), 1);
  EXPECT_EQ(tp->name(), "tp");
  EXPECT_EQ(world.split(-1, 0, "none"), nullptr);
}

TEST(SoloCommunicator, PeersThatDoNotExistAreNamed) {
  opd::SoloCommunicator world("world");
  int x = 0;
  try {
    world.isend(&x, sizeof(x), 1, 0);
    ADD_FAILURE();
  } catch (const opd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("world: a job of one process has no rank 1 to send to"), std::string::npos);
  }
  EXPECT_THROW(world.irecv(&x, sizeof(x), 2, 0), opd::Error);
  EXPECT_THROW(world.broadcast(&x, sizeof(x), 1), opd::Error);
}

TEST(SoloCommunicator, LaunchersAreRecognisedByTheirVariables) {
  // ctest may itself run under a launcher's environment: only the variables set here are judged.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_RANK"})
    unsetenv(var);
  EXPECT_FALSE(opd::launched_by_mpi());
  setenv("PMIX_RANK", "0", 1);
  EXPECT_TRUE(opd::launched_by_mpi());
  unsetenv("PMIX_RANK");
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_TRUE(opd::launched_by_mpi());
  unsetenv("OMPI_COMM_WORLD_SIZE");
}
