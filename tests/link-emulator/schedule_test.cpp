// Schedules: Mahimahi delivery traces replayed byte for byte as Mahimahi's
// LinkQueue does, segments taking effect at their exact virtual instants,
// and a schedule's position carried exactly through a save and restore.
#include "link-emulator/schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <string>

#include "harness.h"
#include "link-emulator/pipe.h"
#include "link-emulator/pipe_edit.h"
#include "link-emulator/rng.h"

namespace amber::link {
namespace {

using testing::Departure;
using testing::FramePool;
using testing::kMs;
using testing::kUs;
using testing::make_pipe;

std::string trace_path(const char* name) {
  return std::string(AMBER_TEST_TRACES) + "/" + name;
}

DeliveryTrace trace_of(std::vector<uint32_t> ms) {
  DeliveryTrace t;
  t.ms = std::move(ms);
  return t;
}

PipeConfig traced(DeliveryTrace trace, int64_t delay_ns = 0) {
  PipeConfig c;
  c.delay_ns = delay_ns;
  c.queue_limit_frames = 1'000'000;
  Schedule s;
  s.trace = std::move(trace);
  c.schedule = ScheduleRef(std::move(s));
  return c;
}

PipeConfig segmented(PipeConfig base, std::vector<Segment> segments,
                     ScheduleEnd end = ScheduleEnd::kLoop) {
  Schedule s;
  s.segments = std::move(segments);
  s.at_end = end;
  base.schedule = ScheduleRef(std::move(s));
  return base;
}

// Frames arriving at the given instants with the given lengths; the pipe
// is polled at every arrival and event (the schedule starts at the first).
std::vector<Departure> run_sized(Pipe& pipe, FramePool& pool, const std::vector<int64_t>& arrivals,
                                 const std::vector<uint32_t>& lengths, bool may_drop = false) {
  std::vector<Departure> out;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    testing::drain(pipe, pool, arrivals[i], out);
    pool[i].length = lengths[i];
    const bool accepted = pipe.enqueue(pool[i], arrivals[i]).accepted;
    EXPECT_TRUE(accepted || may_drop) << "frame " << i;
  }
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  return out;
}

// ---- file formats ----

TEST(MahimahiTrace, ReadsOneOpportunityPerLine) {
  auto t = parse_mahimahi_trace("0\n1\n1\n# a comment\n\n5\n", "t.trace");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->ms, (std::vector<uint32_t>{0, 1, 1, 5}));
  EXPECT_EQ(t->period_ns(), 5 * kMs);
  EXPECT_EQ(t->opportunity_bytes, 1500u);
}

TEST(MahimahiTrace, BadFilesNameFileAndLine) {
  const struct {
    const char* text;
    const char* message;
  } cases[] = {
      {"1\n5\n3\n",
       "t.trace:3: 3 ms is before the line above (5 ms): timestamps must not decrease"},
      {"", "t.trace:1: the trace is empty"},
      {"# only a comment\n", "t.trace:1: the trace is empty"},
      {"1\n-4\n", "t.trace:2: '-4' is negative"},
      {"1\n2.5\n", "t.trace:2: '2.5' is not a whole number of milliseconds"},
      {"0\n0\n", "t.trace:2: the trace lasts 0 ms"},
  };
  for (const auto& c : cases) {
    auto t = parse_mahimahi_trace(c.text, "t.trace");
    ASSERT_FALSE(t.is_ok()) << c.text;
    EXPECT_EQ(t.status().message().rfind(c.message, 0), 0u) << t.status().message();
  }
  auto missing = load_mahimahi_trace("/nonexistent/x.trace");
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
}

TEST(MahimahiTrace, LoadsTheRecordedCellularTraces) {
  auto down = load_mahimahi_trace(trace_path("Verizon-LTE-short.down"));
  ASSERT_TRUE(down.is_ok()) << down.status().to_string();
  EXPECT_EQ(down->ms.size(), 58'655u);
  EXPECT_NEAR(down->mean_rate_bps() / 1e6, 5.03, 0.005);  // as its README says
  auto up = load_mahimahi_trace(trace_path("ATT-LTE-driving-2016.up"));
  ASSERT_TRUE(up.is_ok()) << up.status().to_string();
  EXPECT_EQ(up->ms.size(), 19'101u);
}

TEST(SegmentsCsv, ReadsColumnsByName) {
  auto s = parse_segments_csv(
      "# three segments\nduration, rate, delay, loss, queue\n10s,50Mbit,20ms,0,100\n"
      "5s,10Mbit,,1%,\n2.5s,,40ms,,\n",
      "s.csv");
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].duration_ns, 10'000 * kMs);
  EXPECT_EQ((*s)[0].rate_bps, 50'000'000u);
  EXPECT_EQ((*s)[0].loss, LossConfig{NoLoss{}});
  EXPECT_EQ((*s)[0].queue_limit_frames, 100u);
  EXPECT_FALSE((*s)[1].delay_ns.has_value());
  EXPECT_EQ((*s)[1].loss, LossConfig{RandomLoss{0.01}});
  EXPECT_EQ((*s)[2].delay_ns, 40 * kMs);
  EXPECT_FALSE((*s)[2].rate_bps.has_value());
}

TEST(SegmentsCsv, BadFilesNameFileAndLine) {
  const struct {
    const char* text;
    const char* message;
  } cases[] = {
      {"duration,speed\n1s,5\n", "s.csv:1: unknown column 'speed'"},
      {"rate\n5Mbit\n", "s.csv:1: the header needs a 'duration' column"},
      {"duration,delay\n1s,5ms\n1s,-5ms\n", "s.csv:3: delay: '-5ms' is negative"},
      {"duration,rate\n1s,fast\n", "s.csv:2: rate: "},
      {"duration,rate\n1s\n", "s.csv:2: 1 cells, the header has 2 columns"},
      {"duration,rate\n,5Mbit\n", "s.csv:2: duration: every segment needs one"},
      {"duration,queue\n1s,-3\n", "s.csv:2: queue: '-3' is not a queue limit"},
      {"", "s.csv:1: empty"},
  };
  for (const auto& c : cases) {
    auto s = parse_segments_csv(c.text, "s.csv");
    ASSERT_FALSE(s.is_ok()) << c.text;
    EXPECT_EQ(s.status().message().rfind(c.message, 0), 0u) << s.status().message();
  }
}

TEST(Schedule, ValidationNamesTheSegment) {
  PipeConfig zero = segmented(PipeConfig{}, {Segment{.duration_ns = 0}});
  EXPECT_NE(zero.validate().message().find("segment 1: duration"), std::string::npos);
  PipeConfig bad_delay = segmented(
      PipeConfig{}, {Segment{.duration_ns = kMs}, Segment{.duration_ns = kMs, .delay_ns = -1}});
  EXPECT_NE(bad_delay.validate().message().find("segment 2: delay_ns"), std::string::npos);
  PipeConfig both = traced(trace_of({1}));
  Schedule s = *both.schedule;
  s.segments = {Segment{.duration_ns = kMs, .rate_bps = 1'000'000}};
  both.schedule = ScheduleRef(s);
  EXPECT_NE(both.validate().message().find("the trace gives the rate"), std::string::npos);
}

// ---- the trace: Mahimahi's byte accounting ----

TEST(Trace, OneMtuFramePerOpportunity) {
  // "1": one opportunity every millisecond (12 Mbit/s), from the start.
  Pipe pipe = make_pipe(traced(trace_of({1}), 10 * kMs));
  FramePool pool(4);
  auto out = run_sized(pipe, pool, {0, 0, 0, 0}, {1514, 1514, 1514, 1514});
  ASSERT_EQ(out.size(), 4u);
  for (size_t k = 0; k < 4; ++k) EXPECT_EQ(out[k], (Departure{k, int64_t(k + 1) * kMs + 10 * kMs}));
}

TEST(Trace, SmallFramesShareAnOpportunityLargeOnesSpanSeveral) {
  Pipe pipe = make_pipe(traced(trace_of({1})));
  FramePool pool(6);
  // 500 B each (514 with the Ethernet header): three share the first
  // opportunity. 2900 B take the next two and leave 100 B of the second
  // for the 100-byte frame queued behind it; the last frame needs a third.
  auto out = run_sized(pipe, pool, {0, 0, 0, 0, 0, 0}, {514, 514, 514, 2914, 114, 14 + 1000});
  ASSERT_EQ(out.size(), 6u);
  const int64_t expected[] = {1, 1, 1, 3, 3, 4};
  for (size_t k = 0; k < 6; ++k) EXPECT_EQ(out[k].departure_ns, expected[k] * kMs) << "frame " << k;
}

// With a whole-millisecond delay a trace's frames are due at the very
// instant its next opportunities put a millisecond's frames onto the wire:
// dequeue() hands out the due ones before it does that work (on the
// delay node at 1 Gbit/s, ~83 frames a millisecond, they had waited for it
// 17-19 us), and what it hands out is the same.
TEST(Trace, FramesDueLeaveBeforeTheBottleneckMovesAtTheSameInstant) {
  Pipe pipe = make_pipe(traced(trace_of({1, 1, 1, 1}), kMs));  // 4 opportunities each ms
  FramePool pool(20);
  for (size_t k = 0; k < 20; ++k) {
    pool[k].length = 1514;
    ASSERT_TRUE(pipe.enqueue(pool[k], 0).accepted);
  }
  Frame* out[4];
  int64_t departures[4];
  EXPECT_EQ(pipe.dequeue(kMs, out, departures, 4), 0u);  // 4 onto the wire, due at 2 ms
  EXPECT_EQ(pipe.queued_frames(), 16u);
  ASSERT_EQ(pipe.dequeue(2 * kMs, out, departures, 4), 4u);
  for (int64_t d : departures) EXPECT_EQ(d, 2 * kMs);
  EXPECT_EQ(out[0], &pool[0]);
  EXPECT_EQ(pipe.queued_frames(), 16u) << "the bottleneck moved before the due frames left";
  EXPECT_EQ(pipe.dequeue(2 * kMs, out, departures, 4), 0u);  // now it moves
  EXPECT_EQ(pipe.queued_frames(), 12u);
  ASSERT_EQ(pipe.dequeue(3 * kMs, out, departures, 4), 4u);
  EXPECT_EQ(out[0], &pool[4]);
  EXPECT_EQ(departures[3], 3 * kMs);
}

TEST(Trace, AnOpportunityWithNoFrameQueuedIsLost) {
  Pipe pipe = make_pipe(traced(trace_of({1})));
  FramePool pool(4);
  // 100 B at 0 leave 1400 B of the opportunity at 1 ms: a frame queued at
  // 0.5 ms uses them, one arriving at exactly 1 ms does not (Mahimahi
  // spends the opportunities due before it queues a packet). An idle link
  // wastes its opportunities: a frame at 5.5 ms leaves at 6 ms.
  auto out = run_sized(pipe, pool, {0, kMs / 2, kMs, 5 * kMs + kMs / 2}, {114, 114, 114, 1514});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].departure_ns, kMs);
  EXPECT_EQ(out[1].departure_ns, kMs);
  EXPECT_EQ(out[2].departure_ns, 2 * kMs);
  EXPECT_EQ(out[3].departure_ns, 6 * kMs);
}

TEST(Trace, RepeatsWithItsLastInstantAsPeriod) {
  // Opportunities at 0, 0 and 3 ms, then again at 3, 3, 6, then 6, 6, 9...
  Pipe pipe = make_pipe(traced(trace_of({0, 0, 3})));
  FramePool pool(7);
  // The schedule starts at the first event (the poll at 0, before the
  // frames): the opportunities at 0 are spent on nothing.
  auto out = run_sized(pipe, pool, std::vector<int64_t>(7, 0), std::vector<uint32_t>(7, 1514));
  ASSERT_EQ(out.size(), 7u);
  const int64_t expected[] = {3, 3, 3, 6, 6, 6, 9};
  for (size_t k = 0; k < 7; ++k) EXPECT_EQ(out[k].departure_ns, expected[k] * kMs) << "frame " << k;
}

// Mahimahi's LinkQueue::rationalize(), transcribed as a reference: at each
// opportunity, in order, the frames that arrived before it are queued; the
// opportunity's 1500 bytes go to the packet in transit and on to the next
// while any are left; what no packet takes is lost.
std::vector<int64_t> mahimahi_reference(const DeliveryTrace& trace,
                                        const std::vector<int64_t>& arrivals,
                                        const std::vector<uint32_t>& lengths) {
  std::vector<int64_t> departure(arrivals.size(), -1);
  std::deque<size_t> queue;
  size_t next_arrival = 0, done = 0;
  int64_t in_transit = -1, bytes_left = 0;
  for (int64_t pass = 0; done < arrivals.size(); ++pass) {
    for (uint32_t ms : trace.ms) {
      const int64_t at = pass * trace.period_ns() + int64_t{ms} * kMs;
      while (next_arrival < arrivals.size() && arrivals[next_arrival] < at)
        queue.push_back(next_arrival++);
      int64_t budget = trace.opportunity_bytes;
      while (budget > 0) {
        if (in_transit < 0) {
          if (queue.empty()) break;
          in_transit = static_cast<int64_t>(queue.front());
          queue.pop_front();
          bytes_left = std::max<int64_t>(lengths[in_transit] - trace.header_bytes, 1);
        }
        bytes_left -= budget;
        budget = 0;
        if (bytes_left <= 0) {
          budget = -bytes_left;
          departure[in_transit] = at;
          ++done;
          in_transit = -1;
        }
      }
    }
  }
  return departure;
}

TEST(Trace, DeparturesEqualMahimahisLinkQueueOnRandomTraffic) {
  Rng rng(17);
  DeliveryTrace trace;
  for (uint32_t ms = 0, i = 0; i < 3000; ++i) {
    ms += static_cast<uint32_t>(rng.below(3));  // gaps of 0-2 ms: bursts and idle stretches
    trace.ms.push_back(ms);
  }
  std::vector<int64_t> arrivals;
  std::vector<uint32_t> lengths;
  for (int64_t t = 0; arrivals.size() < 8000;) {
    t += static_cast<int64_t>(rng.below(700 * kUs));
    if (rng.below(4) == 0) t = (t / kMs + 1) * kMs;  // some arrive exactly at an opportunity
    arrivals.push_back(t);
    lengths.push_back(rng.below(3) == 0 ? 9014 : 60 + static_cast<uint32_t>(rng.below(1455)));
  }
  // The schedule starts at 0 (the first poll), as the reference's trace.
  Pipe pipe = make_pipe(traced(trace, 7 * kMs));
  FramePool pool(arrivals.size());
  std::vector<Departure> out;
  testing::drain(pipe, pool, 0, out);
  auto got = run_sized(pipe, pool, arrivals, lengths);
  auto expected = mahimahi_reference(trace, arrivals, lengths);
  ASSERT_EQ(got.size(), arrivals.size());
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_EQ(got[k].index, k);
    ASSERT_EQ(got[k].departure_ns, expected[k] + 7 * kMs) << "frame " << k;
  }
}

// Under saturation every opportunity is used: per 100 ms the bytes
// delivered are what the opportunities allow, within one frame.
void expect_saturated_delivery(const DeliveryTrace& trace, int64_t seconds) {
  Rng rng(5);
  const int64_t end = seconds * 1000 * kMs;
  // Enough frames to keep the queue from ever emptying.
  const size_t frames =
      trace.ms.size() * 3 * static_cast<size_t>(seconds * 1000 / trace.ms.back() + 1);
  std::vector<int64_t> arrivals(frames, 0);
  std::vector<uint32_t> lengths(frames);
  for (auto& l : lengths) l = 64 + static_cast<uint32_t>(rng.below(1451));
  Pipe pipe = make_pipe(traced(trace));
  FramePool pool(frames);
  std::vector<Departure> out;
  for (size_t i = 0; i < frames; ++i) {
    pool[i].length = lengths[i];
    ASSERT_TRUE(pipe.enqueue(pool[i], 0).accepted);
  }
  testing::drain(pipe, pool, end, out);
  ASSERT_GT(pipe.held_frames(), 0u) << "not saturated";
  const int64_t window = 100 * kMs;
  std::vector<int64_t> delivered(static_cast<size_t>(end / window)), allowed(delivered.size());
  for (const Departure& d : out)
    delivered[static_cast<size_t>((d.departure_ns - 1) / window)] += lengths[d.index] - 14;
  for (int64_t pass = 0; pass * trace.period_ns() < end; ++pass) {
    for (uint32_t ms : trace.ms) {
      const int64_t at = pass * trace.period_ns() + int64_t{ms} * kMs;
      if (at > 0 && at <= end) allowed[static_cast<size_t>((at - 1) / window)] += 1500;
    }
  }
  int64_t cumulative_gap = 0;
  for (size_t w = 0; w < delivered.size(); ++w) {
    cumulative_gap += allowed[w] - delivered[w];
    // What is not delivered by the end of a window is the part of one frame
    // in transmission (at most one frame's bytes).
    ASSERT_GE(cumulative_gap, 0) << "window " << w;
    ASSERT_LT(cumulative_gap, 1500) << "window " << w;
    ASSERT_LE(std::abs(allowed[w] - delivered[w]), 1500) << "window " << w;
  }
}

TEST(Trace, SaturatedLinkDeliversWhatASyntheticTraceAllows) {
  DeliveryTrace t = trace_of({1, 1, 2, 4, 4, 4, 7, 10});  // bursty, 10 ms period
  expect_saturated_delivery(t, 2);
}

TEST(Trace, SaturatedLinkDeliversWhatTheRecordedTracesAllow) {
  for (const char* name : {"Verizon-LTE-short.down", "ATT-LTE-driving-2016.up"}) {
    SCOPED_TRACE(name);
    auto trace = load_mahimahi_trace(trace_path(name));
    ASSERT_TRUE(trace.is_ok()) << trace.status().to_string();
    expect_saturated_delivery(*trace, 30);
  }
}

// ---- segments ----

TEST(Segments, TakeEffectAtTheirExactInstants) {
  // 12 Mbit/s (1 ms per 1500 B frame) for 10.5 ms, then 6 Mbit/s for 10 ms:
  // frame 10 is half serialized at 10.5 ms and sends its second half at the
  // new rate (1 ms more); later frames take 2 ms each until 20.5 ms.
  PipeConfig base;
  base.rate_bps = 12'000'000;
  base.delay_ns = 5 * kMs;
  PipeConfig c = segmented(base, {Segment{.duration_ns = 10 * kMs + kMs / 2},
                                  Segment{.duration_ns = 10 * kMs, .rate_bps = 6'000'000}});
  Pipe pipe = make_pipe(c);
  FramePool pool(20);
  auto out = testing::run(pipe, pool, std::vector<int64_t>(20, 0), 1500);
  ASSERT_EQ(out.size(), 20u);
  std::vector<int64_t> expected;
  for (int64_t k = 1; k <= 10; ++k) expected.push_back(k * kMs);
  expected.push_back(11 * kMs + kMs / 2);  // half at 12 Mbit/s, half at 6
  expected.push_back(13 * kMs + kMs / 2);
  expected.push_back(15 * kMs + kMs / 2);
  expected.push_back(17 * kMs + kMs / 2);
  expected.push_back(19 * kMs + kMs / 2);
  // At 20.5 ms the loop starts again at 12 Mbit/s: frame 15 had 1 ms of 2
  // left, 0.5 ms at the faster rate.
  expected.push_back(21 * kMs);
  for (int64_t k = 22; k <= 25; ++k) expected.push_back(k * kMs);
  for (size_t k = 0; k < 20; ++k)
    EXPECT_EQ(out[k].departure_ns, expected[k] + 5 * kMs) << "frame " << k;
  EXPECT_EQ(pipe.schedule_state().loops, 1u);
}

TEST(Segments, DoNotDependOnHowOftenThePipeIsPolled) {
  PipeConfig base;
  base.rate_bps = 20'000'000;
  base.delay_ns = 3 * kMs;
  base.queue_limit_frames = 30;
  PipeConfig c = segmented(
      base, {Segment{.duration_ns = 7 * kMs, .loss = GilbertElliottLoss{0.1, 0.3, 0.8, 0.01}},
             Segment{.duration_ns = 3 * kMs, .rate_bps = 5'000'000, .jitter_ns = 2 * kMs},
             Segment{.duration_ns = 11 * kMs, .delay_ns = 9 * kMs, .loss = RandomLoss{0.2}}});
  Rng rng(3);
  std::vector<int64_t> arrivals;
  for (int64_t t = 0; arrivals.size() < 3000;) {
    // Bursts, and idle stretches of many loops.
    t += rng.below(50) == 0 ? static_cast<int64_t>(rng.below(300 * kMs))
                            : static_cast<int64_t>(rng.below(400 * kUs));
    arrivals.push_back(t);
  }
  Pipe lazy = make_pipe(c);
  FramePool pool_lazy(arrivals.size());
  std::vector<Departure> none;
  testing::drain(lazy, pool_lazy, 0, none);  // both schedules start at 0
  auto expected = testing::run(lazy, pool_lazy, arrivals, 1200);

  // The same, polled every 50 us between arrivals.
  Pipe busy = make_pipe(c);
  FramePool pool(arrivals.size());
  std::vector<Departure> got;
  int64_t poll = 0;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    for (; poll < arrivals[i]; poll += 50 * kUs) testing::drain(busy, pool, poll, got);
    testing::drain(busy, pool, arrivals[i], got);
    pool[i].length = 1200;
    busy.enqueue(pool[i], arrivals[i]);
  }
  for (int64_t t; (t = busy.next_event_ns()) != kNever;) testing::drain(busy, pool, t, got);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(busy.counters(), lazy.counters());
  EXPECT_GT(lazy.counters().total_dropped(), 0u);
}

TEST(Segments, JitterNeverReordersAcrossASegmentChange) {
  PipeConfig base;
  base.delay_ns = 40 * kMs;
  base.jitter_ns = 10 * kMs;
  PipeConfig c =
      segmented(base, {Segment{.duration_ns = 50 * kMs},
                       Segment{.duration_ns = 50 * kMs, .delay_ns = 2 * kMs, .jitter_ns = kMs},
                       Segment{.duration_ns = 50 * kMs, .rate_bps = 50'000'000}});
  Pipe pipe = make_pipe(c);
  std::vector<int64_t> arrivals;
  for (int64_t t = 0; t < 600 * kMs; t += 37 * kUs) arrivals.push_back(t);
  FramePool pool(arrivals.size());
  auto out = testing::run(pipe, pool, arrivals, 200);
  ASSERT_EQ(out.size(), arrivals.size());
  for (size_t k = 0; k < out.size(); ++k) {
    ASSERT_EQ(out[k].index, k) << "reordered";
    if (k > 0) {
      ASSERT_GE(out[k].departure_ns, out[k - 1].departure_ns);
    }
  }
  // Frames that arrived just after the delay fell to 2 ms waited behind
  // the ones still on the 40 ms wire: none left before them.
  EXPECT_GT(out[static_cast<size_t>(50 * kMs / (37 * kUs)) + 1].departure_ns, 80 * kMs);
}

TEST(Segments, HoldKeepsTheLastSegmentEndReturnsToTheStaticConfiguration) {
  PipeConfig base;
  base.delay_ns = kMs;
  std::vector<Segment> segs = {Segment{.duration_ns = 10 * kMs, .delay_ns = 5 * kMs},
                               Segment{.duration_ns = 10 * kMs, .delay_ns = 7 * kMs}};
  for (ScheduleEnd end : {ScheduleEnd::kLoop, ScheduleEnd::kHoldLast, ScheduleEnd::kEnd}) {
    Pipe pipe = make_pipe(segmented(base, segs, end));
    FramePool pool(4);
    auto out = testing::run(pipe, pool, {0, 12 * kMs, 25 * kMs, 45 * kMs}, 100);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(out[0].departure_ns, 5 * kMs);
    EXPECT_EQ(out[1].departure_ns, 19 * kMs);
    const int64_t later = end == ScheduleEnd::kLoop       ? 5 * kMs
                          : end == ScheduleEnd::kHoldLast ? 7 * kMs
                                                          : kMs;
    EXPECT_EQ(out[2].departure_ns, 25 * kMs + later) << schedule_end_name(end);
    EXPECT_EQ(pipe.schedule_state().ended, end == ScheduleEnd::kEnd);
  }
}

TEST(Segments, ATraceEndsAfterOnePassWhenTheScheduleEnds) {
  PipeConfig c = traced(trace_of({1, 2}));  // 2 ms, then the static rate (unlimited)
  Schedule s = *c.schedule;
  s.at_end = ScheduleEnd::kEnd;
  c.schedule = ScheduleRef(s);
  Pipe pipe = make_pipe(c);
  FramePool pool(4);
  auto out = run_sized(pipe, pool, {0, 0, 0, 0}, {1514, 1514, 1514, 1514});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].departure_ns, kMs);
  EXPECT_EQ(out[1].departure_ns, 2 * kMs);
  EXPECT_EQ(out[2].departure_ns, 2 * kMs);  // the trace ended: unlimited from 2 ms on
  EXPECT_EQ(out[3].departure_ns, 2 * kMs);
  EXPECT_FALSE(pipe.traced());
}

TEST(Segments, ARuntimeChangeOfTheStaticDelayShowsInSegmentsThatKeepIt) {
  PipeConfig base;
  base.delay_ns = kMs;
  PipeConfig c = segmented(base, {Segment{.duration_ns = 10 * kMs, .jitter_ns = 0},
                                  Segment{.duration_ns = 10 * kMs, .delay_ns = 3 * kMs}});
  Pipe pipe = make_pipe(c);
  FramePool pool(3);
  std::vector<Departure> out;
  testing::drain(pipe, pool, 0, out);
  PipeConfig changed = c;
  changed.delay_ns = 2 * kMs;  // same schedule: it keeps its position
  ASSERT_TRUE(pipe.reconfigure(changed, 5 * kMs).is_ok());
  auto rest = testing::run(pipe, pool, {6 * kMs, 12 * kMs, 22 * kMs}, 100);
  ASSERT_EQ(rest.size(), 3u);
  EXPECT_EQ(rest[0].departure_ns, 8 * kMs);   // segment 1 keeps the static delay: now 2 ms
  EXPECT_EQ(rest[1].departure_ns, 15 * kMs);  // segment 2 sets its own
  EXPECT_EQ(rest[2].departure_ns, 24 * kMs);  // loop: segment 1 again
}

// ---- checkpoints ----

// Stops after `cut` arrivals, copies state and held frames into a fresh
// pipe as a restore does, and continues there: every departure and counter
// must equal the uninterrupted run's.
void expect_identical_future_after_restore(const PipeConfig& c,
                                           const std::vector<int64_t>& arrivals,
                                           const std::vector<uint32_t>& lengths, size_t cut) {
  Pipe ref = make_pipe(c);
  FramePool pref(arrivals.size());
  std::vector<Departure> unused;
  testing::drain(ref, pref, 0, unused);
  auto expected = run_sized(ref, pref, arrivals, lengths, true);

  Pipe first = make_pipe(c);
  FramePool pool(arrivals.size());
  std::vector<Departure> got;
  testing::drain(first, pool, 0, got);
  for (size_t i = 0; i < cut; ++i) {
    testing::drain(first, pool, arrivals[i], got);
    pool[i].length = lengths[i];
    first.enqueue(pool[i], arrivals[i]);
  }
  ASSERT_GT(first.queued_frames(), 3u) << "cut where nothing waits for the trace";
  const ScheduleState at_cut = first.schedule_state();
  Pipe second = testing::restore_into_fresh(first);
  EXPECT_EQ(second.schedule_state(), at_cut);
  EXPECT_EQ(second.current(), first.current());
  for (size_t i = cut; i < arrivals.size(); ++i) {
    testing::drain(second, pool, arrivals[i], got);
    pool[i].length = lengths[i];
    second.enqueue(pool[i], arrivals[i]);
  }
  for (int64_t t; (t = second.next_event_ns()) != kNever;) testing::drain(second, pool, t, got);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(second.counters(), ref.counters());
  EXPECT_EQ(second.state(), ref.state());
}

TEST(ScheduleCheckpoint, TraceRestoresIntoAFreshPipeWithAnIdenticalFuture) {
  auto trace = load_mahimahi_trace(trace_path("ATT-LTE-driving-2016.up"));
  ASSERT_TRUE(trace.is_ok()) << trace.status().to_string();
  PipeConfig c = traced(*trace, 30 * kMs);
  c.queue_limit_frames = 200;
  c.loss = GilbertElliottLoss{0.01, 0.3, 0.5, 0.0};
  Schedule s = *c.schedule;
  // Delay and jitter change over time beside the trace's rate.
  s.segments = {Segment{.duration_ns = 700 * kMs, .jitter_ns = 3 * kMs},
                Segment{.duration_ns = 300 * kMs, .delay_ns = 80 * kMs, .loss = RandomLoss{0.02}}};
  c.schedule = ScheduleRef(s);
  Rng rng(11);
  std::vector<int64_t> arrivals;
  std::vector<uint32_t> lengths;
  for (int64_t t = 0; t < 20'000 * kMs;) {
    t += static_cast<int64_t>(
        rng.below(5 * kMs));  // ~2.4 Mbit/s offered: the trace's queue fills and drains
    arrivals.push_back(t);
    lengths.push_back(60 + static_cast<uint32_t>(rng.below(1455)));
  }
  const size_t cut = static_cast<size_t>(
      std::lower_bound(arrivals.begin(), arrivals.end(), 12'345 * kMs) - arrivals.begin());
  expect_identical_future_after_restore(c, arrivals, lengths, cut);
}

TEST(ScheduleCheckpoint, SegmentsRestoreIntoAFreshPipeWithAnIdenticalFuture) {
  PipeConfig base;
  base.rate_bps = 8'000'000;
  base.delay_ns = 10 * kMs;
  base.queue_limit_frames = 60;
  PipeConfig c = segmented(
      base, {Segment{.duration_ns = 400 * kMs, .rate_bps = 4'000'000, .jitter_ns = 2 * kMs},
             Segment{.duration_ns = 250 * kMs,
                     .delay_ns = 50 * kMs,
                     .loss = MarkovLoss{0.05, 0.4, 0.1, 0.1, 0.01}},
             Segment{.duration_ns = 350 * kMs, .rate_bps = 1'000'000, .queue_limit_frames = 10}});
  Rng rng(23);
  std::vector<int64_t> arrivals;
  std::vector<uint32_t> lengths;
  for (int64_t t = 0; t < 5'000 * kMs;) {
    t += static_cast<int64_t>(rng.below(3 * kMs));
    arrivals.push_back(t);
    lengths.push_back(1000);
  }
  const size_t cut = static_cast<size_t>(
      std::lower_bound(arrivals.begin(), arrivals.end(), 2'150 * kMs) - arrivals.begin());
  expect_identical_future_after_restore(c, arrivals, lengths, cut);
}

// ---- when a schedule starts ----

PipeConfig starting(PipeConfig c, ScheduleStart start) {
  Schedule s = *c.schedule;
  s.start = start;
  c.schedule = ScheduleRef(std::move(s));
  return c;
}

// Segments.TakeEffectAtTheirExactInstants's schedule: 12 Mbit/s for
// 10.5 ms, then 6 Mbit/s for 10 ms, static rate 1.2 Mbit/s.
PipeConfig two_rates() {
  PipeConfig base;
  base.rate_bps = 1'200'000;
  base.delay_ns = 5 * kMs;
  return segmented(base, {Segment{.duration_ns = 10 * kMs + kMs / 2, .rate_bps = 12'000'000},
                          Segment{.duration_ns = 10 * kMs, .rate_bps = 6'000'000}});
}

// Twenty 1500 B frames at `at` after the pipe was polled every ms from 0:
// their departures less `at`.
std::vector<int64_t> twenty_frames_at(Pipe& pipe, int64_t at) {
  FramePool pool(20);
  std::vector<Departure> out;
  for (int64_t t = 0; t < at; t += kMs) testing::drain(pipe, pool, t, out);
  EXPECT_TRUE(out.empty());
  for (size_t i = 0; i < 20; ++i) {
    pool[i].length = 1500;
    EXPECT_TRUE(pipe.enqueue(pool[i], at).accepted);
  }
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  std::vector<int64_t> relative;
  for (const Departure& d : out) relative.push_back(d.departure_ns - at);
  return relative;
}

TEST(ScheduleStart, FirstFrameWaitsThroughPollsAndStartsAtTheFrame) {
  // Started at the frame: the departures of a schedule begun at 0 with the
  // frames at 0 (frame 10 straddles the change at 10.5 ms).
  Pipe at_zero = make_pipe(two_rates());
  const std::vector<int64_t> from_the_start = twenty_frames_at(at_zero, 0);
  ASSERT_EQ(from_the_start.size(), 20u);
  EXPECT_EQ(from_the_start[10], 11 * kMs + kMs / 2 + 5 * kMs);

  Pipe on_frame = make_pipe(starting(two_rates(), ScheduleStart::kFirstFrame));
  EXPECT_TRUE(on_frame.awaits_first_frame());
  EXPECT_EQ(twenty_frames_at(on_frame, 37 * kMs), from_the_start);
  EXPECT_FALSE(on_frame.awaits_first_frame());
  EXPECT_TRUE(on_frame.schedule_state().started);
  EXPECT_EQ(on_frame.schedule_state().start_ns, 37 * kMs);

  // Started at the first poll (the default), the schedule stood 37 ms
  // into its 20.5 ms loop when the frames came: other departures.
  Pipe at_once = make_pipe(two_rates());
  EXPECT_FALSE(at_once.awaits_first_frame());
  EXPECT_NE(twenty_frames_at(at_once, 37 * kMs), from_the_start);
  EXPECT_EQ(at_once.schedule_state().start_ns, 0);
}

TEST(ScheduleStart, TheOtherDirectionsFirstFrameStartsItAtThatInstant) {
  Pipe pipe = make_pipe(starting(two_rates(), ScheduleStart::kFirstFrame));
  FramePool pool(1);
  std::vector<Departure> out;
  testing::drain(pipe, pool, 9 * kMs, out);
  pipe.start_schedule_at(4 * kMs, 9 * kMs);  // the other direction's frame came at 4 ms
  EXPECT_EQ(pipe.schedule_state().start_ns, 4 * kMs);
  EXPECT_EQ(pipe.current().rate_bps, 12'000'000u);
  testing::drain(pipe, pool, 16 * kMs, out);  // 12 ms after the start: the second segment
  EXPECT_EQ(pipe.schedule_state().segment, 1u);
  EXPECT_EQ(pipe.schedule_state().segment_start_ns, 14 * kMs + kMs / 2);

  // A new schedule waits again; a start from before it began waiting (the
  // old schedule's) does not start it.
  PipeConfig again = starting(two_rates(), ScheduleStart::kFirstFrame);
  again.schedule = ScheduleRef(Schedule(*again.schedule));  // another schedule, equal content
  Schedule changed = *again.schedule;
  changed.segments[0].duration_ns = 3 * kMs;
  again.schedule = ScheduleRef(changed);
  ASSERT_TRUE(pipe.reconfigure(again, 20 * kMs).is_ok());
  EXPECT_TRUE(pipe.awaits_first_frame());
  EXPECT_EQ(pipe.current().rate_bps, 1'200'000u);  // the static rate while it waits
  pipe.start_schedule_at(4 * kMs, 25 * kMs);
  EXPECT_TRUE(pipe.awaits_first_frame());
  pipe.start_schedule_at(30 * kMs, 25 * kMs);  // a worker whose clock ran ahead: now
  EXPECT_EQ(pipe.schedule_state().start_ns, 25 * kMs);
}

TEST(ScheduleStart, OnEventWaitsForAStartEventAndAStartRestartsARunningSchedule) {
  Pipe pipe = make_pipe(starting(two_rates(), ScheduleStart::kOnEvent));
  FramePool pool(3);
  std::vector<Departure> out;
  auto start = parse_link_event(30 * kMs, "start");
  ASSERT_TRUE(start.is_ok()) << start.status().to_string();
  EXPECT_EQ(describe_change(*start), "start");
  auto restart = parse_link_event(50 * kMs, "start");
  ASSERT_TRUE(pipe.schedule_events({*start, *restart}, 0).is_ok());
  // Frames do not start it: the static rate until the event.
  pool[0].length = 1500;
  ASSERT_TRUE(pipe.enqueue(pool[0], kMs).accepted);
  testing::drain(pipe, pool, 29 * kMs, out);
  EXPECT_FALSE(pipe.schedule_state().started);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].departure_ns, kMs + 10 * kMs + 5 * kMs);  // 1500 B at 1.2 Mbit/s
  testing::drain(pipe, pool, 45 * kMs, out);
  EXPECT_EQ(pipe.schedule_state().start_ns, 30 * kMs);
  EXPECT_EQ(pipe.schedule_state().segment, 1u);  // 15 ms in: the second segment
  testing::drain(pipe, pool, 51 * kMs, out);
  EXPECT_EQ(pipe.schedule_state().start_ns, 50 * kMs);  // from its beginning again
  EXPECT_EQ(pipe.schedule_state().segment, 0u);
  EXPECT_EQ(pipe.current().rate_bps, 12'000'000u);
  EXPECT_TRUE(pipe.pending_events().empty());
}

TEST(ScheduleStart, AStartEventNeedsASchedule) {
  PipeConfig plain;
  plain.delay_ns = 5 * kMs;
  Pipe pipe = make_pipe(plain);
  auto start = parse_link_event(30 * kMs, "start");
  ASSERT_TRUE(start.is_ok());
  Status s = pipe.schedule_events({*start}, 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("the link direction has no schedule to start"), std::string::npos)
      << s.message();
  // Nor can a reconfigure remove the schedule a pending start needs.
  Pipe scheduled = make_pipe(starting(two_rates(), ScheduleStart::kOnEvent));
  ASSERT_TRUE(scheduled.schedule_events({*start}, 0).is_ok());
  EXPECT_FALSE(scheduled.reconfigure(plain, kMs).is_ok());
  EXPECT_EQ(scheduled.pending_events().size(), 1u);
}

TEST(ScheduleCheckpoint, AScheduleWaitingForItsFirstFrameRestoresWaiting) {
  PipeConfig c = starting(two_rates(), ScheduleStart::kFirstFrame);
  Pipe first = make_pipe(c);
  FramePool pool(20);
  std::vector<Departure> out;
  testing::drain(first, pool, 12 * kMs, out);
  Pipe second = testing::restore_into_fresh(first);
  EXPECT_TRUE(second.awaits_first_frame());
  EXPECT_EQ(second.schedule_state(), first.schedule_state());
  Pipe reference = make_pipe(two_rates());
  EXPECT_EQ(twenty_frames_at(second, 40 * kMs), twenty_frames_at(reference, 0));
  EXPECT_EQ(second.schedule_state().start_ns, 40 * kMs);
}

}  // namespace
}  // namespace amber::link

namespace amber::link {
namespace {

TEST(ScheduleEdit, TraceSettingLoadsReplacesAndDropsATrace) {
  PipeConfig c;
  c.delay_ns = 5 * kMs;
  const std::string path = std::string(AMBER_TEST_TRACES) + "/ATT-LTE-driving-2016.up";
  ASSERT_TRUE(apply_settings(c, "trace=" + path + " delay=7ms").is_ok());
  ASSERT_TRUE(c.schedule);
  EXPECT_EQ(c.schedule->trace->ms.size(), 19'101u);
  EXPECT_EQ(c.delay_ns, 7 * kMs);
  EXPECT_TRUE(c.validate().is_ok());

  // Applied to a running pipe, the new schedule starts at that instant.
  Pipe pipe = make_pipe(PipeConfig{});
  ASSERT_TRUE(pipe.reconfigure(c, 3 * kMs).is_ok());
  EXPECT_TRUE(pipe.traced());
  EXPECT_EQ(pipe.schedule_state().start_ns, 3 * kMs);

  Status bad = apply_settings(c, "trace=/nonexistent/x.trace");
  EXPECT_EQ(bad.message(), "trace: /nonexistent/x.trace: cannot open the trace");
  EXPECT_EQ(c.schedule->trace->ms.size(), 19'101u);  // unchanged
  ASSERT_TRUE(apply_settings(c, "trace=none").is_ok());
  EXPECT_FALSE(c.schedule);
}

}  // namespace
}  // namespace amber::link
