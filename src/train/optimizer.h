// AdamW over the model's flat buffer of what it trains (every parameter, or under LoRA the
// adapters only), with a learning-rate schedule and global-norm gradient clipping; a non-finite
// gradient norm stops the run naming the step.
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

// One AdamW for every device: its state lives where the model's training memory is
// (Transformer::training_memory): host arrays here, or the device arena of a model on the GPU,
// where the update also refreshes the bf16 weights the forward reads. A model moved to the GPU
// after the optimizer was made takes the moments with it on the next call.
class AdamW {
 public:
  AdamW(Transformer& model, const OptimizerOptions& options);
  // Applies the gradients * grad_scale at training step `step` (1-based); returns the norm of the
  // scaled gradient before clipping. (The trainer sums per-token gradients and scales by 1 / tokens.)
  double step(int step, double grad_scale = 1.0);
  double lr_at(int step) const;
  // The moments and update count, for checkpoints (copied back from the device on the GPU path);
  // restore() checks the sizes.
  const std::vector<float>& m() const;
  const std::vector<float>& v() const;
  int updates() const { return t_; }
  void restore(std::vector<float> m, std::vector<float> v, int updates);

 private:
  // Ranges of the gradient whose squares are summed together: the whole buffer, or under TP the
  // split tensors (summed over the group) apart from the replicated ones (counted once).
  struct NormRange {
    size_t begin, end;
    bool replicated;
  };
  TrainingMemory memory() const;  // the model's, with the moments where they live
  double grad_norm(const TrainingMemory& mem) const;

  Transformer& model_;
  OptimizerOptions o_;
  std::vector<NormRange> ranges_;
  mutable std::vector<float> m_, v_;  // host state; on the GPU path the last copy back from the device
  std::vector<unsigned char> decay_mask_;
  mutable bool on_device_ = false;  // the moments have moved to the model's device memory
  int t_ = 0;
};

}  // namespace opd
