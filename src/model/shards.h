// Rows of a vocabulary split over tensor-parallel ranks, between the whole [N, vocab] form a
// teacher's reply carries and each rank's columns.
#pragma once
#include <vector>

#include "parallel/communicator.h"

namespace opd {

// Rows [N, vocab] from each rank's columns [N, vocab / tp] (a TP teacher's log-softmax rows for the
// students); collective over `tp`.
std::vector<float> gather_columns(Communicator& tp, const float* local, int N, int local_cols);
// Columns [begin, begin + cols) of rows [N, width].
std::vector<float> slice_columns(const float* rows, int N, int width, int begin, int cols);

}  // namespace opd
