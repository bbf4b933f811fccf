// The SPMD rank layout (docs/ARCHITECTURE.md §4): world = teacher ranks + a student tp x dp grid, computed
// and validated in one place. Students come first, so world rank 0 is the student that writes the
// run directory; TP groups are contiguous ranks (Megatron order: tp fastest, then dp).
#pragma once
#include <string>
#include <vector>

#include "core/options.h"

namespace opd {

struct LayoutOptions {
  int teacher_ranks = 0;  // 0: the teacher is colocated on the student ranks
  int teacher_tp = 1;     // ranks per teacher replica
  int tp = 1;             // student tensor-parallel degree
  int dp = 0;             // student data-parallel degree; 0: derived from the world size
};

enum class Role { kStudent, kTeacher };

// Where one rank sits.
struct Place {
  Role role = Role::kStudent;
  int tp_rank = 0, dp_rank = 0;          // students
  int replica = 0, teacher_tp_rank = 0;  // teachers
};

// Where a rank runs: its host, its rank among the ranks on that host (and which launcher variable
// said so), and its device ("cpu", "cuda:N").
struct RankSite {
  std::string host = "?", local = "?", device = "?";
};

struct Layout {
  int world = 1;
  int teacher_ranks = 0, teacher_tp = 1, teacher_replicas = 0;
  int tp = 1, dp = 1;

  int student_ranks() const { return tp * dp; }
  Place place(int rank) const;
  // World rank of a student grid cell, and of a teacher replica's ranks.
  int student_rank(int tp_rank, int dp_rank) const { return dp_rank * tp + tp_rank; }
  int teacher_rank(int replica, int teacher_tp_rank = 0) const {
    return student_ranks() + replica * teacher_tp + teacher_tp_rank;
  }
  // The table --dry-run prints: one line per rank with its role, coordinates, and where it runs
  // (sites[r]; missing entries print as "?").
  std::string table(const std::vector<RankSite>& sites = {}) const;
};

// The sizes of a model that tensor parallelism splits (whole heads, kv heads, FFN units and
// vocabulary rows per rank).
struct SplitSizes {
  int n_heads = 0, n_kv_heads = 0, ffn_dim = 0, vocab = 0;
};

// Validates the options against the world size and, where given, the models' sizes (tp must
// divide the student's heads, kv heads, ffn and vocab; teacher_tp the teacher's). Errors name the
// option and the numbers.
Layout make_layout(const LayoutOptions& options, int world, const SplitSizes* student = nullptr,
                   const SplitSizes* teacher = nullptr);

// --teacher-ranks, --teacher-tp, --tp, --dp.
void add_layout_options(po::options_description& desc);
LayoutOptions layout_options(const po::variables_map& vm);

}  // namespace opd
