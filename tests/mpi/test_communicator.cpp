// The MPI communicator's primitives and the layout's sub-communicators, on 2-4 ranks.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "parallel/groups.h"
#include "parallel/mpi_communicator.h"

namespace opd {
namespace {

TEST(Communicator, AllReduceSumAndMaxOnEveryType) {
  auto w = MpiCommunicator::world();
  const int r = w->rank(), n = w->size();
  std::vector<float> f = {float(r), 1.5f, -float(r)};
  w->all_reduce(f.data(), f.size(), ReduceOp::kSum);
  EXPECT_EQ(f[0], n * (n - 1) / 2.0f);
  EXPECT_EQ(f[1], 1.5f * n);
  std::vector<double> d = {double(r), -double(r)};
  w->all_reduce(d.data(), d.size(), ReduceOp::kMax);
  EXPECT_EQ(d[0], n - 1);
  EXPECT_EQ(d[1], 0.0);
  int64_t big = (int64_t(1) << 40) + r;
  w->all_reduce(&big, 1, ReduceOp::kSum);
  EXPECT_EQ(big, n * (int64_t(1) << 40) + n * (n - 1) / 2);
  EXPECT_EQ(all_reduce_value<float>(*w, float(r) * 2, ReduceOp::kMax), float(n - 1) * 2);
}

TEST(Communicator, AllGatherInRankOrderAndBroadcastFromAnyRoot) {
  auto w = MpiCommunicator::world();
  const int r = w->rank(), n = w->size();
  const int mine[2] = {r, r * r};
  std::vector<int> all(2 * n);
  w->all_gather(mine, sizeof(mine), all.data());
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(all[2 * i], i);
    EXPECT_EQ(all[2 * i + 1], i * i);
  }
  for (int root = 0; root < n; ++root) {
    std::vector<double> v(5, r == root ? 3.25 + root : -1.0);
    w->broadcast(v.data(), v.size() * sizeof(double), root);
    for (double x : v) EXPECT_EQ(x, 3.25 + root);
  }
  w->barrier();
}

TEST(Communicator, NonBlockingRingWithProbe) {
  auto w = MpiCommunicator::world();
  const int r = w->rank(), n = w->size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  std::vector<float> out(3 + r, float(r) + 0.5f);  // a size of its own per rank, found by probe
  auto send = w->isend(out.data(), out.size() * sizeof(float), next, 11);
  Incoming in;
  while (!w->probe(prev, 11, in)) {
  }
  EXPECT_EQ(in.source, prev);
  ASSERT_EQ(in.bytes, (3 + prev) * sizeof(float));
  std::vector<float> got(in.bytes / sizeof(float));
  auto recv = w->irecv(got.data(), in.bytes, prev, 11);
  recv->wait();
  send->wait();
  EXPECT_TRUE(recv->test());
  for (float x : got) EXPECT_EQ(x, float(prev) + 0.5f);
  Incoming none;
  EXPECT_FALSE(w->probe(-1, 12, none));
  w->barrier();
}

TEST(Communicator, SplitAndSameOnAllRanks) {
  auto w = MpiCommunicator::world();
  const int r = w->rank(), n = w->size();
  auto parity = w->split(r % 2, r, "parity");
  ASSERT_TRUE(parity);
  EXPECT_EQ(parity->size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ(parity->rank(), r / 2);
  EXPECT_EQ(int(all_reduce_value<double>(*parity, r, ReduceOp::kMax)) % 2, r % 2);
  auto only_zero = w->split(r == 0 ? 0 : -1, r, "rank 0");
  EXPECT_EQ(only_zero != nullptr, r == 0);
  const std::vector<float> same(100, 0.25f);
  EXPECT_TRUE(same_on_all_ranks(*w, same.data(), same.size() * sizeof(float)));
  std::vector<float> differs(100, 0.25f);
  if (r == n - 1) differs[57] = 0.2500001f;
  EXPECT_FALSE(same_on_all_ranks(*w, differs.data(), differs.size() * sizeof(float)));
}

// The sub-communicators of a layout: which world ranks each group holds.
std::vector<int> members(Communicator& group, int world_rank) {
  std::vector<int> all(group.size());
  group.all_gather(&world_rank, sizeof(int), all.data());
  return all;
}

TEST(Groups, TeacherReplicasAndStudentGrid) {
  auto w = MpiCommunicator::world();
  const int n = w->size(), r = w->rank();
  LayoutOptions o;
  o.teacher_ranks = n >= 3 ? 1 : 0;
  const Layout l = make_layout(o, n);
  RankGroups g = make_groups(std::move(w), l);
  if (g.student()) {
    ASSERT_TRUE(g.dp && g.tp && g.students);
    EXPECT_FALSE(g.replica);
    EXPECT_EQ(g.dp->size(), l.dp);
    EXPECT_EQ(g.tp->size(), 1);
    std::vector<int> want(l.student_ranks());
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(members(*g.dp, r), want);
    EXPECT_EQ(g.writer(), r == 0);
  } else {
    ASSERT_TRUE(g.replica);
    EXPECT_FALSE(g.dp || g.tp || g.students);
    EXPECT_EQ(members(*g.replica, r), std::vector<int>{r});
  }
  g.world->barrier();
}

TEST(Groups, TensorTimesDataGridOnFourRanks) {
  auto w = MpiCommunicator::world();
  if (w->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int r = w->rank();
  LayoutOptions o;
  o.tp = 2;
  RankGroups g = make_groups(std::move(w), make_layout(o, 4));
  EXPECT_EQ(g.place.tp_rank, r % 2);
  EXPECT_EQ(g.place.dp_rank, r / 2);
  EXPECT_EQ(members(*g.tp, r), (std::vector<int>{r / 2 * 2, r / 2 * 2 + 1}));
  EXPECT_EQ(members(*g.dp, r), (std::vector<int>{r % 2, r % 2 + 2}));
  EXPECT_EQ(g.dp_leader(), r % 2 == 0);
}

}  // namespace
}  // namespace opd
