#include "link-emulator/pipe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "harness.h"

namespace amber::link {
namespace {

using testing::Departure;
using testing::FramePool;
using testing::make_pipe;

using testing::kMs;
using testing::kUs;

PipeConfig rate_delay(uint64_t rate_bps, int64_t delay_ns) {
  PipeConfig c;
  c.rate_bps = rate_bps;
  c.delay_ns = delay_ns;
  return c;
}

TEST(Pipe, BackToBackFramesDepartAtExactSerializationAndDelay) {
  Pipe pipe = make_pipe(rate_delay(1'000'000'000, 10 * kMs));
  FramePool pool(3);
  auto out = testing::run(pipe, pool, {0, 0, 0}, 1500);
  // 1500 B at 1 Gbit/s = 12 us each, one after the other, then 10 ms.
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], (Departure{0, 12 * kUs + 10 * kMs}));
  EXPECT_EQ(out[1], (Departure{1, 24 * kUs + 10 * kMs}));
  EXPECT_EQ(out[2], (Departure{2, 36 * kUs + 10 * kMs}));
}

TEST(Pipe, FractionalSerializationTimesAddUpExactly) {
  // 64 B at 10 Gbit/s is 51.2 ns: a train of 1000 frames must end at exactly
  // 51,200 ns, not at 51,000 (truncation) or 52,000 (rounding up).
  Pipe pipe = make_pipe(rate_delay(10'000'000'000, 0));
  FramePool pool(1000);
  auto out = testing::run(pipe, pool, std::vector<int64_t>(1000, 0), 64);
  ASSERT_EQ(out.size(), 1000u);
  for (size_t k = 0; k < out.size(); ++k) {
    EXPECT_EQ(out[k].departure_ns, static_cast<int64_t>((k + 1) * 512 / 10)) << "frame " << k;
  }
}

TEST(Pipe, OverheadBytesCountForTheShaper) {
  PipeConfig c = rate_delay(1'000'000'000, 0);
  c.overhead_bytes = 24;  // preamble, inter-frame gap, CRC
  Pipe pipe = make_pipe(c);
  FramePool pool(2);
  auto out = testing::run(pipe, pool, {0, 0}, 1476);
  EXPECT_EQ(out[0].departure_ns, 12 * kUs);
  EXPECT_EQ(out[1].departure_ns, 24 * kUs);
}

TEST(Pipe, IdleLinkStartsSerializationAtArrival) {
  Pipe pipe = make_pipe(rate_delay(1'000'000'000, 1 * kMs));
  FramePool pool(2);
  auto out = testing::run(pipe, pool, {0, 100 * kUs}, 1500);
  EXPECT_EQ(out[0].departure_ns, 12 * kUs + kMs);
  EXPECT_EQ(out[1].departure_ns, 112 * kUs + kMs);
}

TEST(Pipe, UnlimitedRateIsPureDelay) {
  Pipe pipe = make_pipe(rate_delay(0, 20 * kMs));
  FramePool pool(3);
  auto out = testing::run(pipe, pool, {5, 5, 17}, 9000);
  EXPECT_EQ(out[0].departure_ns, 5 + 20 * kMs);
  EXPECT_EQ(out[1].departure_ns, 5 + 20 * kMs);
  EXPECT_EQ(out[2].departure_ns, 17 + 20 * kMs);
}

TEST(Pipe, NothingDepartsBeforeItsTime) {
  Pipe pipe = make_pipe(rate_delay(0, 20 * kMs));
  FramePool pool(1);
  pool[0].length = 100;
  ASSERT_TRUE(pipe.enqueue(pool[0], 0).accepted);
  Frame* out[4];
  EXPECT_EQ(pipe.dequeue(20 * kMs - 1, out, 4), 0u);
  EXPECT_EQ(pipe.next_event_ns(), 20 * kMs);
  EXPECT_EQ(pipe.dequeue(20 * kMs, out, 4), 1u);
  EXPECT_EQ(pipe.next_event_ns(), kNever);
}

TEST(Pipe, QueueFrameLimitDropsTailAndCounts) {
  PipeConfig c = rate_delay(1'000'000, 0);  // 1500 B take 12 ms
  c.queue_limit_frames = 3;
  Pipe pipe = make_pipe(c);
  FramePool pool(5);
  std::vector<bool> accepted;
  for (size_t i = 0; i < 5; ++i) {
    pool[i].length = 1500;
    accepted.push_back(pipe.enqueue(pool[i], 0).accepted);
  }
  EXPECT_EQ(accepted, (std::vector<bool>{true, true, true, false, false}));
  EXPECT_EQ(pipe.counters().frames_dropped[size_t(DropCause::kQueueFrames)], 2u);
  EXPECT_EQ(pipe.counters().bytes_dropped[size_t(DropCause::kQueueFrames)], 3000u);
  EXPECT_EQ(pipe.queued_frames(), 3u);
  EXPECT_EQ(pipe.held_frames(), 3u);
  // Once the head is serialized there is room for one more.
  pool[3].length = 1500;
  EXPECT_TRUE(pipe.enqueue(pool[3], 12 * kMs).accepted);
}

TEST(Pipe, QueueByteLimitDropsTail) {
  PipeConfig c = rate_delay(1'000'000, 0);
  c.queue_limit_frames.reset();
  c.queue_limit_bytes = 4000;
  Pipe pipe = make_pipe(c);
  FramePool pool(4);
  std::vector<bool> accepted;
  for (size_t i = 0; i < 4; ++i) {
    pool[i].length = i == 3 ? 1000 : 1500;
    accepted.push_back(pipe.enqueue(pool[i], 0).accepted);
  }
  // 1500 + 1500 fit, a third 1500 does not, a 1000 still does.
  EXPECT_EQ(accepted, (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ(pipe.counters().frames_dropped[size_t(DropCause::kQueueBytes)], 1u);
  EXPECT_EQ(pipe.queued_bytes(), 4000u);
}

TEST(Pipe, QueueLimitNeverCountsFramesOnTheWire) {
  // A long fat link: 1 Gbit/s, 1 s delay holds 83,333 frames of 1500 B on
  // the wire. A queue limit of 2 frames must not drop any of them when the
  // sender paces at the link rate (netem's single limit would).
  PipeConfig c = rate_delay(1'000'000'000, 1'000 * kMs);
  c.queue_limit_frames = 2;
  Pipe pipe = make_pipe(c);
  FramePool pool(50'000);
  std::vector<Departure> out;
  for (size_t i = 0; i < pool.size(); ++i) {
    int64_t t = static_cast<int64_t>(i) * 12 * kUs;
    testing::drain(pipe, pool, t, out);
    pool[i].length = 1500;
    ASSERT_TRUE(pipe.enqueue(pool[i], t).accepted) << "frame " << i;
  }
  EXPECT_EQ(pipe.counters().total_dropped(), 0u);
  EXPECT_EQ(pipe.held_frames(), 50'000u);
  EXPECT_LE(pipe.queued_frames(), 1u);
}

TEST(Pipe, JitterNeverReorders) {
  for (auto dist : {JitterDistribution::kUniform, JitterDistribution::kNormal}) {
    PipeConfig c = rate_delay(0, 10 * kMs);
    c.jitter_ns = 5 * kMs;
    c.jitter_distribution = dist;
    c.seed = 42;
    Pipe pipe = make_pipe(c);
    FramePool pool(20'000);
    std::vector<int64_t> arrivals(pool.size());
    for (size_t i = 0; i < arrivals.size(); ++i) arrivals[i] = static_cast<int64_t>(i) * 10 * kUs;
    auto out = testing::run(pipe, pool, arrivals, 100);
    ASSERT_EQ(out.size(), pool.size());
    std::vector<int64_t> delays;
    for (size_t k = 0; k < out.size(); ++k) {
      ASSERT_EQ(out[k].index, k) << "reordered at " << k;
      if (k > 0) {
        ASSERT_GE(out[k].departure_ns, out[k - 1].departure_ns);
      }
      delays.push_back(out[k].departure_ns - arrivals[k]);
    }
    // The jitter is really there: delays spread over several milliseconds.
    auto [lo, hi] = std::minmax_element(delays.begin(), delays.end());
    EXPECT_LT(*lo, 8 * kMs);
    EXPECT_GT(*hi, 12 * kMs);
    EXPECT_GE(*lo, 0);
  }
}

TEST(Pipe, UniformJitterMeanIsTheDelayWithoutCongestion) {
  // Widely spaced frames are never held back by their predecessor, so the
  // mean delay is the configured one.
  PipeConfig c = rate_delay(0, 10 * kMs);
  c.jitter_ns = 1 * kMs;
  Pipe pipe = make_pipe(c);
  FramePool pool(20'000);
  std::vector<int64_t> arrivals(pool.size());
  for (size_t i = 0; i < arrivals.size(); ++i) arrivals[i] = static_cast<int64_t>(i) * 3 * kMs;
  auto out = testing::run(pipe, pool, arrivals, 100);
  double sum = 0;
  for (size_t k = 0; k < out.size(); ++k) sum += double(out[k].departure_ns - arrivals[k]);
  // Standard error of the mean: 1 ms / sqrt(3) / sqrt(20000) ~ 4 us.
  EXPECT_NEAR(sum / out.size(), 10.0 * kMs, 20.0 * kUs);
}

TEST(Pipe, ReorderOnlyWhenAskedAndThenTheGivenFraction) {
  PipeConfig c = rate_delay(0, 10 * kMs);
  c.reorder = 0.25;
  c.seed = 7;
  Pipe pipe = make_pipe(c);
  FramePool pool(40'000);
  std::vector<int64_t> arrivals(pool.size());
  for (size_t i = 0; i < arrivals.size(); ++i) arrivals[i] = static_cast<int64_t>(i) * kUs;
  auto out = testing::run(pipe, pool, arrivals, 100);
  size_t express = 0, last_delayed = 0;
  bool first = true;
  for (const Departure& d : out) {
    if (d.departure_ns == arrivals[d.index]) {
      ++express;
    } else {
      EXPECT_EQ(d.departure_ns, arrivals[d.index] + 10 * kMs);
      if (!first) {
        EXPECT_GT(d.index, last_delayed) << "delayed frames reordered among themselves";
      }
      last_delayed = d.index;
      first = false;
    }
  }
  EXPECT_EQ(express, pipe.counters().reordered);
  EXPECT_NEAR(double(express) / out.size(), 0.25, 0.01);
}

TEST(Pipe, DuplicationAndCorruptionFollowTheirProbabilities) {
  PipeConfig c = rate_delay(0, kMs);
  c.duplicate = 0.1;
  c.corrupt = 0.05;
  Pipe pipe = make_pipe(c);
  const size_t n = 100'000;
  FramePool pool(2 * n);
  size_t duplicates = 0, corrupted = 0, next_copy = n;
  for (size_t i = 0; i < n; ++i) {
    pool[i].length = 200;
    Verdict v = pipe.enqueue(pool[i], static_cast<int64_t>(i));
    ASSERT_TRUE(v.accepted);
    if (v.corrupt_bit >= 0) {
      ++corrupted;
      ASSERT_LT(v.corrupt_bit, 200 * 8);
    }
    if (v.duplicate) {
      ++duplicates;
      pool[next_copy].length = 200;
      Verdict copy = pipe.enqueue_duplicate(pool[next_copy++], static_cast<int64_t>(i));
      EXPECT_TRUE(copy.accepted);
      EXPECT_FALSE(copy.duplicate);
    }
  }
  // 3 standard deviations: sqrt(p(1-p)/n).
  EXPECT_NEAR(double(duplicates) / n, 0.1, 3 * std::sqrt(0.09 / n));
  EXPECT_NEAR(double(corrupted) / n, 0.05, 3 * std::sqrt(0.0475 / n));
  EXPECT_EQ(pipe.counters().duplicated, duplicates);
  EXPECT_EQ(pipe.counters().corrupted, corrupted);
  EXPECT_EQ(pipe.held_frames(), n + duplicates);
}

TEST(Pipe, CountersBalance) {
  PipeConfig c = rate_delay(10'000'000, kMs);
  c.queue_limit_frames = 10;
  c.loss = RandomLoss{0.1};
  Pipe pipe = make_pipe(c);
  FramePool pool(5000);
  std::vector<int64_t> arrivals(pool.size());
  for (size_t i = 0; i < arrivals.size(); ++i) arrivals[i] = static_cast<int64_t>(i) * 100 * kUs;
  auto out = testing::run(pipe, pool, arrivals, 1500);
  const PipeCounters& k = pipe.counters();
  EXPECT_EQ(k.frames_in, 5000u);
  EXPECT_EQ(k.frames_out, out.size());
  EXPECT_EQ(k.frames_in, k.frames_out + k.total_dropped());
  EXPECT_GT(k.frames_dropped[size_t(DropCause::kQueueFrames)], 0u);  // 1500 B/100us > 10 Mbit/s
  EXPECT_GT(k.frames_dropped[size_t(DropCause::kLoss)], 0u);
  EXPECT_EQ(k.bytes_in, 5000u * 1500);
  EXPECT_EQ(pipe.held_frames(), 0u);
}

// Feeds the same arrivals into a pipe twice, polling at different
// cadences: the virtual schedule depends only on arrival times.
TEST(Pipe, ScheduleDoesNotDependOnPollingCadence) {
  PipeConfig c = rate_delay(100'000'000, 5 * kMs);
  c.jitter_ns = kMs;
  c.loss = GilbertElliottLoss{0.05, 0.3, 0.8, 0.01};
  c.queue_limit_frames = 50;
  c.reorder = 0.05;
  std::vector<int64_t> arrivals;
  for (int64_t i = 0; i < 20'000; ++i) arrivals.push_back(i * 50 * kUs + (i % 7) * 3 * kUs);
  Pipe a = make_pipe(c);
  FramePool pa(arrivals.size());
  auto out_a = testing::run(a, pa, arrivals, 1200);

  Pipe b = make_pipe(c);
  FramePool pb(arrivals.size());
  std::vector<Departure> out_b;
  size_t next = 0;
  for (int64_t t = 0; next < arrivals.size() || b.next_event_ns() != kNever; t += 37 * kUs) {
    while (next < arrivals.size() && arrivals[next] <= t) {
      testing::drain(b, pb, arrivals[next], out_b);
      pb[next].length = 1200;
      b.enqueue(pb[next], arrivals[next]);
      ++next;
    }
    testing::drain(b, pb, t, out_b);
  }
  // Same frames, same virtual departure times (the coarse poller sees them
  // late in real time, but their virtual departure stamps are identical).
  ASSERT_EQ(out_a.size(), out_b.size());
  EXPECT_EQ(out_a, out_b);
}

TEST(Pipe, RateChangeFinishesTheFrameOnTheLinkAtTheNewRate) {
  Pipe pipe = make_pipe(rate_delay(1'000'000'000, kMs));
  FramePool pool(3);
  for (size_t i = 0; i < 3; ++i) {
    pool[i].length = 1500;
    ASSERT_TRUE(pipe.enqueue(pool[i], 0).accepted);
  }
  // At 6 us frame 0 is half serialized; the rate halves.
  ASSERT_TRUE(pipe.reconfigure(rate_delay(500'000'000, kMs), 6 * kUs).is_ok());
  std::vector<Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].departure_ns, 18 * kUs + kMs);  // 6 us done + 6 us of bits at half rate
  EXPECT_EQ(out[1].departure_ns, 42 * kUs + kMs);  // 24 us per frame now
  EXPECT_EQ(out[2].departure_ns, 66 * kUs + kMs);
}

TEST(Pipe, DelayChangeKeepsFramesOnTheWireAndNeverReorders) {
  Pipe pipe = make_pipe(rate_delay(0, 100 * kMs));
  FramePool pool(2);
  pool[0].length = pool[1].length = 100;
  ASSERT_TRUE(pipe.enqueue(pool[0], 0).accepted);
  ASSERT_TRUE(pipe.reconfigure(rate_delay(0, 10 * kMs), kMs).is_ok());
  ASSERT_TRUE(pipe.enqueue(pool[1], 2 * kMs).accepted);
  std::vector<Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], (Departure{0, 100 * kMs}));  // kept its departure
  EXPECT_EQ(out[1], (Departure{1, 100 * kMs}));  // held behind it, not before
}

TEST(Pipe, InvalidReconfigurationChangesNothing) {
  Pipe pipe = make_pipe(rate_delay(1'000'000, kMs));
  PipeConfig bad = rate_delay(1'000'000, -kMs);
  Status s = pipe.reconfigure(bad, 0);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(pipe.config().delay_ns, kMs);
}

TEST(Pipe, StateAndFramesRestoreIntoAFreshPipeWithAnIdenticalFuture) {
  PipeConfig c = rate_delay(50'000'000, 3 * kMs);
  c.jitter_ns = 500 * kUs;
  c.jitter_distribution = JitterDistribution::kNormal;
  c.loss = MarkovLoss{0.02, 0.4, 0.2, 0.1, 0.01};
  c.reorder = 0.02;
  c.corrupt = 0.01;
  c.queue_limit_frames = 40;
  std::vector<int64_t> arrivals;
  for (int64_t i = 0; i < 10'000; ++i) arrivals.push_back(i * 150 * kUs);
  const size_t cut = 4'321;

  // Reference: one uninterrupted run.
  Pipe ref = make_pipe(c);
  FramePool pref(arrivals.size());
  auto expected = testing::run(ref, pref, arrivals, 1000);

  // Interrupted: stop after `cut` arrivals, copy state and held frames into
  // a fresh pipe (as a checkpoint restore does), continue there.
  Pipe first = make_pipe(c);
  FramePool pool(arrivals.size());
  std::vector<Departure> got;
  for (size_t i = 0; i < cut; ++i) {
    testing::drain(first, pool, arrivals[i], got);
    pool[i].length = 1000;
    first.enqueue(pool[i], arrivals[i]);
  }
  ASSERT_GT(first.held_frames(), 10u);
  Pipe second = testing::restore_into_fresh(first);
  for (size_t i = cut; i < arrivals.size(); ++i) {
    testing::drain(second, pool, arrivals[i], got);
    pool[i].length = 1000;
    second.enqueue(pool[i], arrivals[i]);
  }
  for (int64_t t; (t = second.next_event_ns()) != kNever;) testing::drain(second, pool, t, got);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(second.counters(), ref.counters());
}

// Issue #16, defect 10: a queued frame's ready and departure times were
// whatever its storage held before (an mbuf's previous use: ready before
// arrival), and the bottleneck's frames, the newest, were visited first,
// so a pipe's pcap went back in time. Held frames are visited in the order
// they leave: the frames on the wire (delay line and express path merged)
// by departure, then the bottleneck's.
TEST(Pipe, HeldFramesAreVisitedInDepartureOrderQueuedOnesLastWithNothingUnassigned) {
  PipeConfig c = rate_delay(100'000'000, 2 * kMs);
  c.jitter_ns = 300 * kUs;
  c.reorder = 0.2;
  FramePool pool(400);
  Pipe pipe = make_pipe(c);
  std::vector<Departure> early;
  for (size_t i = 0; i < pool.size(); ++i) {
    const int64_t at = static_cast<int64_t>(i) * 60 * kUs;  // faster than the rate
    testing::drain(pipe, pool, at, early);
    pool[i].ready_ns = pool[i].departure_ns = 7;  // left from an earlier use
    pool[i].length = 1000;
    pipe.enqueue(pool[i], at);
  }
  std::vector<size_t> on_wire;  // in the order visited
  bool in_bottleneck = false, head = true;
  int64_t last_departure = INT64_MIN;
  pipe.for_each_frame([&](const Frame& f) {
    const size_t i = pool.index_of(&f);
    if (f.stage == FrameStage::kBottleneck) {
      in_bottleneck = true;
      EXPECT_EQ(f.departure_ns, 0) << "frame " << i;
      if (head) {
        EXPECT_GT(f.ready_ns, f.arrival_ns) << "frame " << i;  // in serialization
      } else {
        EXPECT_EQ(f.ready_ns, 0) << "frame " << i;
      }
      head = false;
      return;
    }
    EXPECT_FALSE(in_bottleneck) << "frame " << i << " on the wire after a queued one";
    EXPECT_GE(f.departure_ns, last_departure) << "frame " << i;
    last_departure = f.departure_ns;
    on_wire.push_back(i);
  });
  ASSERT_TRUE(in_bottleneck);
  ASSERT_GT(on_wire.size(), 10u);
  ASSERT_GT(pipe.counters().reordered, 0u);
  // Those on the wire leave exactly in the order visited.
  std::vector<Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  const std::set<size_t> wire(on_wire.begin(), on_wire.end());
  std::vector<size_t> left;
  for (const Departure& d : out) {
    if (wire.count(d.index)) left.push_back(d.index);
  }
  EXPECT_EQ(left, on_wire);
}

TEST(Pipe, RestoreRefusesFramesOutOfOrder) {
  Pipe pipe = make_pipe(rate_delay(0, kMs));
  Frame a, b;
  a.stage = b.stage = FrameStage::kDelayLine;
  a.departure_ns = 10;
  b.departure_ns = 5;
  ASSERT_TRUE(pipe.restore_frame(a).is_ok());
  EXPECT_EQ(pipe.restore_frame(b).code(), ErrorCode::kInvalidArgument);
  pipe.clear([](Frame&) {});
}

}  // namespace
}  // namespace amber::link

namespace amber::link {
namespace {

TEST(PipeSurgery, RemoveInjectAndResizeKeepTheBooksBalanced) {
  PipeConfig c;
  c.delay_ns = 1'000'000;
  Pipe pipe = testing::make_pipe(c);
  testing::FramePool pool(6);
  for (size_t i = 0; i < 4; ++i) {
    pool[i].length = 100;
    ASSERT_TRUE(pipe.enqueue(pool[i], static_cast<int64_t>(i) * 1000).accepted);
  }
  // Remove the second frame, inject one between the third and the fourth,
  // and grow the first.
  ASSERT_TRUE(pipe.remove_frame(pool[1]).is_ok());
  EXPECT_EQ(pipe.remove_frame(pool[1]).code(), ErrorCode::kNotFound);
  pool[4].length = 60;
  ASSERT_TRUE(pipe.inject_frame(pool[4], 1'002'500, 5000).is_ok());
  EXPECT_EQ(pipe.inject_frame(pool[5], 10, 5000).code(), ErrorCode::kInvalidArgument);
  pipe.resize_frame(pool[0], 150);
  EXPECT_EQ(pipe.held_frames(), 4u);
  EXPECT_EQ(pipe.held_bytes(), 150u + 100 + 60 + 100);
  std::vector<testing::Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].index, 0u);
  EXPECT_EQ(out[1].index, 2u);
  EXPECT_EQ(out[2], (testing::Departure{4, 1'002'500}));
  EXPECT_EQ(out[3].index, 3u);
  // An injected frame far in the future holds back nothing behind it.
  pool[5].length = 10;
  ASSERT_TRUE(pipe.inject_frame(pool[5], 900'000'000, 2'000'000).is_ok());
  pool[1].length = 10;
  ASSERT_TRUE(pipe.enqueue(pool[1], 2'000'000).accepted);
  out.clear();
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], (testing::Departure{1, 3'000'000}));
  EXPECT_EQ(out[1], (testing::Departure{5, 900'000'000}));
  const PipeCounters& k = pipe.counters();
  EXPECT_EQ(k.frames_dropped[size_t(DropCause::kRemoved)], 1u);
  EXPECT_EQ(k.frames_in, k.frames_out + k.total_dropped());
  EXPECT_EQ(pipe.held_frames(), 0u);
}

// A frame injected on the express path while frames still wait in the
// bottleneck: it is visited among them where it will leave, before those
// that cannot leave before it and after those that will (the listing's
// positions are what surgery and the pcap export use).
TEST(PipeSurgery, AnExpressFrameIsVisitedAmongTheQueuedOnesWhereItLeaves) {
  // 8000 bits at 1 Mbit/s: each queued frame takes 8 ms, then 1 ms delay.
  PipeConfig c = rate_delay(1'000'000, kMs);
  Pipe pipe = testing::make_pipe(c);
  testing::FramePool pool(6);
  for (size_t i = 0; i < 4; ++i) {
    pool[i].length = 1000;
    ASSERT_TRUE(pipe.enqueue(pool[i], 0).accepted);
  }
  // Frames 0..3 leave at 9, 17, 25 and 33 ms: one injected at 12 ms goes
  // between the first and the second, one at 40 ms after all.
  pool[4].length = pool[5].length = 60;
  ASSERT_TRUE(pipe.inject_frame(pool[4], 12 * kMs, 0).is_ok());
  ASSERT_TRUE(pipe.inject_frame(pool[5], 40 * kMs, 0).is_ok());
  std::vector<size_t> visited;
  pipe.for_each_frame([&](const Frame& f) { visited.push_back(pool.index_of(&f)); });
  EXPECT_EQ(visited, (std::vector<size_t>{0, 4, 1, 2, 3, 5}));
  std::vector<testing::Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  std::vector<size_t> left;
  for (const auto& d : out) left.push_back(d.index);
  EXPECT_EQ(left, visited);
}

TEST(PipeSurgery, RemovingTheFrameInSerializationLetsTheNextStart) {
  PipeConfig c;
  c.rate_bps = 1'000'000'000;
  Pipe pipe = testing::make_pipe(c);
  testing::FramePool pool(2);
  pool[0].length = pool[1].length = 1500;
  ASSERT_TRUE(pipe.enqueue(pool[0], 0).accepted);
  ASSERT_TRUE(pipe.enqueue(pool[1], 0).accepted);
  ASSERT_TRUE(pipe.remove_frame(pool[0]).is_ok());
  std::vector<testing::Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) testing::drain(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], (testing::Departure{1, 12'000}));
}

}  // namespace
}  // namespace amber::link
