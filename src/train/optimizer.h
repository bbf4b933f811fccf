// AdamW over the model's flat parameter buffer, with a learning-rate schedule and global-norm
// gradient clipping; a non-finite gradient norm stops the run naming the step.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/transformer.h"

namespace opd {

struct OptimizerOptions {
  double lr = 1e-3;
  double min_lr_ratio = 0.1;     // cosine and wsd schedules end at lr * min_lr_ratio
  std::string schedule = "constant";  // constant | cosine | wsd (warm-up, stable, linear decay)
  int decay_steps = 0;           // wsd: the last decay_steps steps decay linearly
  int warmup_steps = 0;
  int total_steps = 1;
  double beta1 = 0.9, beta2 = 0.99, eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;        // max global gradient norm; 0 disables clipping
};

// The learning rate at training step `step` (1-based): linear warm-up, then constant, cosine, or
// wsd: constant, then a linear decay over the last decay_steps steps (a cool-down; resuming a
// constant-lr run's checkpoint with wsd anneals it from there).
// Validates the schedule's name.
double scheduled_lr(const OptimizerOptions& options, int step);
void check_schedule(const OptimizerOptions& options);

class GpuAdamW;

// On a model that runs on the GPU (Transformer::use_gpu), from the first step on the update runs
// there (train/gpu_optimizer.h), starting from the host state (fresh or restored).
class AdamW {
 public:
  AdamW(Transformer& model, const OptimizerOptions& options);
  // Applies model.grads() * grad_scale at training step `step` (1-based); returns the norm of the
  // scaled gradient before clipping. (The trainer sums per-token gradients and scales by 1 / tokens.)
  double step(int step, double grad_scale = 1.0);
  double lr_at(int step) const;

  // The moments and update count, for checkpoints; restore() checks the sizes. On the GPU path
  // the moments live on the device (with the model's master weights) and are copied back here.
  const std::vector<float>& m() const;
  const std::vector<float>& v() const;
  int updates() const { return t_; }
  void restore(std::vector<float> m, std::vector<float> v, int updates);

 private:
  Transformer& model_;
  OptimizerOptions o_;
  mutable std::vector<float> m_, v_;  // on the GPU path: the last copy back from the device
  std::vector<unsigned char> decay_mask_;
  int t_ = 0;
  std::shared_ptr<GpuAdamW> gpu_;  // shared_ptr: complete only where CUDA is built
  // On the GPU path: the device's copy of one moment into `host` ("adam.m" or "adam.v").
  void fetch_from_gpu(const char* moment, std::vector<float>& host) const;
};

}  // namespace opd
