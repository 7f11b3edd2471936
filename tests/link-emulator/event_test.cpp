// Scheduled link events: changes at exact virtual instants (however the
// pipe is polled), the link going down and up, refusals, and the pending
// events carried exactly through a save and restore.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "harness.h"
#include "link-emulator/link_event.h"
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

LinkEvent event(int64_t at_ns, const std::string& change) {
  auto e = parse_link_event(at_ns, change);
  EXPECT_TRUE(e.is_ok()) << change << ": " << e.status().to_string();
  return *e;
}

size_t dropped(const Pipe& pipe, DropCause cause) {
  return pipe.counters().frames_dropped[static_cast<size_t>(cause)];
}

// Frames of `length` arriving at `arrivals`; the pipe is polled at each
// arrival, and also every `poll_ns` if that is not 0. Everything that
// leaves, until the pipe is empty.
std::vector<Departure> run_polled(Pipe& pipe, FramePool& pool, const std::vector<int64_t>& arrivals,
                                  uint32_t length, int64_t poll_ns) {
  std::vector<Departure> out;
  int64_t polled = 0;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    for (; poll_ns && polled + poll_ns < arrivals[i]; polled += poll_ns) {
      testing::drain(pipe, pool, polled + poll_ns, out);
    }
    testing::drain(pipe, pool, arrivals[i], out);
    pool[i].length = length;
    pipe.enqueue(pool[i], arrivals[i]);
  }
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  return out;
}

TEST(LinkEventParse, ReadsDownUpAndSettings) {
  EXPECT_EQ(event(5, "down").kind, LinkEventKind::kDown);
  EXPECT_EQ(event(5, "up").kind, LinkEventKind::kUp);
  LinkEvent e = event(7, "delay=200ms rate=10Mbit loss=1% queue_frames=50");
  EXPECT_EQ(e.at_ns, 7);
  EXPECT_EQ(e.kind, LinkEventKind::kSet);
  EXPECT_EQ(e.set.delay_ns, 200 * kMs);
  EXPECT_EQ(e.set.rate_bps, 10'000'000u);
  EXPECT_EQ(e.set.loss, LossConfig(RandomLoss{0.01}));
  EXPECT_EQ(e.set.queue_limit_frames, 50u);
  EXPECT_FALSE(e.set.jitter_ns);
  EXPECT_EQ(describe_change(e), "rate=10Mbit/s delay=200ms loss=1% queue_frames=50");
}

TEST(LinkEventParse, RefusesWhatAnEventCannotSetNamingIt) {
  const struct {
    const char* change;
    const char* message;
  } cases[] = {
      {"seed=3",
       "event: unknown key 'seed' (an event sets rate, delay, jitter, loss, queue_frames or "
       "queue_bytes; or give down, up or start)"},
      {"sideways", "event: 'sideways' is not key=value, down, up or start"},
      {"delay=fast", "event: delay: "},
      {"queue_frames=none",
       "event: queue_frames=none: an event sets a limit, it cannot remove one"},
      {"", "event: give down, up, start or settings (delay=200ms ...)"},
  };
  for (const auto& c : cases) {
    auto e = parse_link_event(0, c.change);
    ASSERT_FALSE(e.is_ok()) << c.change;
    EXPECT_EQ(e.status().message().rfind(c.message, 0), 0u)
        << c.change << ": " << e.status().message();
  }
}

TEST(LinkEvents, ASetAppliesAtItsExactInstantHoweverThePipeIsPolled) {
  PipeConfig c;
  c.delay_ns = 10 * kMs;
  std::vector<int64_t> arrivals;
  for (int64_t t = 0; t <= 300 * kMs; t += 7 * kMs) arrivals.push_back(t);
  std::vector<Departure> runs[2];
  for (int64_t poll : {int64_t{0}, 1 * kUs * 100}) {
    Pipe pipe = make_pipe(c);
    ASSERT_TRUE(pipe.schedule_events({event(100 * kMs, "delay=50ms")}, 0).is_ok());
    FramePool pool(arrivals.size());
    auto out = run_polled(pipe, pool, arrivals, 100, poll);
    EXPECT_TRUE(pipe.pending_events().empty());
    EXPECT_EQ(pipe.config().delay_ns, 50 * kMs);  // the static configuration changed
    runs[poll != 0] = out;
  }
  EXPECT_EQ(runs[0], runs[1]);
  ASSERT_EQ(runs[0].size(), arrivals.size());
  for (const Departure& d : runs[0]) {
    const int64_t arrival = arrivals[d.index];
    // Frames arriving at the instant or later take the new delay.
    EXPECT_EQ(d.departure_ns, arrival + (arrival < 100 * kMs ? 10 : 50) * kMs) << d.index;
  }
}

TEST(LinkEvents, ARateChangeMidFrameSendsTheRemainingBitsAtTheNewRate) {
  PipeConfig c;
  c.rate_bps = 8'000'000;  // 1 byte per us
  c.queue_limit_frames = 100;
  Pipe pipe = make_pipe(c);
  ASSERT_TRUE(pipe.schedule_events({event(500 * kUs, "rate=4Mbit")}, 0).is_ok());
  FramePool pool(2);
  auto out = testing::run(pipe, pool, {0, 0}, 1000);
  // First frame: 500 bytes by 500 us, then 500 more at 2 us each; the
  // second all at the new rate.
  EXPECT_EQ(out, (std::vector<Departure>{{0, 1500 * kUs}, {1, 3500 * kUs}}));
}

TEST(LinkEvents, DownDropsAndCountsArrivalsUpAcceptsThemAgain) {
  PipeConfig c;
  c.delay_ns = 20 * kMs;
  Pipe pipe = make_pipe(c);
  EXPECT_TRUE(pipe.plain());
  ASSERT_TRUE(pipe.schedule_events({event(50 * kMs, "down"), event(80 * kMs, "up")}, 0).is_ok());
  EXPECT_FALSE(pipe.plain()) << "a burst could straddle the instant";
  std::vector<int64_t> arrivals;
  for (int64_t t = 0; t < 120 * kMs; t += 10 * kMs) arrivals.push_back(t);
  FramePool pool(arrivals.size());
  auto out = testing::run(pipe, pool, arrivals, 200);
  // 50, 60, 70 arrive while it is down (the instant itself included; at 80
  // it is up again).
  std::vector<Departure> expected;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    if (arrivals[i] >= 50 * kMs && arrivals[i] < 80 * kMs) continue;
    expected.push_back({i, arrivals[i] + 20 * kMs});
  }
  EXPECT_EQ(out, expected);
  EXPECT_EQ(dropped(pipe, DropCause::kLinkDown), 3u);
  EXPECT_EQ(pipe.counters().bytes_dropped[static_cast<size_t>(DropCause::kLinkDown)], 600u);
  EXPECT_EQ(pipe.counters().frames_in, arrivals.size());
  EXPECT_EQ(pipe.counters().total_dropped(), 3u);
  EXPECT_FALSE(pipe.config().down);
  EXPECT_TRUE(pipe.plain()) << "no event pending, up: plain again";
  EXPECT_STREQ(drop_cause_name(DropCause::kLinkDown), "link_down");
}

TEST(LinkEvents, FramesAcceptedBeforeTheLinkWentDownStillLeaveAsScheduled) {
  PipeConfig c;
  c.rate_bps = 8'000'000;  // 1 byte per us
  c.delay_ns = 5 * kMs;
  c.queue_limit_frames = 100;
  Pipe pipe = make_pipe(c);
  ASSERT_TRUE(pipe.schedule_events({event(1 * kMs, "down")}, 0).is_ok());
  FramePool pool(12);
  // Ten frames of 1000 B at 0 (10 ms of serialization), two after the cut.
  std::vector<int64_t> arrivals(10, 0);
  arrivals.push_back(2 * kMs);
  arrivals.push_back(3 * kMs);
  auto out = testing::run(pipe, pool, arrivals, 1000);
  ASSERT_EQ(out.size(), 10u);
  for (size_t k = 0; k < 10; ++k) {
    EXPECT_EQ(out[k], (Departure{k, int64_t(k + 1) * kMs + 5 * kMs}));
  }
  EXPECT_EQ(dropped(pipe, DropCause::kLinkDown), 2u);
  EXPECT_TRUE(pipe.config().down);
}

TEST(LinkEvents, DownDrawsNothingSoTheRandomStreamResumesWhereItStood) {
  PipeConfig c;
  c.loss = RandomLoss{0.3};
  c.seed = 99;
  Pipe with_outage = make_pipe(c);
  Pipe without = make_pipe(c);
  ASSERT_TRUE(with_outage.schedule_events({event(100, "down"), event(200, "up")}, 0).is_ok());
  FramePool pool(300);
  std::vector<bool> kept_with, kept_without;
  for (int64_t t = 0; t < 300; ++t) {
    const size_t i = static_cast<size_t>(t);
    pool[i].length = 64;
    const Verdict v = with_outage.enqueue(pool[i], t);
    if (t < 100 || t >= 200) kept_with.push_back(v.accepted);
    if (t >= 100 && t < 200) {
      EXPECT_EQ(v.cause, DropCause::kLinkDown);
    }
  }
  FramePool other(200);
  for (int64_t t = 0; t < 200; ++t) {
    const size_t i = static_cast<size_t>(t);
    other[i].length = 64;
    kept_without.push_back(without.enqueue(other[i], t).accepted);
  }
  EXPECT_EQ(kept_with, kept_without);
}

TEST(LinkEvents, EventsForOneInstantFireInTheOrderGiven) {
  Pipe pipe = make_pipe(PipeConfig{});
  ASSERT_TRUE(pipe.schedule_events({event(10, "delay=1ms"), event(10, "delay=2ms")}, 0).is_ok());
  ASSERT_TRUE(pipe.schedule_events({event(10, "delay=3ms"), event(5, "down")}, 0).is_ok());
  ASSERT_EQ(pipe.pending_events().size(), 4u);
  EXPECT_EQ(pipe.pending_events()[0].kind, LinkEventKind::kDown);
  Frame f;
  f.length = 64;
  EXPECT_FALSE(pipe.enqueue(f, 10).accepted);
  EXPECT_EQ(pipe.config().delay_ns, 3 * kMs);
  EXPECT_TRUE(pipe.pending_events().empty());
}

TEST(LinkEvents, RefusedWholeWhenOneIsPastOrWouldMakeTheConfigurationInvalid) {
  PipeConfig c;  // unlimited, frame limit 1000
  c.queue_limit_frames.reset();
  Pipe pipe = make_pipe(c);
  Frame f;
  f.length = 64;
  pipe.enqueue(f, 100);
  Status past = pipe.schedule_events({event(200, "down"), event(50, "up")}, 100);
  ASSERT_FALSE(past.is_ok());
  EXPECT_EQ(past.message(),
            "event at 50 ns (up) is 50 ns before the pipe's time (100 ns): it would never fire");
  EXPECT_TRUE(pipe.pending_events().empty());

  // A rate without a queue limit.
  Status invalid = pipe.schedule_events({event(200, "down"), event(300, "rate=1Mbit")}, 100);
  ASSERT_FALSE(invalid.is_ok());
  EXPECT_NE(invalid.message().find("event at 300 ns (rate=1Mbit/s): queue_limit_frames"),
            std::string::npos)
      << invalid.message();
  EXPECT_TRUE(pipe.pending_events().empty());

  // With a limit it goes in; then a runtime change removing the limit is
  // refused while the event waits, any other change is not.
  ASSERT_TRUE(
      pipe.schedule_events({event(200, "queue_frames=10"), event(300, "rate=1Mbit")}, 100).is_ok());
  PipeConfig changed = pipe.config();
  changed.delay_ns = 1 * kMs;
  ASSERT_TRUE(pipe.reconfigure(changed, 150).is_ok()) << "pending events still apply";
  Frame g;
  g.length = 64;
  pipe.enqueue(g, 250);  // the limit is set
  EXPECT_EQ(pipe.config().queue_limit_frames, 10u);
  PipeConfig unlimited = pipe.config();
  unlimited.queue_limit_frames.reset();
  Status refused = pipe.reconfigure(unlimited, 260);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.message().find("event at 300 ns (rate=1Mbit/s)"), std::string::npos)
      << refused.message();
  EXPECT_EQ(pipe.config().queue_limit_frames, 10u);
  ASSERT_EQ(pipe.pending_events().size(), 1u);
  EXPECT_EQ(pipe.cancel_events(), 1u);
  EXPECT_TRUE(pipe.pending_events().empty());
  EXPECT_TRUE(pipe.reconfigure(unlimited, 270).is_ok());
}

TEST(LinkEvents, ASetChangesTheStaticValuesASegmentThatSetsItsOwnOverrides) {
  PipeConfig c;
  c.delay_ns = 10 * kMs;
  Schedule s;
  s.segments = {Segment{.duration_ns = 100 * kMs},
                Segment{.duration_ns = 100 * kMs, .delay_ns = 70 * kMs}};
  c.schedule = ScheduleRef(s);
  Pipe pipe = make_pipe(c);
  Frame f[4];
  f[0].length = 64;
  pipe.enqueue(f[0], 0);  // starts the schedule
  ASSERT_TRUE(pipe.schedule_events({event(50 * kMs, "delay=30ms")}, 0).is_ok());
  Frame* out[4];
  pipe.dequeue(60 * kMs, out, 4);
  EXPECT_EQ(pipe.current().delay_ns, 30 * kMs);
  pipe.dequeue(150 * kMs, out, 4);
  EXPECT_EQ(pipe.current().delay_ns, 70 * kMs);  // the segment's own
  pipe.dequeue(250 * kMs, out, 4);
  EXPECT_EQ(pipe.current().delay_ns, 30 * kMs);  // the loop's first segment: the event's
  EXPECT_EQ(pipe.schedule_state().segment, 0u);
  EXPECT_EQ(pipe.schedule_state().loops, 1u);
}

TEST(LinkEvents, AnIdleSegmentLoopIsNotJumpedPastAnEvent) {
  PipeConfig c;
  Schedule s;
  s.segments = {Segment{.duration_ns = 10 * kMs, .delay_ns = 1 * kMs},
                Segment{.duration_ns = 10 * kMs, .delay_ns = 2 * kMs}};
  c.schedule = ScheduleRef(s);
  Pipe pipe = make_pipe(c);
  Frame* out[4];
  pipe.dequeue(0, out, 4);
  ASSERT_TRUE(pipe.schedule_events({event(55 * kMs, "down")}, 0).is_ok());
  pipe.dequeue(1'000 * kMs, out, 4);  // one late poll: 50 loops pass, the event among them
  EXPECT_TRUE(pipe.config().down);
  EXPECT_EQ(pipe.schedule_state().loops, 50u);
  Frame f;
  f.length = 64;
  EXPECT_EQ(pipe.enqueue(f, 1'000 * kMs).cause, DropCause::kLinkDown);
}

// A save with events pending, restored into a fresh pipe, fires the rest
// at their instants: every departure and counter as without the cut.
TEST(LinkEvents, PendingEventsRestoreIntoAFreshPipeWithAnIdenticalFuture) {
  PipeConfig c;
  c.rate_bps = 8'000'000;
  c.delay_ns = 10 * kMs;
  c.jitter_ns = 1 * kMs;
  c.queue_limit_frames = 60;
  c.loss = RandomLoss{0.01};
  const std::vector<LinkEvent> events = {
      event(300 * kMs, "delay=80ms rate=2Mbit"), event(900 * kMs, "down"), event(1'100 * kMs, "up"),
      event(1'600 * kMs, "loss=5% jitter=3ms"), event(2'200 * kMs, "rate=6Mbit queue_frames=20")};
  Rng rng(31);
  std::vector<int64_t> arrivals;
  for (int64_t t = 0; t < 3'000 * kMs;) {
    t += static_cast<int64_t>(rng.below(3 * kMs));
    arrivals.push_back(t);
  }
  auto arrive = [&](Pipe& pipe, FramePool& pool, size_t i, std::vector<Departure>& out) {
    testing::drain(pipe, pool, arrivals[i], out);
    pool[i].length = 1000;
    pipe.enqueue(pool[i], arrivals[i]);
  };
  auto finish = [](Pipe& pipe, FramePool& pool, std::vector<Departure>& out) {
    for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  };

  Pipe ref = make_pipe(c);
  ASSERT_TRUE(ref.schedule_events(events, 0).is_ok());
  FramePool pref(arrivals.size());
  std::vector<Departure> expected;
  for (size_t i = 0; i < arrivals.size(); ++i) arrive(ref, pref, i, expected);
  finish(ref, pref, expected);
  EXPECT_GT(dropped(ref, DropCause::kLinkDown), 30u);

  // Cut between the down and the up: three events still pending.
  const size_t cut = static_cast<size_t>(
      std::lower_bound(arrivals.begin(), arrivals.end(), 1'000 * kMs) - arrivals.begin());
  Pipe first = make_pipe(c);
  ASSERT_TRUE(first.schedule_events(events, 0).is_ok());
  FramePool pool(arrivals.size());
  std::vector<Departure> got;
  for (size_t i = 0; i < cut; ++i) arrive(first, pool, i, got);
  ASSERT_EQ(first.pending_events().size(), 3u);
  ASSERT_TRUE(first.config().down);
  ASSERT_GT(first.held_frames(), 3u) << "cut where frames are held";
  Pipe second = testing::restore_into_fresh(first);
  EXPECT_EQ(second.pending_events(), first.state().events);
  EXPECT_EQ(second.current(), first.current());
  for (size_t i = cut; i < arrivals.size(); ++i) arrive(second, pool, i, got);
  finish(second, pool, got);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(second.counters(), ref.counters());
  EXPECT_EQ(second.state(), ref.state());
  EXPECT_EQ(second.config(), ref.config());
}

TEST(LinkEvents, DownAsARuntimeSetting) {
  PipeConfig c;
  ASSERT_TRUE(apply_settings(c, "down=yes").is_ok());
  EXPECT_TRUE(c.down);
  EXPECT_EQ(describe(c).rfind("DOWN; ", 0), 0u);
  Status bad = apply_settings(c, "down=maybe");
  EXPECT_EQ(bad.message(), "down: 'maybe' is not yes or no");
  Pipe pipe = make_pipe(PipeConfig{});
  ASSERT_TRUE(pipe.reconfigure(c, 0).is_ok());
  Frame f;
  f.length = 64;
  EXPECT_EQ(pipe.enqueue(f, 1).cause, DropCause::kLinkDown);
}

}  // namespace
}  // namespace amber::link
