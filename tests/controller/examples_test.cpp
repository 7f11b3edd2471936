// The commented example configurations that `meson install` ships load as
// they are: an admin who starts from them gets no error.
#include <gtest/gtest.h>

#include <string>

#include "config/loader.h"
#include "controller/topology.h"
#include "controller/vmhost_config.h"

namespace amber {
namespace {

const std::string kExamples = std::string(AMBER_SOURCE_DIR) + "/config/examples/";

TEST(Examples, DelayNodeLinks) {
  auto c = config::load_node_config(kExamples + "links.textproto");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->node_id, "dn1");
  ASSERT_EQ(c->links.size(), 2u);
}

TEST(Examples, VmHost) {
  auto c = controller::load_vmhost_config(kExamples + "vmhost.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->vms_size(), 2);
  EXPECT_TRUE(c->has_tls());
}

TEST(Examples, Topology) {
  auto t = controller::load_topology(kExamples + "topology.conf");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->proto.trigger_size(), 2);
  EXPECT_EQ(t->durations.periodic_interval_ns, 300'000'000'000);
}

}  // namespace
}  // namespace amber
