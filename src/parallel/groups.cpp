#include "parallel/groups.h"

#include "core/error.h"

namespace opd {

RankGroups make_groups(std::unique_ptr<Communicator> world, const Layout& layout) {
  OPD_REQUIRE(world->size() == layout.world, "rank layout: planned for ", layout.world, " ranks but the job has ",
              world->size());
  RankGroups g;
  g.layout = layout;
  g.place = layout.place(world->rank());
  const bool s = g.place.role == Role::kStudent;
  const int r = world->rank();
  g.students = world->split(s ? 0 : -1, r, "students");
  g.dp = world->split(s ? g.place.tp_rank : -1, r, "dp group");
  g.tp = world->split(s ? g.place.dp_rank : -1, r, "tp group");
  g.replica = world->split(s ? -1 : g.place.replica, r, "teacher replica");
  g.world = std::move(world);
  return g;
}

}  // namespace opd
