// Schedules in the link configuration: a Mahimahi trace and segments (CSV
// file or inline), with errors naming the configuration's line and the
// trace file's line.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config/loader.h"
#include "link-emulator/schedule.h"

namespace amber::config {
namespace {

constexpr int64_t kMs = 1'000'000;

// A folder of real files for one test, removed afterwards.
class Folder {
 public:
  Folder() {
    char name[] = "/tmp/amber-schedule-config-XXXXXX";
    path_ = mkdtemp(name);
  }
  ~Folder() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& file, const std::string& text) const {
    std::ofstream(path_ + "/" + file) << text;
    return path_ + "/" + file;
  }

 private:
  std::string path_;
};

std::string link_with(const std::string& a_to_b) {
  return "node_id: \"dn1\"\nlink {\n  name: \"cell\"\n  port_a: \"p0\"\n  port_b: \"p1\"\n  a_to_b "
         "{\n" +
         a_to_b + "\n  }\n}\n";
}

std::string real_trace() {
  return std::string(AMBER_TEST_TRACES) + "/Verizon-LTE-short.down";
}

TEST(ScheduleConfig, ReadsARecordedTraceWithInlineSegments) {
  auto r = parse_node_config(
      link_with("    delay: \"20ms\" queue_frames: 300\n    trace: \"" + real_trace() +
                "\"\n    segment { duration: \"10s\" delay: \"40ms\" }\n"
                "    segment { duration: \"5s\" random_loss { probability: \"1%\" } }\n"
                "    schedule_end: \"hold\""),
      "links.conf");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const link::PipeConfig& c = r->links[0].a_to_b;
  ASSERT_TRUE(c.schedule);
  ASSERT_TRUE(c.schedule->trace);
  EXPECT_EQ(c.schedule->trace->ms.size(), 58'655u);
  ASSERT_EQ(c.schedule->segments.size(), 2u);
  EXPECT_EQ(c.schedule->segments[0].duration_ns, 10'000 * kMs);
  EXPECT_EQ(c.schedule->segments[0].delay_ns, 40 * kMs);
  EXPECT_FALSE(c.schedule->segments[0].loss.has_value());
  EXPECT_EQ(c.schedule->segments[1].loss, link::LossConfig{link::RandomLoss{0.01}});
  EXPECT_FALSE(c.schedule->segments[1].delay_ns.has_value());
  EXPECT_EQ(c.schedule->at_end, link::ScheduleEnd::kHoldLast);
  EXPECT_EQ(c.delay_ns, 20 * kMs);  // the static value stays
  EXPECT_FALSE(r->links[0].b_to_a.schedule);
}

TEST(ScheduleConfig, FindsFilesNextToTheConfiguration) {
  Folder dir;
  dir.write("steps.csv", "duration,rate,delay\n10s,50Mbit,10ms\n10s,10Mbit,\n10s,30Mbit,\n");
  dir.write("up.trace", "1\n1\n2\n");
  const std::string path = dir.write(
      "links.conf",
      "link { name: \"l\" port_a: \"p0\" port_b: \"p1\"\n"
      "  a_to_b { segments: \"steps.csv\" schedule_end: \"end\" schedule_start: \"event\" }\n"
      "  b_to_a { trace: \"up.trace\" trace_opportunity_bytes: 1514 trace_header_bytes: 0\n"
      "           schedule_start: \"first_frame\" } }\n");
  auto r = load_node_config(path);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const auto& a = *r->links[0].a_to_b.schedule;
  ASSERT_EQ(a.segments.size(), 3u);
  EXPECT_EQ(a.segments[1].rate_bps, 10'000'000u);
  EXPECT_FALSE(a.segments[2].delay_ns.has_value());
  EXPECT_EQ(a.at_end, link::ScheduleEnd::kEnd);
  EXPECT_EQ(a.start, link::ScheduleStart::kOnEvent);
  const auto& b = *r->links[0].b_to_a.schedule;
  EXPECT_EQ(b.start, link::ScheduleStart::kFirstFrame);
  EXPECT_EQ(b.trace->ms, (std::vector<uint32_t>{1, 1, 2}));
  EXPECT_EQ(b.trace->opportunity_bytes, 1514u);
  EXPECT_EQ(b.trace->header_bytes, 0u);
}

void expect_error(const std::string& text, const std::string& fragment) {
  auto r = parse_node_config(text, "links.conf");
  ASSERT_FALSE(r.is_ok()) << "accepted: " << text;
  EXPECT_NE(r.status().message().find(fragment), std::string::npos)
      << "message: " << r.status().message() << "\nexpected to contain: " << fragment;
}

TEST(ScheduleConfig, BadTracesNameTheConfigurationLineAndTheTraceLine) {
  Folder dir;
  const std::string back = dir.write("back.trace", "1\n5\n3\n");
  const std::string empty = dir.write("empty.trace", "");
  const std::string negative = dir.write("neg.trace", "1\n-2\n");
  const std::string csv = dir.write("bad.csv", "duration,bandwidth\n1s,5Mbit\n");
  const std::string negative_csv = dir.write("neg.csv", "duration,delay\n1s,5ms\n1s,-5ms\n");
  expect_error(link_with("    trace: \"" + back + "\""),
               "links.conf:7:5: link 'cell' a_to_b.trace: " + back +
                   ":3: 3 ms is before the line above (5 ms): timestamps must not decrease");
  expect_error(link_with("    trace: \"" + empty + "\""), empty + ":1: the trace is empty");
  expect_error(link_with("    trace: \"" + negative + "\""), negative + ":2: '-2' is negative");
  expect_error(link_with("    trace: \"/nonexistent/x.trace\""),
               "a_to_b.trace: /nonexistent/x.trace: cannot open the trace");
  expect_error(
      link_with("    segments: \"" + csv + "\""),
      "links.conf:7:5: link 'cell' a_to_b.segments: " + csv + ":1: unknown column 'bandwidth'");
  expect_error(link_with("    segments: \"" + negative_csv + "\""),
               negative_csv + ":3: delay: '-5ms' is negative");
}

TEST(ScheduleConfig, BadSegmentsAreNamed) {
  expect_error(link_with("    segment { rate: \"5Mbit\" }"),
               "a_to_b.segment: segment 1 needs a duration");
  expect_error(link_with("    segment { duration: \"1s\" seed: 3 }"),
               "links.conf:7:30: link 'cell' a_to_b.segment[1].seed: does not change over time");
  expect_error(link_with("    segment { duration: \"-1s\" }"),
               "a_to_b.segment[1].duration: must be above 0");
  expect_error(link_with("    duration: \"1s\""), "a_to_b.duration: only a segment has a duration");
  expect_error(link_with("    schedule_end: \"stop\""), "'stop' is not loop, hold or end");
  expect_error(link_with("    segment { duration: \"1s\" } schedule_start: \"later\""),
               "a_to_b.schedule_start: 'later' is not now, first_frame or event");
  expect_error(link_with("    schedule_start: \"event\""),
               "schedule: neither segments nor a trace");
  expect_error(
      link_with("    trace: \"" + real_trace() + "\" segment { duration: \"1s\" rate: \"1Mbit\" }"),
      "segment 1: sets a rate, but the trace gives the rate");
  expect_error(link_with("    segment { duration: \"1s\" delay: \"2h\" }"), "segment 1: delay_ns");
  expect_error(link_with("    trace_header_bytes: 0"),
               "a_to_b.trace_header_bytes: there is no trace");
}

}  // namespace
}  // namespace amber::config
