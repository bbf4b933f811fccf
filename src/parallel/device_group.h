// Collectives over arrays of device memory for the GPU model's tensor parallelism: over NCCL when
// every rank of the group drives a GPU of its own, otherwise through host memory over the group's
// MPI communicator. NCCL refuses two ranks of one communicator on one GPU, and a test machine (or
// an oversubscribed debugging job) may have one GPU for several ranks: those runs still compute
// the same sums, only slower. Only in a build with CUDA.
#pragma once
#ifdef OPD_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace opd {

// Whether every rank of `group` drives a different GPU (compared by device UUID); collective over
// `group`, whose ranks must each have selected their CUDA device. *why receives the reason when not.
bool ranks_have_own_gpus(Communicator& group, std::string* why = nullptr);

// The NCCL communicator over `group` when NCCL is built and every rank has its own GPU (collective),
// connected and with its buffers allocated; else null, with *why saying which.
std::unique_ptr<Communicator> device_group(Communicator& group, const std::string& name, std::string* why = nullptr);

// Sums device arrays over a group, in place, queued on `stream`: over `device` (an NCCL
// communicator of the same ranks, then working stream-ordered on `stream`, so the host never
// waits) when given, else through pinned host memory over `host` (the host waits for the copies).
// bf16 arrays are summed in fp32 on the host path and rounded once; NCCL sums them in bf16.
class DeviceAllReduce {
 public:
  DeviceAllReduce(Communicator& host, Communicator* device, cudaStream_t stream);
  ~DeviceAllReduce();
  DeviceAllReduce(const DeviceAllReduce&) = delete;
  DeviceAllReduce& operator=(const DeviceAllReduce&) = delete;

  void sum(__nv_bfloat16* data, size_t n);
  void sum(float* data, size_t n);
  int rank() const { return host_.rank(); }
  int size() const { return host_.size(); }
  bool over_nccl() const { return device_ != nullptr; }

 private:
  void* pinned(size_t bytes);  // a host staging buffer of at least `bytes`, reused between calls

  Communicator& host_;
  Communicator* device_;
  cudaStream_t stream_;
  void* pinned_ = nullptr;
  size_t pinned_bytes_ = 0;
};

}  // namespace opd
#endif  // OPD_WITH_CUDA
