#include "parallel/layout.h"

#include <cstdio>

#include "core/error.h"

namespace opd {

namespace {

void check_divides(int parts, const char* option, const SplitSizes& m, const char* which) {
  const struct {
    const char* name;
    int value;
  } dims[] = {{"n_heads", m.n_heads}, {"n_kv_heads", m.n_kv_heads}, {"ffn_dim", m.ffn_dim}, {"vocab", m.vocab}};
  for (const auto& d : dims)
    OPD_REQUIRE(d.value % parts == 0, "rank layout: ", option, " = ", parts, " does not divide the ", which, "'s ",
                d.name, " = ", d.value);
}

}  // namespace

Place Layout::place(int rank) const {
  OPD_REQUIRE(rank >= 0 && rank < world, "rank layout: rank ", rank, " is outside the world of ", world);
  Place p;
  if (rank < student_ranks()) {
    p.role = Role::kStudent;
    p.tp_rank = rank % tp;
    p.dp_rank = rank / tp;
  } else {
    p.role = Role::kTeacher;
    p.replica = (rank - student_ranks()) / teacher_tp;
    p.teacher_tp_rank = (rank - student_ranks()) % teacher_tp;
  }
  return p;
}

std::string Layout::table(const std::vector<RankSite>& sites) const {
  std::string out = str("# rank layout: world ", world, " = ", student_ranks(), " student ranks (tp ", tp, " x dp ", dp,
                        ") + ", teacher_ranks, " teacher ranks");
  if (teacher_ranks > 0)
    out += str(" (", teacher_replicas, " replicas x teacher-tp ", teacher_tp, ")");
  else
    out += " (teacher colocated on the student ranks)";
  out += "\nrank  role     coordinates          local  device     host\n";
  char line[512];
  const RankSite unknown;
  for (int r = 0; r < world; ++r) {
    const Place p = place(r);
    const std::string coord = p.role == Role::kStudent ? str("tp ", p.tp_rank, " dp ", p.dp_rank)
                                                       : str("replica ", p.replica, " tp ", p.teacher_tp_rank);
    const RankSite& s = r < static_cast<int>(sites.size()) ? sites[r] : unknown;
    std::snprintf(line, sizeof(line), "%4d  %-7s  %-19s  %5s  %-9s  %s\n", r,
                  p.role == Role::kStudent ? "student" : "teacher", coord.c_str(), s.local.c_str(), s.device.c_str(),
                  s.host.c_str());
    out += line;
  }
  return out;
}

Layout make_layout(const LayoutOptions& o, int world, const SplitSizes* student, const SplitSizes* teacher) {
  OPD_REQUIRE(world >= 1, "rank layout: world size ", world, " must be at least 1");
  OPD_REQUIRE(o.teacher_ranks >= 0, "rank layout: --teacher-ranks = ", o.teacher_ranks, " must not be negative");
  OPD_REQUIRE(o.teacher_tp >= 1, "rank layout: --teacher-tp = ", o.teacher_tp, " must be at least 1");
  OPD_REQUIRE(o.tp >= 1, "rank layout: --tp = ", o.tp, " must be at least 1");
  OPD_REQUIRE(o.dp >= 0, "rank layout: --dp = ", o.dp, " must not be negative (0: derived)");
  OPD_REQUIRE(o.teacher_ranks % o.teacher_tp == 0, "rank layout: --teacher-ranks = ", o.teacher_ranks,
              " is not a multiple of --teacher-tp = ", o.teacher_tp);
  OPD_REQUIRE(o.teacher_ranks < world, "rank layout: --teacher-ranks = ", o.teacher_ranks,
              " leaves no student rank in a world of ", world, " ranks");
  const int students = world - o.teacher_ranks;
  Layout l;
  l.world = world;
  l.teacher_ranks = o.teacher_ranks;
  l.teacher_tp = o.teacher_tp;
  l.teacher_replicas = o.teacher_ranks / o.teacher_tp;
  l.tp = o.tp;
  if (o.dp == 0) {
    OPD_REQUIRE(students % o.tp == 0, "rank layout: the ", students, " student ranks (world ", world,
                " - teacher ranks ", o.teacher_ranks, ") are not a multiple of --tp = ", o.tp);
    l.dp = students / o.tp;
  } else {
    l.dp = o.dp;
    OPD_REQUIRE(o.tp * o.dp == students, "rank layout: --tp ", o.tp, " x --dp ", o.dp, " = ", o.tp * o.dp,
                " student ranks, but world ", world, " - teacher ranks ", o.teacher_ranks, " = ", students);
  }
  if (student) check_divides(l.tp, "--tp", *student, "student");
  if (teacher && l.teacher_ranks > 0) check_divides(l.teacher_tp, "--teacher-tp", *teacher, "teacher");
  if (teacher && l.teacher_ranks == 0)
    check_divides(l.tp, "--tp (the colocated teacher is sharded like the student)", *teacher, "teacher");
  return l;
}

void add_layout_options(po::options_description& desc) {
  desc.add_options()("teacher-ranks",
                     po::value<int>()->default_value(0)->notifier(in_range("teacher-ranks", 0, 1 << 20)),
                     "ranks that serve the teacher (0: the teacher runs on the student ranks)")(
      "teacher-tp", po::value<int>()->default_value(1)->notifier(in_range("teacher-tp", 1, 1 << 20)),
      "tensor-parallel ranks per teacher replica")(
      "tp", po::value<int>()->default_value(1)->notifier(in_range("tp", 1, 1 << 20)), "student tensor parallelism")(
      "dp", po::value<int>()->default_value(0)->notifier(in_range("dp", 0, 1 << 20)),
      "student data parallelism (0: the student ranks / tp)");
}

LayoutOptions layout_options(const po::variables_map& vm) {
  LayoutOptions o;
  o.teacher_ranks = vm["teacher-ranks"].as<int>();
  o.teacher_tp = vm["teacher-tp"].as<int>();
  o.tp = vm["tp"].as<int>();
  o.dp = vm["dp"].as<int>();
  return o;
}

}  // namespace opd
