#include "model/shards.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

std::vector<float> take_shards(const std::vector<ParamSpec>& local_specs, const std::vector<float>& whole) {
  std::vector<float> local(total_size(local_specs));
  size_t at = 0;  // whole tensors follow each other in the same order
  for (const ParamSpec& s : local_specs) {
    const size_t full = size_t(s.shard.full_size());
    OPD_REQUIRE(at + full <= whole.size(), "take_shards: a whole buffer of ", whole.size(), " floats ends inside ",
                s.name);
    copy_shard_out(whole.data() + at, s.shard, local.data() + s.offset);
    at += full;
  }
  OPD_REQUIRE(at == whole.size(), "take_shards: a whole buffer of ", whole.size(), " floats for a model of ", at);
  return local;
}

std::vector<float> gather_shards(Communicator& tp, const ModelConfig& cfg, const std::vector<float>& local) {
  const int P = tp.size();
  const std::vector<ParamSpec> whole_specs = param_specs(cfg);
  std::vector<float> all(local.size() * P), whole(total_size(whole_specs));
  tp.all_gather(local.data(), local.size() * sizeof(float), all.data());
  for (int r = 0; r < P; ++r) {
    const std::vector<ParamSpec> specs = param_specs(cfg, P, r);
    OPD_REQUIRE(total_size(specs) == local.size(), "gather_shards: rank ", r, " holds ", total_size(specs),
                " floats, this one ", local.size());
    for (size_t i = 0; i < specs.size(); ++i)
      copy_shard_in(all.data() + r * local.size() + specs[i].offset, specs[i].shard, whole.data() + whole_specs[i].offset);
  }
  return whole;
}

std::vector<float> gather_columns(Communicator& tp, const float* local, int N, int local_cols) {
  const int P = tp.size();
  const size_t block = size_t(N) * local_cols;
  std::vector<float> all(block * P), rows(block * P);
  tp.all_gather(local, block * sizeof(float), all.data());
  for (int r = 0; r < P; ++r)
    for (int n = 0; n < N; ++n)
      std::copy_n(all.data() + r * block + size_t(n) * local_cols, local_cols,
                  rows.data() + size_t(n) * local_cols * P + size_t(r) * local_cols);
  return rows;
}

std::vector<float> slice_columns(const float* rows, int N, int width, int begin, int cols) {
  std::vector<float> out(size_t(N) * cols);
  for (int n = 0; n < N; ++n) std::copy_n(rows + size_t(n) * width + begin, cols, out.data() + size_t(n) * cols);
  return out;
}

}  // namespace opd
