// The dense wire (DenseWire) as the dataplane drives it: frames whose Frame
// is never written at arrival, bursts on plain pipes, more frames than the
// wire holds. Each is checked against the pipe driven frame by frame with
// written Frames, the reference the rest of the suite pins down.
#include "link-emulator/dense_wire.h"

#include <gtest/gtest.h>

#include <tuple>

#include "harness.h"
#include "link-emulator/pipe.h"

namespace amber::link {
namespace {

using testing::Departure;
using testing::FramePool;
using testing::make_pipe;

using testing::kMs;
using testing::kUs;

// A Frame as the pipe would find it in a recycled mbuf.
void poison(Frame& f) {
  f.length = 0xa5a5a5a5;
  f.stage = static_cast<FrameStage>(0xa5);
  f.express = true;
  f.arrival_ns = f.extra_delay_ns = f.ready_ns = f.departure_ns = 0x5a5a5a5a5a5a5a5a;
}

// Dequeues everything due at now; departure times from dequeue(), never
// from the Frame.
void drain_unwritten(Pipe& pipe, FramePool& pool, int64_t now, std::vector<Departure>& out) {
  Frame* burst[32];
  int64_t departures[32];
  unsigned n;
  while ((n = pipe.dequeue(now, burst, departures, 32)) > 0) {
    for (unsigned i = 0; i < n; ++i) out.push_back({pool.index_of(burst[i]), departures[i]});
  }
}

struct Offer {
  int64_t at;
  uint32_t length;
};

struct Outcome {
  std::vector<Departure> departures;
  std::vector<Verdict> verdicts;
  PipeState state;
};

bool same(const Verdict& a, const Verdict& b) {
  return a.accepted == b.accepted && a.duplicate == b.duplicate && a.corrupt_bit == b.corrupt_bit &&
         (a.accepted || a.cause == b.cause);
}

// Frame by frame, written (the reference) or unwritten (as the dataplane).
Outcome run(const PipeConfig& config, const std::vector<Offer>& offers, bool written) {
  Pipe pipe = make_pipe(config);
  FramePool pool(offers.size());
  Outcome o;
  for (size_t i = 0; i < offers.size(); ++i) {
    (written ? testing::drain : drain_unwritten)(pipe, pool, offers[i].at, o.departures);
    poison(pool[i]);
    if (written) {
      pool[i].length = offers[i].length;
      o.verdicts.push_back(pipe.enqueue(pool[i], offers[i].at));
    } else {
      o.verdicts.push_back(pipe.enqueue(pool[i], offers[i].length, offers[i].at));
    }
  }
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) {
    (written ? testing::drain : drain_unwritten)(pipe, pool, t, o.departures);
  }
  o.state = pipe.state();
  return o;
}

// A plain 1 ms pipe holding the pool's frames of 100 bytes, two by two,
// each pair arriving 1 us after the one before.
Pipe pairs_on_a_plain_pipe(FramePool& pool) {
  PipeConfig c;
  c.delay_ns = kMs;
  Pipe pipe = make_pipe(c);
  for (size_t i = 0; i + 1 < pool.size(); i += 2) {
    poison(pool[i]);
    poison(pool[i + 1]);
    Frame* frames[2] = {&pool[i], &pool[i + 1]};
    const uint32_t lengths[2] = {100, 100};
    pipe.enqueue_burst(frames, lengths, 2, static_cast<int64_t>(i / 2) * 1000);
  }
  return pipe;
}

std::vector<Offer> bursts(size_t frames, size_t burst, int64_t gap_ns) {
  std::vector<Offer> offers;
  for (size_t i = 0; i < frames; ++i) {
    offers.push_back(
        {static_cast<int64_t>(i / burst) * gap_ns, static_cast<uint32_t>(60 + i % 1400)});
  }
  return offers;
}

std::vector<PipeConfig> configs() {
  std::vector<PipeConfig> all;
  PipeConfig delay;
  delay.delay_ns = kMs;
  all.push_back(delay);
  PipeConfig jitter = delay;
  jitter.jitter_ns = 300 * kUs;
  all.push_back(jitter);
  PipeConfig lossy = delay;
  lossy.loss = RandomLoss{0.05};
  lossy.duplicate = 0.02;
  lossy.corrupt = 0.02;
  lossy.reorder = 0.05;
  lossy.jitter_ns = 50 * kUs;
  lossy.jitter_distribution = JitterDistribution::kNormal;
  all.push_back(lossy);
  PipeConfig rate = delay;
  rate.rate_bps = 10'000'000'000;
  rate.queue_limit_frames = 300;
  all.push_back(rate);
  PipeConfig everything = lossy;
  everything.rate_bps = 1'000'000'000;
  everything.loss = GilbertElliottLoss{0.01, 0.3, 0.5, 0.001};
  everything.queue_limit_bytes = 100'000;
  all.push_back(everything);
  return all;
}

TEST(DenseWire, UnwrittenFramesMeetTheFateOfWrittenOnes) {
  // 20,000 frames in bursts of 32 every 2 us: ~10,000 on a 1 ms wire, more
  // than the dense wire holds by default, so the list is in play too.
  const auto offers = bursts(20'000, 32, 2 * kUs);
  for (const PipeConfig& c : configs()) {
    SCOPED_TRACE(describe(c));
    Outcome written = run(c, offers, true);
    Outcome unwritten = run(c, offers, false);
    EXPECT_EQ(unwritten.departures, written.departures);
    ASSERT_EQ(unwritten.verdicts.size(), written.verdicts.size());
    for (size_t i = 0; i < written.verdicts.size(); ++i) {
      ASSERT_TRUE(same(unwritten.verdicts[i], written.verdicts[i])) << "frame " << i;
    }
    EXPECT_EQ(unwritten.state, written.state);
  }
}

TEST(DenseWire, ABurstOnAPlainPipeIsItsFramesOneByOne) {
  PipeConfig c;
  c.delay_ns = kMs;
  Pipe one = make_pipe(c), whole = make_pipe(c);
  ASSERT_TRUE(whole.plain());
  const auto offers = bursts(32 * 1000, 32, 3 * kUs);
  FramePool p1(offers.size()), p2(offers.size());
  std::vector<Departure> out1, out2;
  for (size_t i = 0; i < offers.size(); i += 32) {
    drain_unwritten(one, p1, offers[i].at, out1);
    drain_unwritten(whole, p2, offers[i].at, out2);
    Frame* frames[32];
    uint32_t lengths[32];
    for (size_t k = 0; k < 32; ++k) {
      ASSERT_TRUE(one.enqueue(p1[i + k], offers[i + k].length, offers[i].at).accepted);
      frames[k] = &p2[i + k];
      lengths[k] = offers[i + k].length;
    }
    whole.enqueue_burst(frames, lengths, 32, offers[i].at);
    ASSERT_EQ(whole.held_bytes(), one.held_bytes());
  }
  for (int64_t t; (t = one.next_event_ns()) != kNever;) drain_unwritten(one, p1, t, out1);
  for (int64_t t; (t = whole.next_event_ns()) != kNever;) drain_unwritten(whole, p2, t, out2);
  EXPECT_EQ(out2, out1);
  EXPECT_EQ(whole.state(), one.state());
  ASSERT_EQ(out1.size(), offers.size());
  EXPECT_EQ(out1.back().departure_ns, offers.back().at + kMs);
}

// Bursts of 13 through a wire of a power-of-two slots, several times
// round: bursts straddle the ring's wrap, and departures are taken 7 at a
// time, so runs leave in pieces too.
TEST(DenseWire, BurstsAcrossTheRingsWrapLeaveInOrderAtTheirTimes) {
  PipeConfig c;
  c.delay_ns = kMs;
  Pipe one = make_pipe(c), whole = make_pipe(c);
  constexpr size_t kBurst = 13;
  const auto offers = bursts(kBurst * 2000, kBurst, 100 * kUs);
  ASSERT_GT(whole.wire_capacity(), 11 * kBurst);  // all on the wire: 1 ms holds 10 bursts
  ASSERT_GT(offers.size(), 4 * whole.wire_capacity());
  FramePool p1(offers.size()), p2(offers.size());
  std::vector<Departure> out1, out2;
  auto drain_by_seven = [&](int64_t now) {
    Frame* burst[7];
    int64_t departures[7];
    unsigned n;
    while ((n = whole.dequeue(now, burst, departures, 7)) > 0) {
      for (unsigned i = 0; i < n; ++i) out2.push_back({p2.index_of(burst[i]), departures[i]});
    }
  };
  for (size_t i = 0; i < offers.size(); i += kBurst) {
    drain_unwritten(one, p1, offers[i].at, out1);
    drain_by_seven(offers[i].at);
    Frame* frames[kBurst];
    uint32_t lengths[kBurst];
    for (size_t k = 0; k < kBurst; ++k) {
      ASSERT_TRUE(one.enqueue(p1[i + k], offers[i + k].length, offers[i].at).accepted);
      frames[k] = &p2[i + k];
      lengths[k] = offers[i + k].length;
    }
    whole.enqueue_burst(frames, lengths, kBurst, offers[i].at);
    ASSERT_EQ(whole.held_bytes(), one.held_bytes());
  }
  for (int64_t t; (t = one.next_event_ns()) != kNever;) drain_unwritten(one, p1, t, out1);
  for (int64_t t; (t = whole.next_event_ns()) != kNever;) drain_by_seven(t);
  ASSERT_EQ(out1.size(), offers.size());
  EXPECT_EQ(out2, out1);
  EXPECT_EQ(whole.state(), one.state());
}

TEST(DenseWire, PlainMeansNoDecisionPerFrame) {
  PipeConfig c;
  EXPECT_TRUE(make_pipe(c).plain());
  c.loss = RandomLoss{0.001};
  EXPECT_FALSE(make_pipe(c).plain());
  c = PipeConfig{};
  c.jitter_ns = 1;
  EXPECT_FALSE(make_pipe(c).plain());
  c = PipeConfig{};
  c.rate_bps = 1'000'000;
  EXPECT_FALSE(make_pipe(c).plain());
  Pipe pipe = make_pipe(PipeConfig{});
  PipeConfig reorder;
  reorder.reorder = 0.1;
  ASSERT_TRUE(pipe.reconfigure(reorder, 0).is_ok());
  EXPECT_FALSE(pipe.plain());
}

using Fields = std::tuple<uint32_t, FrameStage, bool, int64_t, int64_t, int64_t, int64_t>;

std::vector<Fields> visit(const Pipe& pipe) {
  std::vector<Fields> out;
  pipe.for_each_frame([&](const Frame& f) {
    out.emplace_back(f.length, f.stage, f.express, f.arrival_ns, f.extra_delay_ns, f.ready_ns,
                     f.departure_ns);
  });
  return out;
}

TEST(DenseWire, VisitorsSeeUnwrittenFramesAsIfWritten) {
  for (const PipeConfig& c : configs()) {
    SCOPED_TRACE(describe(c));
    const auto offers = bursts(9'000, 16, 1 * kUs);
    Pipe written = make_pipe(c), unwritten = make_pipe(c);
    FramePool pw(offers.size()), pu(offers.size());
    std::vector<Departure> ow, ou;
    for (size_t i = 0; i < offers.size(); ++i) {
      testing::drain(written, pw, offers[i].at, ow);
      drain_unwritten(unwritten, pu, offers[i].at, ou);
      poison(pw[i]);  // both: fields not yet valid (a queued frame's ready time) stay as found
      pw[i].length = offers[i].length;
      written.enqueue(pw[i], offers[i].at);
      poison(pu[i]);
      unwritten.enqueue(pu[i], offers[i].length, offers[i].at);
    }
    ASSERT_GT(written.held_frames(), 500u);
    EXPECT_EQ(visit(unwritten), visit(written));
    written.clear([](Frame&) {});
    unwritten.clear([](Frame&) {});
  }
}

TEST(DenseWire, FramesBeyondTheWireWaitInOrderAndReserveKeepsIt) {
  PipeConfig c;
  c.delay_ns = 10 * kMs;
  Pipe pipe = make_pipe(c);
  const uint32_t capacity = pipe.wire_capacity();
  const size_t frames = 3 * capacity;
  FramePool pool(frames);
  std::vector<Frame*> burst;
  std::vector<uint32_t> lengths(frames, 64);
  for (size_t i = 0; i < frames; ++i) burst.push_back(&pool[i]);
  // Single frames with distinct arrivals: one run each, so the runs fill
  // first; then a burst of one instant.
  for (size_t i = 0; i < capacity; ++i) pipe.enqueue(pool[i], 64, static_cast<int64_t>(i));
  pipe.enqueue_burst(burst.data() + capacity, lengths.data(), 2 * capacity, kMs);
  EXPECT_EQ(pipe.held_frames(), frames);
  std::vector<size_t> order;
  pipe.for_each_frame([&](const Frame& f) { order.push_back(pool.index_of(&f)); });
  ASSERT_EQ(order.size(), frames);
  for (size_t i = 0; i < frames; ++i) ASSERT_EQ(order[i], i);
  pipe.reserve(static_cast<uint32_t>(4 * capacity));
  EXPECT_GE(pipe.wire_capacity(), 4 * capacity);
  std::vector<Departure> out;
  drain_unwritten(pipe, pool, 10 * kMs + capacity / 2, out);  // half the single frames
  ASSERT_EQ(out.size(), capacity / 2 + 1);
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) drain_unwritten(pipe, pool, t, out);
  ASSERT_EQ(out.size(), frames);
  for (size_t i = 0; i < frames; ++i) {
    ASSERT_EQ(out[i].index, i);
    ASSERT_EQ(out[i].departure_ns, 10 * kMs + (i < capacity ? static_cast<int64_t>(i) : kMs));
  }
  EXPECT_EQ(pipe.counters().bytes_out, 64u * frames);
  EXPECT_EQ(pipe.held_bytes(), 0u);
}

// Written frames (here from a bottleneck) wait in the list; unwritten ones
// that arrive behind them after a change to an unlimited rate must not
// overtake them.
TEST(DenseWire, UnwrittenFramesQueueBehindWrittenOnesAfterARateChange) {
  PipeConfig limited;
  limited.rate_bps = 100'000'000;
  limited.delay_ns = 2 * kMs;
  limited.queue_limit_frames = 5000;
  PipeConfig unlimited = limited;
  unlimited.rate_bps = 0;
  const auto offers = bursts(20'000, 32, 2 * kUs);
  std::vector<std::vector<Departure>> outs;
  for (bool written : {true, false}) {
    Pipe pipe = make_pipe(limited);
    FramePool pool(offers.size());
    std::vector<Departure> out;
    for (size_t i = 0; i < offers.size(); ++i) {
      (written ? testing::drain : drain_unwritten)(pipe, pool, offers[i].at, out);
      if (i == offers.size() / 4) {
        ASSERT_TRUE(pipe.reconfigure(unlimited, offers[i].at).is_ok());
      }
      if (written) {
        pool[i].length = offers[i].length;
        pipe.enqueue(pool[i], offers[i].at);
      } else {
        poison(pool[i]);
        pipe.enqueue(pool[i], offers[i].length, offers[i].at);
      }
    }
    for (int64_t t; (t = pipe.next_event_ns()) != kNever;) {
      (written ? testing::drain : drain_unwritten)(pipe, pool, t, out);
    }
    outs.push_back(out);
  }
  EXPECT_EQ(outs[1], outs[0]);
  for (size_t i = 1; i < outs[0].size(); ++i) {
    ASSERT_LE(outs[0][i - 1].departure_ns, outs[0][i].departure_ns);
  }
}

TEST(DenseWire, SurgeryFindsUnwrittenFrames) {
  FramePool pool(4);
  Pipe pipe = pairs_on_a_plain_pipe(pool);
  std::vector<Frame*> held = testing::held_frames(pipe);
  ASSERT_EQ(held.size(), 4u);
  EXPECT_EQ(held[2]->departure_ns, kMs + 1000);
  EXPECT_EQ(held[2]->stage, FrameStage::kDelayLine);
  ASSERT_TRUE(pipe.remove_frame(*held[1]).is_ok());
  ASSERT_TRUE(pipe.remove_frame(*held[0]).is_ok());  // empties the first run
  EXPECT_EQ(pipe.remove_frame(*held[0]).code(), ErrorCode::kNotFound);
  EXPECT_EQ(pipe.next_event_ns(), kMs + 1000);
  pipe.resize_frame(*held[3], 150);
  EXPECT_EQ(pipe.held_bytes(), 250u);
  std::vector<Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) drain_unwritten(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], (Departure{2, kMs + 1000}));
  EXPECT_EQ(out[1], (Departure{3, kMs + 1000}));
  EXPECT_EQ(pipe.counters().bytes_out, 250u);
  EXPECT_EQ(pipe.counters().frames_dropped[size_t(DropCause::kRemoved)], 2u);
}

// A slot holds 16 bits of length: a frame made longer moves, with the
// frames behind it, to the list, and nothing changes order.
TEST(DenseWire, AFrameGrownPastItsSlotMovesToTheListWithThoseBehindIt) {
  FramePool pool(8);
  Pipe pipe = pairs_on_a_plain_pipe(pool);
  std::vector<Frame*> held = testing::held_frames(pipe);
  pipe.resize_frame(*held[3], 70'000);
  pipe.resize_frame(*held[5], 200);  // in the list now
  EXPECT_EQ(pipe.held_bytes(), 6 * 100u + 70'000 + 200);
  std::vector<size_t> order;
  pipe.for_each_frame([&](const Frame& f) { order.push_back(pool.index_of(&f)); });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  std::vector<Departure> out;
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) drain_unwritten(pipe, pool, t, out);
  ASSERT_EQ(out.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(out[i], (Departure{i, kMs + 1000 * static_cast<int64_t>(i / 2)}));
  }
  EXPECT_EQ(pipe.counters().bytes_out, 6 * 100u + 70'000 + 200);
}

TEST(DenseWire, UnwrittenFramesRestoreIntoAFreshPipeWithAnIdenticalFuture) {
  PipeConfig c;
  c.delay_ns = 3 * kMs;
  c.jitter_ns = 500 * kUs;
  c.reorder = 0.02;
  c.loss = RandomLoss{0.01};
  const auto offers = bursts(12'000, 8, 2 * kUs);
  const size_t cut = 6'001;
  Outcome expected = run(c, offers, true);

  Pipe first = make_pipe(c);
  FramePool pool(offers.size());
  std::vector<Departure> got;
  for (size_t i = 0; i < cut; ++i) {
    drain_unwritten(first, pool, offers[i].at, got);
    first.enqueue(pool[i], offers[i].length, offers[i].at);
  }
  Pipe second = testing::restore_into_fresh(first);
  for (size_t i = cut; i < offers.size(); ++i) {
    drain_unwritten(second, pool, offers[i].at, got);
    second.enqueue(pool[i], offers[i].length, offers[i].at);
  }
  for (int64_t t; (t = second.next_event_ns()) != kNever;) drain_unwritten(second, pool, t, got);
  EXPECT_EQ(got, expected.departures);
  EXPECT_EQ(second.state(), expected.state);
}

// A restore replaces a pipe and keeps the old one's wire: the new pipe gets
// the room, and a wire still holding frames is never taken.
TEST(DenseWire, TakeWireMovesTheRoomOfAnEmptiedPipeOnly) {
  PipeConfig c;
  c.delay_ns = kMs;
  Pipe old = make_pipe(c);
  old.reserve(8192);
  const uint32_t big = old.wire_capacity();
  FramePool pool(4);
  old.enqueue(pool[0], 64, 0);
  Pipe fresh = make_pipe(c);
  const uint32_t small = fresh.wire_capacity();
  ASSERT_LT(small, big);
  fresh.take_wire(old);  // old holds a frame: nothing moves
  EXPECT_EQ(fresh.wire_capacity(), small);
  EXPECT_EQ(old.held_frames(), 1u);
  old.clear([](Frame&) {});
  fresh.take_wire(old);
  EXPECT_EQ(fresh.wire_capacity(), big);
  // The taken wire carries frames like a new one.
  std::vector<Frame*> burst = {&pool[1], &pool[2], &pool[3]};
  std::vector<uint32_t> lengths(3, 100);
  fresh.enqueue_burst(burst.data(), lengths.data(), 3, 5);
  std::vector<Departure> out;
  drain_unwritten(fresh, pool, kMs + 5, out);
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i].index, i + 1);
    EXPECT_EQ(out[i].departure_ns, kMs + 5);
  }
}

}  // namespace
}  // namespace amber::link
