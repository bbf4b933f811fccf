// The NCCL communicator under mpirun, one GPU per rank: its collectives against the MPI
// communicator's on the same data, point-to-point transfers of device buffers, split, and the
// errors at its border. Skips (on every rank alike) where a rank has no GPU of its own; the NCCL
// check and the set-up failure without a GPU run everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "gpu/device_buffer.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_check.h"
#include "parallel/nccl_communicator.h"

namespace opd {
namespace {

using testing::DeviceBuffer;
using testing::expect_bitwise_equal;

// Whether every rank has a CUDA device of its own (its index among the ranks of its node is below
// the node's device count). Agreed over the world, so that all ranks skip or run together.
bool every_rank_has_a_gpu(Communicator& world) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  int64_t missing = node_share().rank < count ? 0 : 1;
  world.all_reduce(&missing, 1, ReduceOp::kSum);
  return missing == 0;
}

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::world();
    if (!every_rank_has_a_gpu(*world_)) GTEST_SKIP() << "needs one CUDA device per rank (fewer are visible)";
    CUDA_CHECK(cudaSetDevice(node_share().rank));
    nccl_ = std::make_unique<NcclCommunicator>(*world_, "world");
    r_ = nccl_->rank();
    n_ = nccl_->size();
  }
  std::unique_ptr<MpiCommunicator> world_;
  std::unique_ptr<NcclCommunicator> nccl_;
  int r_ = 0, n_ = 1;
};

// Small integers, different on every rank and element: float and double sums of them are exact
// in any order, so NCCL's result must equal MPI's bit for bit. The int64 ones need all 64 bits.
template <typename T>
std::vector<T> rank_values(size_t n, int rank, int salt) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t small = int64_t((i * 7919 + size_t(rank) * 104729 + size_t(salt) * 31) % 201) - 100;
    if constexpr (std::is_same_v<T, int64_t>) {
      v[i] = small * (int64_t(1) << 40) + rank;
    } else {
      v[i] = T(small) / T(4);
    }
  }
  return v;
}

template <typename T>
void all_reduce_matches_mpi(NcclCommunicator& nccl, Communicator& mpi, size_t n, ReduceOp op, int salt) {
  SCOPED_TRACE(::testing::Message() << n << " elements of " << sizeof(T) << " bytes, "
                                    << (op == ReduceOp::kSum ? "sum" : "max"));
  const auto mine = rank_values<T>(n, nccl.rank(), salt);
  auto want = mine;
  mpi.all_reduce(want.data(), n, op);
  DeviceBuffer<T> d(mine);
  nccl.all_reduce(d.get(), n, op);
  expect_bitwise_equal(d.host(), want, "NCCL all_reduce vs MPI");
}

TEST_F(Nccl, AllReduceMatchesMpiOnEveryTypeAndOp) {
  int salt = 0;
  for (size_t n : {size_t(1), size_t(1000), (size_t(1) << 20) + 3}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      all_reduce_matches_mpi<float>(*nccl_, *world_, n, op, ++salt);
      all_reduce_matches_mpi<double>(*nccl_, *world_, n, op, ++salt);
      all_reduce_matches_mpi<int64_t>(*nccl_, *world_, n, op, ++salt);
    }
  }
  nccl_->all_reduce(static_cast<float*>(nullptr), 0, ReduceOp::kSum);  // nothing to do, on every rank
}

// Stream-ordered on the caller's stream: nothing is waited for until the caller synchronizes it.
TEST_F(Nccl, StreamOrderedOnTheCallersStream) {
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  nccl_->set_stream(s);
  nccl_->set_stream_ordered(true);
  EXPECT_EQ(nccl_->stream(), s);
  const size_t n = 4099;
  std::vector<double> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = double(i % 13) + r_;
  double* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(double)));
  CUDA_CHECK(cudaMemcpyAsync(d, host.data(), n * sizeof(double), cudaMemcpyHostToDevice, s));
  nccl_->all_reduce(d, n, ReduceOp::kSum);
  nccl_->all_reduce(d, n, ReduceOp::kMax);  // the same on every rank by now: unchanged
  std::vector<double> got(n);
  CUDA_CHECK(cudaMemcpyAsync(got.data(), d, n * sizeof(double), cudaMemcpyDeviceToHost, s));
  nccl_->synchronize();
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], n_ * double(i % 13) + n_ * (n_ - 1) / 2.0) << "element " << i;
  nccl_.reset();  // before its stream goes
  CUDA_CHECK(cudaFree(d));
  CUDA_CHECK(cudaStreamDestroy(s));
}

TEST_F(Nccl, AllGatherInRankOrderAndInPlace) {
  const size_t bytes = 13;  // not a multiple of any word size
  std::vector<unsigned char> mine(bytes);
  for (size_t i = 0; i < bytes; ++i) mine[i] = static_cast<unsigned char>(r_ * 31 + i);
  DeviceBuffer<unsigned char> in(mine), out(std::vector<unsigned char>(bytes * n_, 0));
  nccl_->all_gather(in.get(), bytes, out.get());
  const auto all = out.host();
  for (int k = 0; k < n_; ++k)
    for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(all[k * bytes + i], static_cast<unsigned char>(k * 31 + i));
  std::vector<unsigned char> slot(bytes * n_, 0);
  std::memcpy(slot.data() + r_ * bytes, mine.data(), bytes);
  DeviceBuffer<unsigned char> in_place(slot);
  nccl_->all_gather(in_place.get() + r_ * bytes, bytes, in_place.get());
  EXPECT_EQ(in_place.host(), all);
}

TEST_F(Nccl, BroadcastFromEveryRoot) {
  for (int root = 0; root < n_; ++root) {  // root 1 included on 2 ranks
    SCOPED_TRACE(::testing::Message() << "root " << root);
    std::vector<double> want(1001);
    for (size_t i = 0; i < want.size(); ++i) want[i] = 0.5 * double(i) - root;
    DeviceBuffer<double> d(r_ == root ? want : std::vector<double>(want.size(), -1.0));
    nccl_->broadcast(d.get(), want.size() * sizeof(double), root);
    expect_bitwise_equal(d.host(), want, "broadcast");
  }
  nccl_->barrier();
}

// A student and a teacher: a request of token ids one way, scores back the other, each side
// posting its transfer in the order the other expects (ranks 2k and 2k+1 pair up).
TEST_F(Nccl, SendAndReceiveDeviceBuffersBetweenPairs) {
  const int peer = r_ % 2 == 0 ? r_ + 1 : r_ - 1;
  if (peer < n_) {
    const bool asker = r_ % 2 == 0;
    std::vector<int32_t> tokens(5003);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(i * 17 + std::min(r_, peer));
    std::vector<float> scores(77);
    for (size_t i = 0; i < scores.size(); ++i) scores[i] = -0.25f * float(i) + float(std::max(r_, peer));
    DeviceBuffer<int32_t> d_tokens(asker ? tokens : std::vector<int32_t>(tokens.size(), 0));
    DeviceBuffer<float> d_scores(asker ? std::vector<float>(scores.size(), 0.0f) : scores);
    if (asker) {
      auto send = nccl_->isend(d_tokens.get(), tokens.size() * sizeof(int32_t), peer, 1);
      send->wait();
      auto recv = nccl_->irecv(d_scores.get(), scores.size() * sizeof(float), peer, 2);
      recv->wait();
      EXPECT_TRUE(recv->test());
      EXPECT_TRUE(send->test());
    } else {
      auto recv = nccl_->irecv(d_tokens.get(), tokens.size() * sizeof(int32_t), peer, 1);
      while (!recv->test()) {
      }
      auto send = nccl_->isend(d_scores.get(), scores.size() * sizeof(float), peer, 2);
      send->wait();
    }
    EXPECT_EQ(d_tokens.host(), tokens);
    EXPECT_EQ(d_scores.host(), scores);
    EXPECT_TRUE(nccl_->isend(nullptr, 0, peer, 3)->test());  // nothing to send: complete at once
  }
  nccl_->barrier();
}

// Every rank sends to the next and receives from the previous at once: one NCCL group.
TEST_F(Nccl, SendRecvAroundARing) {
  const int next = (r_ + 1) % n_, prev = (r_ + n_ - 1) % n_;
  const std::vector<double> mine(3 + r_, r_ + 0.5);  // a size of its own per rank
  DeviceBuffer<double> out(mine), in(std::vector<double>(3 + prev, 0.0));
  nccl_->sendrecv(out.get(), mine.size() * sizeof(double), next, in.get(), (3 + prev) * sizeof(double), prev)->wait();
  EXPECT_EQ(in.host(), std::vector<double>(3 + prev, prev + 0.5));
}

TEST_F(Nccl, SplitIntoSingleRankGroupsAndByKey) {
  auto solo = nccl_->split(r_, 0, "solo");
  ASSERT_TRUE(solo);
  EXPECT_EQ(solo->size(), 1);
  EXPECT_EQ(solo->rank(), 0);
  EXPECT_EQ(solo->name(), "solo");
  const auto values = rank_values<float>(257, r_, 5);
  DeviceBuffer<float> d(values);
  solo->all_reduce(d.get(), values.size(), ReduceOp::kSum);
  solo->broadcast(d.get(), values.size() * sizeof(float), 0);
  solo->barrier();
  expect_bitwise_equal(d.host(), values, "all_reduce on one rank");

  // Reversed by key: NCCL's ranks follow MPI's (split checks), and so does the gathered order.
  auto reversed = nccl_->split(0, -r_, "reversed");
  ASSERT_TRUE(reversed);
  EXPECT_EQ(reversed->rank(), n_ - 1 - r_);
  auto& child = static_cast<NcclCommunicator&>(*reversed);
  const int64_t me = r_;
  DeviceBuffer<int64_t> d_me(std::vector<int64_t>{me}), d_all(std::vector<int64_t>(n_, -1));
  child.all_gather(d_me.get(), sizeof(int64_t), d_all.get());
  std::vector<int64_t> via_mpi(n_, -1);
  child.host().all_gather(&me, sizeof(int64_t), via_mpi.data());
  EXPECT_EQ(d_all.host(), via_mpi);
  for (int k = 0; k < n_; ++k) EXPECT_EQ(via_mpi[k], n_ - 1 - k);

  auto only_zero = nccl_->split(r_ == 0 ? 0 : -1, r_, "rank 0");
  EXPECT_EQ(only_zero != nullptr, r_ == 0);
  nccl_->barrier();
}

// Border errors: thrown before NCCL is called, on every rank alike, and the communicator still works.
TEST_F(Nccl, BadInputsAreErrorsNamingTheCommunicator) {
  std::vector<float> on_host(8, 1.0f);
  try {
    nccl_->all_reduce(on_host.data(), on_host.size(), ReduceOp::kSum);
    ADD_FAILURE() << "a host buffer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'world'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
  EXPECT_THROW(all_reduce_value<double>(*nccl_, 1.0, ReduceOp::kMax), Error);  // a host value: use host()
  EXPECT_THROW(nccl_->all_reduce(static_cast<double*>(nullptr), 4, ReduceOp::kSum), Error);
  DeviceBuffer<double> d(std::vector<double>(4, 2.0));
  EXPECT_THROW(nccl_->broadcast(d.get(), 4 * sizeof(double), n_), Error);
  EXPECT_THROW(nccl_->broadcast(d.get(), 4 * sizeof(double), -1), Error);
  EXPECT_THROW(nccl_->isend(d.get(), 8, n_, 0), Error);
  EXPECT_THROW(nccl_->irecv(d.get(), 8, r_, 0), Error);  // from itself: only sendrecv can
  EXPECT_THROW(nccl_->all_gather(d.get(), 8 * 2, d.get() + 1), Error);  // overlapping, not in place
  EXPECT_EQ(all_reduce_value<double>(nccl_->host(), 1.0, ReduceOp::kSum), n_);
  nccl_->all_reduce(d.get(), 4, ReduceOp::kSum);
  EXPECT_EQ(d.host(), std::vector<double>(4, 2.0 * n_));
}

// probe() looks at the host communicator: a header sent over MPI is seen there.
TEST_F(Nccl, ProbeSeesMessagesOfTheHostCommunicator) {
  const int next = (r_ + 1) % n_, prev = (r_ + n_ - 1) % n_;
  const int64_t header[2] = {r_, 1000 + r_};
  auto send = nccl_->host().isend(header, sizeof(header), next, 41);
  Incoming in;
  while (!nccl_->probe(prev, 41, in)) {
  }
  EXPECT_EQ(in.source, prev);
  EXPECT_EQ(in.bytes, sizeof(header));
  int64_t got[2] = {-1, -1};
  nccl_->host().irecv(got, sizeof(got), prev, 41)->wait();
  send->wait();
  EXPECT_EQ(got[1], 1000 + prev);
  nccl_->barrier();
}

// A rank that cannot set up (here: no GPU at all) makes every rank throw instead of hanging in
// ncclCommInitRank. Runs where no rank has a usable device, as on the CPU build machines.
TEST(NcclSetUp, FailsOnEveryRankWithoutADevice) {
  auto world = MpiCommunicator::world();
  int count = 0;
  int64_t with_device = cudaGetDeviceCount(&count) == cudaSuccess && count > 0 ? 1 : 0;
  if (!with_device) cudaGetLastError();
  world->all_reduce(&with_device, 1, ReduceOp::kSum);
  if (with_device > 0) GTEST_SKIP() << "a rank has a CUDA device";
  try {
    NcclCommunicator nccl(*world, "gpu-less");
    ADD_FAILURE() << "constructed without a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL communicator 'gpu-less' (rank " + std::to_string(world->rank())),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("cudaGetDevice"), std::string::npos) << e.what();
  }
  world->barrier();
}

// NCCL_CHECK names the call and where it was made, with NCCL's own account of what was wrong.
TEST(NcclCheck, NamesTheCallAndNcclsLastError) {
  int count = 0;
  try {
    NCCL_CHECK(ncclCommCount(nullptr, &count));
    ADD_FAILURE() << "ncclCommCount accepted a null communicator";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ncclCommCount(nullptr, &count) failed: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(ncclGetErrorString(ncclInvalidArgument)), std::string::npos) << msg;
    EXPECT_NE(msg.find(ncclGetLastError(nullptr)), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_nccl_communicator.cpp:"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace opd
