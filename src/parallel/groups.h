// The communicators of one rank's place in the layout: the student grid's TP and DP groups, all
// student ranks, and a teacher replica's ranks. Built collectively by every rank of the world.
#pragma once
#include <memory>

#include "parallel/communicator.h"
#include "parallel/layout.h"

namespace opd {

struct RankGroups {
  Layout layout;
  Place place;
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> students;  // every student rank (null on teachers)
  std::unique_ptr<Communicator> dp;        // students with this tp rank: gradients are summed here
  std::unique_ptr<Communicator> tp;        // students with this dp rank: one model replica
  std::unique_ptr<Communicator> replica;   // the ranks of this teacher replica (null on students)

  bool student() const { return place.role == Role::kStudent; }
  // The rank that writes metrics, logs and checkpoints: student tp 0, dp 0 (world rank 0).
  bool writer() const { return student() && place.tp_rank == 0 && place.dp_rank == 0; }
  // Sends this DP group's scoring requests (tp rank 0 of each DP replica).
  bool dp_leader() const { return student() && place.tp_rank == 0; }
};

RankGroups make_groups(std::unique_ptr<Communicator> world, const Layout& layout);

}  // namespace opd
