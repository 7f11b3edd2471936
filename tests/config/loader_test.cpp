#include "config/loader.h"

#include <gtest/gtest.h>

#include "dataplane/sizing.h"

namespace amber::config {
namespace {

constexpr const char* kGood = R"(
node_id: "dn1"
idle_sleep: "20us"
link {
  name: "lfn"
  port_a: "net_ring0"
  port_b: "net_ring1"
  both { rate: "1Gbit" delay: "50ms" queue_frames: 500 }
  b_to_a { rate: "100Mbit" random_loss { probability: "1%" } seed: 7 }
}
link {
  name: "lossy"
  port_a: "net_ring2"
  port_b: "net_ring3"
  a_to_b { delay: "5ms" jitter: "1ms" jitter_distribution: "normal"
           gilbert_elliott { p: "1%" r: "30%" } }
  b_to_a { delay: "5ms" markov { p13: "2%" p31: "50%" } reorder: "1%" }
}
)";

void expect_error(const char* text, const std::string& fragment) {
  auto r = parse_node_config(text, "links.conf");
  ASSERT_FALSE(r.is_ok()) << "accepted: " << text;
  EXPECT_NE(r.status().message().find(fragment), std::string::npos)
      << "message: " << r.status().message() << "\nexpected to contain: " << fragment;
}

TEST(ConfigLoader, ReadsLinksWithPerDirectionParameters) {
  auto r = parse_node_config(kGood, "links.conf");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const NodeConfig& c = *r;
  EXPECT_EQ(c.node_id, "dn1");
  EXPECT_EQ(c.idle_sleep_ns, 20'000);
  ASSERT_EQ(c.links.size(), 2u);
  const LinkConfig& lfn = c.links[0];
  EXPECT_EQ(lfn.a_to_b.rate_bps, 1'000'000'000u);
  EXPECT_EQ(lfn.a_to_b.delay_ns, 50'000'000);
  EXPECT_EQ(lfn.a_to_b.queue_limit_frames, 500u);
  EXPECT_EQ(lfn.b_to_a.rate_bps, 100'000'000u);  // overrides "both"
  EXPECT_EQ(lfn.b_to_a.delay_ns, 50'000'000);    // inherited from "both"
  EXPECT_EQ(std::get<link::RandomLoss>(lfn.b_to_a.loss).probability, 0.01);
  EXPECT_EQ(lfn.b_to_a.seed, 7u);
  EXPECT_NE(lfn.a_to_b.seed, c.links[1].a_to_b.seed);  // derived from names
  EXPECT_EQ(lfn.where, "links.conf:4:1");
  const LinkConfig& lossy = c.links[1];
  EXPECT_EQ(lossy.a_to_b.jitter_distribution, link::JitterDistribution::kNormal);
  EXPECT_DOUBLE_EQ(std::get<link::GilbertElliottLoss>(lossy.a_to_b.loss).r, 0.3);
  EXPECT_DOUBLE_EQ(std::get<link::MarkovLoss>(lossy.b_to_a.loss).p13, 0.02);
  EXPECT_DOUBLE_EQ(lossy.b_to_a.reorder, 0.01);
}

TEST(ConfigLoader, ErrorsNameFileLineAndField) {
  expect_error("link { name: \"x\" port_a: \"a\" port_b: \"b\" a_to_b { delay: \"-3ms\" } }",
               "links.conf:1:");
  expect_error("link { name: \"x\" port_a: \"a\" port_b: \"b\" a_to_b { delay: \"-3ms\" } }",
               "a_to_b");
  expect_error(
      "link {\n name: \"x\"\n port_a: \"a\"\n port_b: \"b\"\n a_to_b {\n  rate: \"fast\" } }",
      "links.conf:6:3: link 'x' a_to_b.rate: 'fast' is not a valid rate");
  expect_error(
      "link { name: \"x\" port_a: \"a\" port_b: \"b\"\n both { random_loss { probability: \"150%\" "
      "} } }",
      "links.conf:2:23: link 'x' both.random_loss.probability");
  expect_error("link { name: \"x\" port_a: \"a\" port_b: \"a\" }", "port_b: same port as port_a");
  expect_error(
      "link { name: \"x\" port_a: \"a\" port_b: \"b\" }\n"
      "link { name: \"y\" port_a: \"c\" port_b: \"b\" }",
      "links.conf:2:30: link 'y' port_b: port 'b' is already used by link 'x'");
  expect_error(
      "link { name: \"x\" port_a: \"a\" port_b: \"b\" }\n"
      "link { name: \"x\" port_a: \"c\" port_b: \"d\" }",
      "the name is used twice");
  expect_error("link { name: \"x\" port_a: \"a\" port_b: \"b\" both { queue_frames: 0 } }",
               "queue_frames: must be at least 1");
  expect_error(
      "link { name: \"x\" port_a: \"a\" port_b: \"b\" both { rate: \"1Mbit\" queue_bytes: \"0\" } "
      "}",
      "queue_bytes");
  expect_error("link { name: \"x\" port_a: \"a\" port_b: \"b\" both { delya: \"1ms\" } }",
               "links.conf:1:54: Message type \"amber.config.Pipe\" has no field named \"delya\"");
  expect_error("link { name: \"x\" port_a: \"a\" ", "links.conf:1:");
  expect_error("", "no link is configured");
  expect_error("idle_sleep: \"soon\" link { name: \"x\" port_a: \"a\" port_b: \"b\" }",
               "idle_sleep");
}

TEST(ConfigLoader, MissingFileIsAClearError) {
  auto r = load_node_config("/nonexistent/amber.conf");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/amber.conf"), std::string::npos);
}

TEST(PoolSizing, BandwidthDelayProductInFullSizeFrames) {
  link::PipeConfig ten_gig;
  ten_gig.rate_bps = 10'000'000'000;
  ten_gig.delay_ns = 100'000'000;
  // The issue's example: about 83,000 full-size frames per direction.
  EXPECT_EQ(dataplane::frames_on_wire(ten_gig, 0, 1500), 83'334u);
  link::PipeConfig unlimited;
  unlimited.delay_ns = 1'000'000;
  EXPECT_EQ(dataplane::frames_on_wire(unlimited, 1'000'000'000, 1250), 100u);

  auto r = parse_node_config(kGood, "links.conf");
  ASSERT_TRUE(r.is_ok());
  dataplane::RingSizes rings;
  auto s = dataplane::size_pool(*r, rings, 2300);
  EXPECT_EQ(s.frames_in_queues, 500u + 500u);  // queue limits of the rate-limited pipes
  EXPECT_GT(s.mbufs, s.frames_on_wire + s.frames_in_queues + s.frames_in_rings);
  EXPECT_NE(s.describe().find("mbufs"), std::string::npos);
}

// A link whose schedule replaces its static parameters for good is sized
// by the schedule: 50 Mbit/s x 80 ms, not the unlimited static rate x 80 ms
// (10 Gbit/s: 66,667 frames); a schedule that ends, or starts on an event,
// can meet the static parameters and is sized for them too.
TEST(PoolSizing, ASchedulesLinkIsSizedByWhatItCanStandAt) {
  auto size = [](const std::string& end, const std::string& start) {
    auto r = parse_node_config(
        "link { name: \"cell\" port_a: \"p0\" port_b: \"p1\"\n"
        "  a_to_b { delay: \"80ms\" schedule_end: \"" +
            end + "\" schedule_start: \"" + start +
            "\"\n"
            "           segment { duration: \"10s\" rate: \"10Mbit\" }\n"
            "           segment { duration: \"10s\" rate: \"50Mbit\" } }\n"
            "  b_to_a { delay: \"80ms\" rate: \"1Mbit\" } }\n",
        "links.conf");
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return dataplane::size_pool(*r, dataplane::RingSizes{}, 2300).frames_on_wire;
  };
  link::PipeConfig fifty, one;
  fifty.rate_bps = 50'000'000;
  fifty.delay_ns = one.delay_ns = 80'000'000;
  one.rate_bps = 1'000'000;
  const uint64_t by_schedule =
      dataplane::frames_on_wire(fifty, 0, 1500) + dataplane::frames_on_wire(one, 0, 1500);
  EXPECT_EQ(size("loop", "now"), by_schedule);
  EXPECT_EQ(size("hold", "first_frame"), by_schedule);
  link::PipeConfig unlimited;
  unlimited.delay_ns = 80'000'000;
  const uint64_t with_static = dataplane::frames_on_wire(unlimited, 10'000'000'000ULL, 1500) +
                               dataplane::frames_on_wire(one, 0, 1500);
  EXPECT_EQ(size("end", "now"), with_static);
  EXPECT_EQ(size("loop", "event"), with_static);
}

}  // namespace
}  // namespace amber::config
