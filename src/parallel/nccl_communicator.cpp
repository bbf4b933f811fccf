#include "parallel/nccl_communicator.h"

#include <cstdint>
#include <exception>
#include <thread>

#include "kernels/cuda/cuda_check.cuh"
#include "parallel/nccl_check.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "opd's NCCL communicator needs NCCL 2.18 or newer (ncclCommSplit)"
#endif

namespace opd {

namespace nccl_detail {

struct Shared {
  ncclComm_t comm = nullptr;
  bool failed = false;  // NCCL reported an asynchronous error: the handle is not used again
  int device = 0;
  std::string what;     // "NCCL communicator 'tp' (rank 1 of 2)", for messages

  ncclComm_t live() const {
    OPD_REQUIRE(comm != nullptr && !failed, what, ": used after ", failed ? "an NCCL error" : "it was destroyed");
    return comm;
  }

  // An asynchronous error (a network failure, a peer's error) is reported, and the handle is left
  // alone: ncclCommAbort synchronizes with the other ranks of the node, which may be stuck in a
  // kernel waiting for this one, so it could hang the rank instead of letting it report and end
  // the job (opd's answer to every error). The process's end releases the resources.
  void check_async() {
    if (comm == nullptr || failed) return;  // destroyed with a request still around: nothing left to fail
    ncclResult_t async = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(comm, &async));
    if (async == ncclSuccess || async == ncclInProgress) return;
    failed = true;
    throw Error(str(what, ": asynchronous NCCL error: ", nccl_error_detail(async)));
  }

  // Whether a query (cudaStreamQuery / cudaEventQuery) says the work is done; checks for
  // asynchronous NCCL errors while it is not.
  bool reached(cudaError_t query, const char* call) {
    if (query == cudaSuccess) return true;
    if (query != cudaErrorNotReady)
      fail_call(call, str(cudaGetErrorString(query), " (", what, ")"), __FILE__, __LINE__);
    check_async();
    return false;
  }

  void wait_stream(cudaStream_t stream) {
    while (!reached(cudaStreamQuery(stream), "cudaStreamQuery(stream)")) std::this_thread::yield();
  }

  // Finalize (which waits for this communicator's operations on every rank) and destroy, when all
  // is well. After an error, or while one unwinds the stack on its way to ending the job, the
  // handle is left to the process's end, for the reason given at check_async.
  void close(bool unwinding) {
    if (comm == nullptr || failed || unwinding) return;
    int previous = -1;
    const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device &&
                          cudaSetDevice(device) == cudaSuccess;
    if (ncclCommFinalize(comm) == ncclSuccess) ncclCommDestroy(comm);
    comm = nullptr;
    if (switched) cudaSetDevice(previous);
  }
};

}  // namespace nccl_detail

namespace {

using nccl_detail::Shared;

// NCCL and CUDA bind streams, events and communicators to a device: make the communicator's
// current for the call and put the caller's back after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0, device_ = 0;
};

const char* memory_kind(const cudaPointerAttributes& a) {
  switch (a.type) {
    case cudaMemoryTypeUnregistered:
      return "host memory";
    case cudaMemoryTypeHost:
      return "pinned host memory";
    case cudaMemoryTypeDevice:
      return "memory of another device";
    default:
      return "managed memory";
  }
}

// The border check of every buffer: NCCL reads and writes device memory only, and a host pointer
// would fail inside a kernel (or read garbage) rather than say so.
void require_device_buffer(const Shared& s, const void* p, const char* op, const char* which) {
  OPD_REQUIRE(p != nullptr, s.what, ": ", op, ": the ", which, " buffer is null");
  cudaPointerAttributes a{};
  CUDA_CHECK(cudaPointerGetAttributes(&a, p));
  const bool ok = a.type == cudaMemoryTypeManaged || (a.type == cudaMemoryTypeDevice && a.device == s.device);
  OPD_REQUIRE(ok, s.what, ": ", op, ": the ", which, " buffer (", p, ") is ", memory_kind(a),
              a.type == cudaMemoryTypeDevice ? str(" (device ", a.device, ")") : std::string(),
              "; the NCCL communicator takes memory of its own device (", s.device,
              "); host data goes over its host communicator");
}

void require_peer(const Shared& s, int peer, int size, const char* op, const char* role) {
  OPD_REQUIRE(peer >= 0 && peer < size, s.what, ": ", op, ": ", role, " ", peer, " is outside [0, ", size, ")");
}

// A send or receive on the communicator's stream: complete once the event recorded after it is.
// One destroyed in flight (an error unwinding) cannot be cancelled, since NCCL has no way to; its
// event is released when reached and the job is about to end.
class NcclRequest : public Request {
 public:
  NcclRequest(std::shared_ptr<Shared> shared, cudaEvent_t done) : shared_(std::move(shared)), done_(done) {}
  ~NcclRequest() override {
    if (done_ != nullptr) cudaEventDestroy(done_);
  }
  bool test() override {
    if (done_ == nullptr) return true;
    if (!shared_->reached(cudaEventQuery(done_), "cudaEventQuery(done_)")) return false;
    CUDA_CHECK(cudaEventDestroy(done_));
    done_ = nullptr;
    return true;
  }
  void wait() override {
    while (!test()) std::this_thread::yield();
  }

 private:
  std::shared_ptr<Shared> shared_;
  cudaEvent_t done_;
};

std::string describe(const std::string& name, int rank, int size) {
  return str("NCCL communicator '", name, "' (rank ", rank, " of ", size, ")");
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& host, std::string name)
    : shared_(std::make_shared<Shared>()),
      host_(&host),
      name_(std::move(name)),
      rank_(host.rank()),
      size_(host.size()) {
  shared_->what = describe(name_, rank_, size_);
  // What can fail on one rank alone happens before the collective ncclCommInitRank, and the ranks
  // agree on it first: otherwise the others would wait there for a rank that gave up.
  ncclUniqueId id{};
  std::string failure;
  try {
    int version = 0;
    NCCL_CHECK(ncclGetVersion(&version));
    OPD_REQUIRE(version >= NCCL_VERSION(2, 18, 0), "NCCL ", version, " is loaded; opd needs 2.18 or newer");
    CUDA_CHECK(cudaGetDevice(&device_));
    shared_->device = device_;
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreate(&stream));  // blocking: ordered with the legacy default stream
    own_stream_.reset(stream, [](cudaStream_t s) { cudaStreamDestroy(s); });
    int* word = nullptr;
    CUDA_CHECK(cudaMalloc(&word, sizeof(int)));
    barrier_word_.reset(word);
    CUDA_CHECK(cudaMemset(word, 0, sizeof(int)));
    if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  } catch (const Error& e) {
    failure = e.what();
  }
  int64_t failed = failure.empty() ? 0 : 1;
  host.all_reduce(&failed, 1, ReduceOp::kSum);
  if (failed > 0) {
    if (!failure.empty()) throw Error(str(shared_->what, ": cannot set up on this rank: ", failure));
    throw Error(str(shared_->what, ": ", failed, " other rank(s) could not set up (see their errors)"));
  }
  host.broadcast(&id, sizeof(id), 0);
  stream_ = own_stream_.get();
  ncclComm_t comm = nullptr;
  NCCL_CHECK(ncclCommInitRank(&comm, size_, id, rank_));
  shared_->comm = comm;
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<Shared> shared, std::unique_ptr<Communicator> owned_host,
                                   std::string name, const NcclCommunicator& parent)
    : shared_(std::move(shared)),
      owned_host_(std::move(owned_host)),
      host_(owned_host_.get()),
      name_(std::move(name)),
      rank_(host_->rank()),
      size_(host_->size()),
      device_(parent.device_),
      own_stream_(parent.own_stream_),
      stream_(parent.stream_),
      stream_ordered_(parent.stream_ordered_) {
  DeviceGuard on(device_);
  int* word = nullptr;
  CUDA_CHECK(cudaMalloc(&word, sizeof(int)));
  barrier_word_.reset(word);
  CUDA_CHECK(cudaMemset(word, 0, sizeof(int)));
}

NcclCommunicator::~NcclCommunicator() { shared_->close(std::uncaught_exceptions() > 0); }

ncclComm_t NcclCommunicator::handle() const { return shared_->live(); }

void NcclCommunicator::synchronize() {
  DeviceGuard on(device_);
  shared_->wait_stream(stream_);
}

void NcclCommunicator::finish() {
  if (!stream_ordered_) shared_->wait_stream(stream_);
}

template <typename T>
void NcclCommunicator::all_reduce_typed(T* data, size_t n, ReduceOp op, ncclDataType_t type) {
  if (n == 0) return;  // every rank passes the same n, so all skip alike
  require_device_buffer(*shared_, data, "all_reduce", "data");
  DeviceGuard on(device_);
  NCCL_CHECK(ncclAllReduce(data, data, n, type, op == ReduceOp::kSum ? ncclSum : ncclMax, shared_->live(), stream_));
  finish();
}
void NcclCommunicator::all_reduce(float* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, op, ncclFloat32); }
void NcclCommunicator::all_reduce(double* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, op, ncclFloat64); }
void NcclCommunicator::all_reduce(int64_t* data, size_t n, ReduceOp op) { all_reduce_typed(data, n, op, ncclInt64); }
void NcclCommunicator::all_reduce(__nv_bfloat16* data, size_t n, ReduceOp op) {
  all_reduce_typed(data, n, op, ncclBfloat16);
}

void NcclCommunicator::all_gather(const void* in, size_t bytes, void* out) {
  if (bytes == 0) return;
  require_device_buffer(*shared_, in, "all_gather", "input");
  require_device_buffer(*shared_, out, "all_gather", "output");
  const auto i = reinterpret_cast<uintptr_t>(in), o = reinterpret_cast<uintptr_t>(out);
  const bool in_place = i == o + rank_ * bytes;
  const bool apart = i + bytes <= o || o + size_ * bytes <= i;
  OPD_REQUIRE(in_place || apart, shared_->what,
              ": all_gather: the input overlaps the output other than as this rank's slice (in place)");
  DeviceGuard on(device_);
  NCCL_CHECK(ncclAllGather(in, out, bytes, ncclUint8, shared_->live(), stream_));
  finish();
}

void NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
  require_peer(*shared_, root, size_, "broadcast", "root");
  if (bytes == 0) return;
  require_device_buffer(*shared_, data, "broadcast", "data");
  DeviceGuard on(device_);
  NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, shared_->live(), stream_));
  finish();
}

// NCCL has no barrier: a one-word all-reduce that every rank's stream must reach, then the host
// waits for it, so each rank has entered barrier() and finished its earlier operations here.
void NcclCommunicator::barrier() {
  DeviceGuard on(device_);
  NCCL_CHECK(ncclAllReduce(barrier_word_.get(), barrier_word_.get(), 1, ncclInt32, ncclSum, shared_->live(), stream_));
  shared_->wait_stream(stream_);
}

std::unique_ptr<Request> NcclCommunicator::after_transfer() {
  cudaEvent_t done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  const cudaError_t recorded = cudaEventRecord(done, stream_);
  if (recorded != cudaSuccess) {
    cudaEventDestroy(done);
    fail_call("cudaEventRecord(done, stream_)", cudaGetErrorString(recorded), __FILE__, __LINE__);
  }
  return std::make_unique<NcclRequest>(shared_, done);
}

std::unique_ptr<Request> NcclCommunicator::isend(const void* data, size_t bytes, int dest, int /*tag: NCCL has none*/) {
  require_peer(*shared_, dest, size_, "isend", "destination");
  OPD_REQUIRE(dest != rank_, shared_->what, ": isend to itself cannot complete alone on NCCL; use sendrecv");
  if (bytes == 0) return std::make_unique<NcclRequest>(shared_, nullptr);
  require_device_buffer(*shared_, data, "isend", "send");
  DeviceGuard on(device_);
  NCCL_CHECK(ncclSend(data, bytes, ncclUint8, dest, shared_->live(), stream_));
  return after_transfer();
}

std::unique_ptr<Request> NcclCommunicator::irecv(void* data, size_t bytes, int source, int /*tag: NCCL has none*/) {
  require_peer(*shared_, source, size_, "irecv", "source");
  OPD_REQUIRE(source != rank_, shared_->what, ": irecv from itself cannot complete alone on NCCL; use sendrecv");
  if (bytes == 0) return std::make_unique<NcclRequest>(shared_, nullptr);
  require_device_buffer(*shared_, data, "irecv", "receive");
  DeviceGuard on(device_);
  NCCL_CHECK(ncclRecv(data, bytes, ncclUint8, source, shared_->live(), stream_));
  return after_transfer();
}

std::unique_ptr<Request> NcclCommunicator::sendrecv(const void* send, size_t send_bytes, int dest, void* recv,
                                                    size_t recv_bytes, int source) {
  require_peer(*shared_, dest, size_, "sendrecv", "destination");
  require_peer(*shared_, source, size_, "sendrecv", "source");
  if (send_bytes > 0) require_device_buffer(*shared_, send, "sendrecv", "send");
  if (recv_bytes > 0) require_device_buffer(*shared_, recv, "sendrecv", "receive");
  if (send_bytes == 0 && recv_bytes == 0) return std::make_unique<NcclRequest>(shared_, nullptr);
  DeviceGuard on(device_);
  const ncclComm_t comm = shared_->live();
  // The group is closed even when a call in it failed, so that NCCL is not left inside one.
  NCCL_CHECK(ncclGroupStart());
  const ncclResult_t sent = send_bytes > 0 ? ncclSend(send, send_bytes, ncclUint8, dest, comm, stream_) : ncclSuccess;
  const ncclResult_t received =
      recv_bytes > 0 ? ncclRecv(recv, recv_bytes, ncclUint8, source, comm, stream_) : ncclSuccess;
  NCCL_CHECK(ncclGroupEnd());
  if (sent != ncclSuccess)
    fail_call("ncclSend(send, send_bytes, ncclUint8, dest, comm, stream_)", nccl_error_detail(sent), __FILE__,
              __LINE__);
  if (received != ncclSuccess)
    fail_call("ncclRecv(recv, recv_bytes, ncclUint8, source, comm, stream_)", nccl_error_detail(received), __FILE__,
              __LINE__);
  return after_transfer();
}

bool NcclCommunicator::probe(int source, int tag, Incoming& found) { return host_->probe(source, tag, found); }

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  std::unique_ptr<Communicator> host_child = host_->split(color, key, name);
  DeviceGuard on(device_);
  auto shared = std::make_shared<Shared>();
  shared->device = device_;
  NCCL_CHECK(ncclCommSplit(shared_->live(), color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &shared->comm, nullptr));
  OPD_REQUIRE((host_child == nullptr) == (shared->comm == nullptr), shared_->what, ": split '", name,
              "': MPI and NCCL disagree on whether this rank joins");
  if (host_child == nullptr) return nullptr;
  shared->what = describe(name, host_child->rank(), host_child->size());
  // Both order by key, then by rank here; a difference would pair NCCL data with the wrong MPI peer.
  int nccl_rank = -1, nccl_size = -1;
  NCCL_CHECK(ncclCommUserRank(shared->comm, &nccl_rank));
  NCCL_CHECK(ncclCommCount(shared->comm, &nccl_size));
  OPD_REQUIRE(nccl_rank == host_child->rank() && nccl_size == host_child->size(), shared->what,
              ": ncclCommSplit made it rank ", nccl_rank, " of ", nccl_size, ", MPI rank ", host_child->rank(), " of ",
              host_child->size());
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(shared), std::move(host_child), name, *this));
}

}  // namespace opd
