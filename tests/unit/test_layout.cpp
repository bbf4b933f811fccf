// The rank layout: coordinates of every rank, the derived dp, and errors that name the numbers.
#include <gtest/gtest.h>

#include "core/error.h"
#include "parallel/layout.h"

namespace {

using opd::Layout;
using opd::LayoutOptions;
using opd::Role;

opd::SplitSizes shape(int heads, int kv, int ffn, int vocab) { return {heads, kv, ffn, vocab}; }

std::string error_of(const LayoutOptions& o, int world, const opd::SplitSizes* s = nullptr,
                     const opd::SplitSizes* t = nullptr) {
  try {
    opd::make_layout(o, world, s, t);
  } catch (const opd::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Layout, SingleProcessIsOneColocatedStudent) {
  const Layout l = opd::make_layout({}, 1);
  EXPECT_EQ(l.tp, 1);
  EXPECT_EQ(l.dp, 1);
  EXPECT_EQ(l.teacher_replicas, 0);
  EXPECT_EQ(l.place(0).role, Role::kStudent);
}

TEST(Layout, StudentsFirstTpFastestThenTeacherReplicas) {
  LayoutOptions o;
  o.teacher_ranks = 4;
  o.teacher_tp = 2;
  o.tp = 2;  // dp derived: (10 - 4) / 2 = 3
  const Layout l = opd::make_layout(o, 10);
  EXPECT_EQ(l.dp, 3);
  EXPECT_EQ(l.teacher_replicas, 2);
  const opd::Place p3 = l.place(3);
  EXPECT_EQ(p3.role, Role::kStudent);
  EXPECT_EQ(p3.tp_rank, 1);
  EXPECT_EQ(p3.dp_rank, 1);
  EXPECT_EQ(l.student_rank(1, 1), 3);
  const opd::Place p9 = l.place(9);
  EXPECT_EQ(p9.role, Role::kTeacher);
  EXPECT_EQ(p9.replica, 1);
  EXPECT_EQ(p9.teacher_tp_rank, 1);
  EXPECT_EQ(l.teacher_rank(1, 1), 9);
  EXPECT_EQ(l.teacher_rank(0), 6);
  std::vector<opd::RankSite> sites;
  for (int r = 0; r < 10; ++r)
    sites.push_back({std::string(1, static_cast<char>('a' + r)), std::to_string(r % 8), r < 6 ? "cuda:" + std::to_string(r % 8) : "cpu"});
  const std::string t = l.table(sites);
  EXPECT_NE(t.find("world 10 = 6 student ranks (tp 2 x dp 3) + 4 teacher ranks (2 replicas x teacher-tp 2)"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("   3  student  tp 1 dp 1                3  cuda:3     d\n"), std::string::npos) << t;
  EXPECT_NE(t.find("   9  teacher  replica 1 tp 1           1  cpu        j\n"), std::string::npos) << t;
  EXPECT_NE(l.table().find("   9  teacher  replica 1 tp 1           ?  ?          ?\n"), std::string::npos) << l.table();
}

TEST(Layout, ErrorsNameTheNumbers) {
  LayoutOptions o;
  o.tp = 2;
  o.dp = 2;
  EXPECT_NE(error_of(o, 3).find("--tp 2 x --dp 2 = 4 student ranks, but world 3 - teacher ranks 0 = 3"),
            std::string::npos)
      << error_of(o, 3);
  o.dp = 0;
  EXPECT_NE(error_of(o, 3).find("the 3 student ranks (world 3 - teacher ranks 0) are not a multiple of --tp = 2"),
            std::string::npos)
      << error_of(o, 3);
  LayoutOptions t;
  t.teacher_ranks = 3;
  t.teacher_tp = 2;
  EXPECT_NE(error_of(t, 5).find("--teacher-ranks = 3 is not a multiple of --teacher-tp = 2"), std::string::npos);
  t.teacher_ranks = 2;
  EXPECT_NE(error_of(t, 2).find("--teacher-ranks = 2 leaves no student rank in a world of 2"), std::string::npos);
}

TEST(Layout, TpMustDivideHeadsKvHeadsFfnAndVocab) {
  LayoutOptions o;
  o.tp = 2;
  const auto good = shape(4, 2, 192, 20);
  EXPECT_EQ(error_of(o, 2, &good), "");
  struct Case {
    opd::SplitSizes c;
    const char* message;
  } cases[] = {{shape(3, 1, 192, 20), "--tp = 2 does not divide the student's n_heads = 3"},
               {shape(4, 1, 192, 20), "--tp = 2 does not divide the student's n_kv_heads = 1"},
               {shape(4, 2, 191, 20), "--tp = 2 does not divide the student's ffn_dim = 191"},
               {shape(4, 2, 192, 21), "--tp = 2 does not divide the student's vocab = 21"}};
  for (const auto& k : cases)
    EXPECT_NE(error_of(o, 2, &k.c).find(k.message), std::string::npos) << error_of(o, 2, &k.c);
  LayoutOptions t;
  t.teacher_ranks = 2;
  t.teacher_tp = 2;
  const auto teacher = shape(6, 3, 384, 20);
  EXPECT_NE(error_of(t, 3, &good, &teacher).find("--teacher-tp = 2 does not divide the teacher's n_kv_heads = 3"),
            std::string::npos)
      << error_of(t, 3, &good, &teacher);
}

}  // namespace
