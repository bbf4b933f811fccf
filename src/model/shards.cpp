#include "model/shards.h"

#include <algorithm>

#include "core/error.h"

namespace opd {

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
