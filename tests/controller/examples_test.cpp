// The commented example configurations that `meson install` ships load as
// they are: an admin who starts from them gets no error.
#include <gtest/gtest.h>

#include <string>

#include "config/loader.h"
#include "controller/topology.h"
#include "link-emulator/schedule.h"
#include "vmhost/vmhost_config.h"

namespace amber {
namespace {

const std::string kExamples = std::string(AMBER_SOURCE_DIR) + "/config/examples/";

TEST(Examples, DelayNodeLinks) {
  auto c = config::load_node_config(kExamples + "links.textproto");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->node_id, "dn1");
  ASSERT_EQ(c->links.size(), 2u);
}

TEST(Examples, CellularTracesAndSteps) {
  auto c = config::load_node_config(kExamples + "cellular.textproto");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  ASSERT_EQ(c->links.size(), 2u);
  const auto& down = *c->links[0].b_to_a.schedule;
  EXPECT_EQ(down.trace->ms.size(), 58'655u);
  EXPECT_EQ(down.segments.size(), 2u);
  EXPECT_EQ(c->links[0].a_to_b.schedule->trace->ms.size(), 19'101u);
  const auto& steps = *c->links[1].a_to_b.schedule;
  ASSERT_EQ(steps.segments.size(), 3u);
  EXPECT_EQ(steps.segments[1].rate_bps, 10'000'000u);
  EXPECT_EQ(steps.at_end, link::ScheduleEnd::kEnd);
}

TEST(Examples, VmHost) {
  auto c = controller::load_vmhost_config(kExamples + "vmhost.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->vms_size(), 2);
  EXPECT_TRUE(c->has_tls());
  EXPECT_EQ(c->store(), "/srv/amber/store");  // the topology's store
  EXPECT_EQ(c->controller_identity_size(), 1);
}

TEST(Examples, Topology) {
  auto t = controller::load_topology(kExamples + "topology.conf");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->proto.trigger_size(), 2);
  EXPECT_EQ(t->durations.periodic_interval_ns, 300'000'000'000);
  ASSERT_EQ(t->events.size(), 3u);
  EXPECT_EQ(t->events[2].at_ns, 1'202'000'000'000);
  EXPECT_EQ(t->events[2].change, "up");
}

}  // namespace
}  // namespace amber
