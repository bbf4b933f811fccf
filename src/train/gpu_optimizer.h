// AdamW for a model on the GPU: the CPU optimizer's update (same schedule, clipping and decay
// mask) over the device's fp32 master weights and moments, refreshing the bf16 weights the next
// forward reads in the same pass. Only in a build with CUDA.
#pragma once
#ifdef OPD_WITH_CUDA
#include <vector>

#include "model/gpu_transformer.h"
#include "train/optimizer.h"

namespace opd {

class GpuAdamW {
 public:
  GpuAdamW(GpuTransformer& model, const OptimizerOptions& options);
  // Applies grads * grad_scale at training step `step` (1-based); returns the norm of the scaled
  // gradient before clipping (a non-finite one stops the run before the update, naming the step).
  double step(int step, double grad_scale = 1.0);
  int updates() const { return t_; }
  // The moments and update count to and from the host (checkpoints, resuming).
  void restore(const std::vector<float>& m, const std::vector<float>& v, int updates);
  // One moment ("adam.m" or "adam.v") into `out`.
  void download(const char* moment, std::vector<float>& out) const;

 private:
  double grad_sumsq() const;  // the squared norm of the whole model's gradient (over TP too)

  GpuTransformer& model_;
  OptimizerOptions o_;
  int t_ = 0;
};

}  // namespace opd
#endif  // OPD_WITH_CUDA
