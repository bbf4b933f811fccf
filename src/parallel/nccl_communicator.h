// The NCCL implementation of the communicator (docs/ARCHITECTURE.md §4): collectives and point-to-point
// transfers between GPUs, for tensor and data parallelism and for token ids and scores between
// students and teachers. Only in builds with NCCL (OPD_WITH_NCCL). Every NCCL call goes through
// NCCL_CHECK, every CUDA call through CUDA_CHECK.
//
// Built from the MPI communicator of the same ranks (its "host" communicator): rank 0 makes the
// NCCL unique id and broadcasts it there, and every rank joins with ncclCommInitRank on its
// current CUDA device (select it with cudaSetDevice first, see bind_gpu in parallel/gpu_binding.h). One GPU
// per rank: NCCL refuses two ranks of one communicator on the same device.
//
// The contract, where it differs from the MPI communicator's:
// - Buffers are device pointers (cudaMalloc'd on this communicator's device, or managed memory);
//   a host pointer is an Error. Host data (request headers, scalars, the helpers of
//   communicator.h such as all_reduce_value and same_on_all_ranks) goes over host().
// - Every operation is enqueued on stream(): a stream the communicator owns, created as a
//   blocking stream so that it runs after work already queued on the legacy default stream (where
//   opd's kernels run unless given another stream) and before work queued there later; or the
//   caller's own stream (set_stream, e.g. the model's). Inputs written on any other stream must be
//   ordered before the call by the caller (an event).
// - Completion. By default (stream_ordered() false) a collective returns with its result in
//   place, as MPI's does: the host waits for stream() to drain, so existing callers stay correct.
//   With set_stream_ordered(true) a collective returns once enqueued: the result is there for
//   later work on stream() and for the host after synchronize(). Use it where the producer and the
//   consumer of the data are kernels on the same stream (gradients, activations), so the host never
//   stalls the GPU. barrier() always waits: it is a promise about the host. Communicators made
//   separately each own a stream: in stream-ordered mode give them one (set_stream), see split().
// - isend/irecv return at once in both modes; their Request's test()/wait() watch a CUDA event
//   recorded after the transfer. NCCL has no tags and no matching: `tag` is ignored, `bytes` must
//   equal the peer's, and a send or receive holds up the device until the peer's side starts.
//   The operations of one communicator run one after another in the order they were posted, so
//   two ranks must post their transfers with each other in the same order: a student posts "send
//   request, then receive reply", not the MPI path's "irecv reply, then isend request", which
//   would leave each side waiting on the other. sendrecv() is an exchange in both directions at
//   once (a ring), safe as one NCCL group. The first transfer between two ranks also holds up the
//   host until the peer posts its side (NCCL connects peers lazily).
// - probe(): NCCL cannot see a message before receiving it. probe() asks host() instead: a
//   teacher's request header (its size and kind) goes over MPI and is probed there, and the
//   payload that the header announces follows over NCCL with the size it gave.
// - split(): ncclCommSplit (NCCL >= 2.18) together with the host communicator's split, so the
//   child has an MPI communicator of the same ranks (for probe() and host data) whose ranks match
//   its NCCL ranks (checked). The child works on its parent's stream and mode: communicators
//   used from one thread must not run concurrently on different streams, or their operations can
//   deadlock across ranks.
// - Errors. A failed call throws. While waiting, an asynchronous NCCL error (a network failure,
//   say) throws, and any later use of the communicator throws too. After an error, and when the
//   communicator is destroyed while an exception unwinds, its NCCL handle is neither aborted nor
//   finalized but left to the process's end: both synchronize with the node's other ranks, which
//   may be dead or stuck waiting for this one, and the rank must get to report its error and end
//   the job (MPI_Abort, as on every error in opd) rather than hang. A dead peer that reports
//   nothing (a killed process) is noticed by mpirun, which ends the job.
// - Threads: one thread at a time per communicator and its children (NCCL's rule).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace opd {

namespace nccl_detail {
struct Shared;  // the NCCL handle and what requests need of it; outlives the communicator if a request does
struct DeviceFree {
  void operator()(int* p) const { cudaFree(p); }
};
}  // namespace nccl_detail

class NcclCommunicator : public Communicator {
 public:
  // Collective over `host`, which must outlive this communicator and hold host memory (MPI). Every
  // rank must have selected its CUDA device; a rank that cannot set up (no device, no driver)
  // makes every rank throw rather than leave the others waiting.
  NcclCommunicator(Communicator& host, std::string name);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  bool device_buffers() const override { return true; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  void all_reduce(float* data, size_t n, ReduceOp op) override;
  void all_reduce(double* data, size_t n, ReduceOp op) override;
  void all_reduce(int64_t* data, size_t n, ReduceOp op) override;
  // bf16 activations (tensor parallelism), summed by NCCL in bf16.
  void all_reduce(__nv_bfloat16* data, size_t n, ReduceOp op);
  // In place when `in` is out + rank() * bytes; otherwise in and out must not overlap.
  void all_gather(const void* in, size_t bytes, void* out) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  std::unique_ptr<Request> isend(const void* data, size_t bytes, int dest, int tag) override;
  std::unique_ptr<Request> irecv(void* data, size_t bytes, int source, int tag) override;
  // Sends to `dest` and receives from `source` as one NCCL group, so that both progress together.
  std::unique_ptr<Request> sendrecv(const void* send, size_t send_bytes, int dest, void* recv, size_t recv_bytes,
                                    int source);
  bool probe(int source, int tag, Incoming& found) override;  // on host()
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // The MPI communicator of the same ranks, in the same order.
  Communicator& host() { return *host_; }
  int device() const { return device_; }
  ncclComm_t handle() const;
  cudaStream_t stream() const { return stream_; }
  // Later operations go on `stream` (not owned: it must outlive them); 0 is the legacy default stream.
  void set_stream(cudaStream_t stream) { stream_ = stream; }
  bool stream_ordered() const { return stream_ordered_; }
  void set_stream_ordered(bool on) { stream_ordered_ = on; }
  // Waits for everything enqueued on stream(), watching for asynchronous NCCL errors.
  void synchronize() override;

 private:
  NcclCommunicator(std::shared_ptr<nccl_detail::Shared> shared, std::unique_ptr<Communicator> owned_host,
                   std::string name, const NcclCommunicator& parent);
  template <typename T>
  void all_reduce_typed(T* data, size_t n, ReduceOp op, ncclDataType_t type);
  void finish();  // what every collective does last: wait unless stream-ordered
  std::unique_ptr<Request> after_transfer();

  std::shared_ptr<nccl_detail::Shared> shared_;
  std::unique_ptr<Communicator> owned_host_;  // a split's MPI communicator; null for the first one
  Communicator* host_;
  std::string name_;
  int rank_ = 0, size_ = 1, device_ = 0;
  std::shared_ptr<CUstream_st> own_stream_;  // shared with split children, who work on it too
  cudaStream_t stream_ = nullptr;
  bool stream_ordered_ = false;
  std::unique_ptr<int, nccl_detail::DeviceFree> barrier_word_;  // device scratch the barrier all-reduces
};

}  // namespace opd
