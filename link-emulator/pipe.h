// One direction of an emulated link: bottleneck queue -> serialization at the
// link rate -> propagation delay (with jitter that never reorders) -> out.
//
// All times are virtual nanoseconds (see virtual_clock.h): the caller stamps
// each call with the current virtual time, so a frozen clock freezes the
// pipe, and tests assert exact timestamps. Every random decision is drawn at
// arrival, in a fixed order, from the pipe's own generator, so the schedule
// depends only on arrival times and never on how often the pipe is polled.
//
// Frames are never allocated or copied here: the pipe holds the caller's
// Frame objects in three FIFOs (bottleneck, delay line, express path) of
// intrusive lists, and in dense rings beside them for the frames whose
// Frame the caller does not write (dense_wire.h), and hands them back on
// departure or drop. Single-threaded; the owning lcore calls everything.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/status.h"
#include "link-emulator/dense_wire.h"
#include "link-emulator/frame.h"
#include "link-emulator/link_event.h"
#include "link-emulator/loss_process.h"
#include "link-emulator/pipe_config.h"
#include "link-emulator/rng.h"
#include "link-emulator/schedule.h"

namespace amber::link {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// Append-only: the values are stored in checkpoint images.
enum class DropCause : uint8_t {
  kLoss = 0,         // the loss model chose the frame
  kQueueFrames = 1,  // bottleneck queue full (frame limit)
  kQueueBytes = 2,   // bottleneck queue full (byte limit)
  kRemoved = 3,      // removed from a frozen pipe by an operator (queue surgery)
  kLinkDown = 4,     // arrived while the link was down (PipeConfig::down)
};
inline constexpr size_t kDropCauseCount = 5;
const char* drop_cause_name(DropCause cause);

struct PipeCounters {
  uint64_t frames_in = 0;
  uint64_t bytes_in = 0;
  uint64_t frames_out = 0;
  uint64_t bytes_out = 0;
  std::array<uint64_t, kDropCauseCount> frames_dropped{};
  std::array<uint64_t, kDropCauseCount> bytes_dropped{};
  uint64_t duplicated = 0;
  uint64_t corrupted = 0;
  uint64_t reordered = 0;

  uint64_t total_dropped() const;
  bool operator==(const PipeCounters&) const = default;
};

// What happened to a frame offered to enqueue(). 16 bytes, so it comes
// back in registers.
struct Verdict {
  int64_t corrupt_bit = -1;            // >= 0: the caller flips this bit of the frame's bytes
  bool accepted = false;               // held by the pipe now; else the caller frees it
  bool duplicate = false;              // the caller should clone it and enqueue_duplicate()
  DropCause cause = DropCause::kLoss;  // valid when !accepted
};
static_assert(sizeof(Verdict) == 16);

// The pipe's scalar state, exactly what a checkpoint needs besides the
// frames (which it lists with for_each_frame()).
struct PipeState {
  Rng::State rng{};
  uint8_t loss_state = 0;
  int64_t link_free_ns = 0;          // end of the last serialization
  uint64_t serialization_carry = 0;  // sub-ns remainder (units of 1/rate ns) for exact rates
  int64_t last_departure_ns = std::numeric_limits<int64_t>::min();
  PipeCounters counters;
  ScheduleState schedule;         // position in the configuration's schedule, if any
  std::vector<LinkEvent> events;  // pending, in the order they fire
  bool operator==(const PipeState&) const = default;
};

class Pipe {
 public:
  static Result<Pipe> create(const PipeConfig& config);

  Pipe(Pipe&&) = default;
  Pipe& operator=(Pipe&&) = default;
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  // Offers a frame arriving at virtual time now (non-decreasing across calls).
  // frame.length must be set; the pipe writes the rest.
  Verdict enqueue(Frame& frame, int64_t now);

  // The same for a frame whose Frame the caller has not written (a cold
  // mbuf's private area): the length comes apart, and the pipe writes the
  // Frame only where it must (bottleneck, express path, a full dense wire).
  // A frame of an unlimited-rate pipe may leave with its Frame unwritten:
  // its departure time comes back from dequeue(), and for_each_frame()
  // writes it before a visitor sees it.
  Verdict enqueue(Frame& frame, uint32_t length, int64_t now);

  // No rate, no jitter, no random decision, no schedule, no pending event,
  // not down: every frame arriving at one instant meets the same fate, so
  // a burst can be taken whole.
  bool plain() const { return plain_; }
  // n frames arriving at now on a plain() pipe, Frames unwritten: exactly
  // what n calls of enqueue(frame, length, now) would do (all accepted).
  void enqueue_burst(Frame* const* frames, const uint32_t* lengths, unsigned n, int64_t now);

  // A copy the caller made after Verdict::duplicate: enqueued like a new
  // arrival but never lost or duplicated again (as netem does).
  Verdict enqueue_duplicate(Frame& frame, int64_t now);

  // Moves up to max frames whose departure time is <= now into out, in
  // departure order. Returns how many. departures, if given, receives each
  // frame's departure time (the only place it is found for a frame that
  // left unwritten); arrivals, if given, each unwritten frame's arrival
  // time (DenseWire::kWritten for a frame whose Frame holds its stamps), so
  // a caller that must keep a frame after all (its port refused it) can
  // write its Frame with write_departed().
  unsigned dequeue(int64_t now, Frame** out, unsigned max) {
    return dequeue(now, out, nullptr, max);
  }
  unsigned dequeue(int64_t now, Frame** out, int64_t* departures, unsigned max,
                   int64_t* arrivals = nullptr);
  // Cold: makes a frame dequeue() handed out hold its stamps, as a frame
  // at the head of the delay line (its ready time is its arrival; an
  // unwritten frame's jitter is not known any more and is recorded as 0).
  static void write_departed(Frame& frame, uint32_t length, int64_t departure_ns,
                             int64_t arrival_ns) {
    DenseWire::write_delay_line(frame, length, departure_ns, arrival_ns == DenseWire::kWritten,
                                {arrival_ns, 0});
  }

  // Room on the dense wire for at least `frames` unwritten frames (beyond
  // it they are written and wait in the list: correct, slower). Allocates:
  // only from the thread that owns the pipe, never on the hot path.
  void reserve(uint32_t frames);
  uint32_t wire_capacity() const { return dense_.capacity(); }
  // Takes over the dense wire of `old`, a pipe that clear() emptied, when
  // it is larger than this empty pipe's: a restore replacing a pipe keeps
  // its storage instead of allocating and touching it again.
  void take_wire(Pipe& old);

  // Earliest virtual time at which dequeue() could return a frame, or kNever
  // when the pipe is empty. For idle back-off.
  int64_t next_event_ns() const;

  // Changes the parameters at virtual time now without losing or reordering
  // a held frame: frames on the wire keep their departure times, the frame
  // in serialization finishes its remaining bits at the new rate, queued
  // frames are serialized at the new rate. The RNG is reseeded only if the
  // seed changed. Frames beyond a new, smaller queue limit stay (they were
  // accepted); new arrivals see the limit. A segment of a schedule begins
  // the same way at its instant; a frame in transmission when a trace
  // starts or ends finishes as it was scheduled. A new schedule starts at
  // now; the same schedule keeps its position (its segments see the new
  // static values). Pending events stay; refused if one of them would
  // not apply to the new configuration.
  Status reconfigure(const PipeConfig& config, int64_t now);

  // Events at instants of the pipe's virtual time (link_event.h), merged
  // into those pending (after any given earlier for the same instant).
  // Each applies at its exact instant however late the pipe is polled,
  // as a segment of the schedule begins (reconfigure()'s rules for held
  // frames), and changes the static configuration, as reconfigure() with
  // that change would: config() shows it. Refused, all of them, when one
  // lies before now or any pending event would make the configuration
  // invalid. Cold: allocates.
  Status schedule_events(std::vector<LinkEvent> events, int64_t now);
  // Drops every pending event; returns how many there were.
  size_t cancel_events();
  const std::vector<LinkEvent>& pending_events() const { return events_; }

  // The configuration as given (static parameters and schedule), with the
  // events that fired applied.
  const PipeConfig& config() const { return base_; }
  // The parameters in force now (the schedule's segment applied; no
  // schedule). While a trace runs, it gives the rate instead of rate_bps.
  const PipeConfig& current() const { return config_; }
  // Whether a trace shapes the pipe now.
  bool traced() const { return traced_; }
  // Where the schedule stands (meaningful when config().schedule is set).
  const ScheduleState& schedule_state() const { return sched_; }
  // A schedule that starts on the link's first frame and has not: the
  // pipe's own first frame starts it, or start_schedule_at() for a frame
  // in the other direction.
  bool awaits_first_frame() const { return awaiting_frame_; }
  // Starts a schedule that awaits the first frame at virtual instant `at`
  // (the other direction's first frame; no later than now: a later one,
  // from a worker whose clock ran ahead, starts it now). An instant before
  // the pipe began waiting (schedule_state().start_ns) is ignored.
  void start_schedule_at(int64_t at, int64_t now);
  // The rate a trace allows over [from, from + window) of virtual time, in
  // bit/s of opportunity bytes; 0 when no trace runs. Cold (for stats).
  uint64_t trace_rate_bps(int64_t from, int64_t window) const;
  const PipeCounters& counters() const { return counters_; }
  uint32_t queued_frames() const { return queued_frames_; }
  uint64_t queued_bytes() const { return queued_bytes_; }
  uint64_t held_frames() const { return held_frames_; }
  uint64_t held_bytes() const { return held_bytes_; }

  // Checkpoint support. The state is read and written whole; frames are
  // visited in the order they will leave each stage.
  PipeState state() const;
  void set_state(const PipeState& state);
  // Frames on the dense wire have their Frame written first.
  template <typename Visitor>
  void for_each_frame(Visitor&& visit) const {
    // In the order they leave (#16 defect 10): the wire (dense front, then
    // the delay line's list) merged with the express path, the wire first
    // on a tie as in dequeue(); then the bottleneck's, still queued, each
    // placed among the express frames by the earliest it can leave (its
    // serialization at the current rate after the frame before it, plus
    // the delay: jitter only adds). Each stage keeps its own order, so
    // restore_frame() rebuilds it.
    auto express = express_.begin();
    auto wire_at = [&](const Frame& f, int64_t departure_ns) {
      for (; express != express_.end() && express->departure_ns < departure_ns; ++express) {
        visit(*express);
      }
      visit(f);
    };
    auto wire = [&](const Frame& f) { wire_at(f, f.departure_ns); };
    dense_.for_each(wire);
    for (const Frame& f : delay_line_) wire(f);
    int64_t ready = link_free_ns_;
    for (const Frame& f : bottleneck_) {
      ready = f.ready_ns != 0 ? f.ready_ns
                              : std::max(ready, f.arrival_ns) + earliest_serialization_ns(f.length);
      wire_at(f, ready + config_.delay_ns);
    }
    for (; express != express_.end(); ++express) visit(*express);
  }
  // Puts a frame back as it was saved (stage and timestamps set by the
  // caller), appending to its stage's FIFO. Only on a pipe being restored.
  Status restore_frame(Frame& frame);
  // Queue surgery on a frozen pipe (cold paths; the caller owns the bytes).
  // Takes a held frame out, counted as dropped (kRemoved); the caller frees it.
  Status remove_frame(Frame& frame);
  // Puts a new frame on the wire to depart at departure_ns (on the express
  // path, so it holds back no other frame); counted as an arrival.
  Status inject_frame(Frame& frame, int64_t departure_ns, int64_t now);
  // The caller changed a held frame's bytes to new_length.
  void resize_frame(Frame& frame, uint32_t new_length);

  // Hands every held frame to release (e.g. to free the mbufs) and empties
  // the pipe. Counters are kept.
  template <typename Release>
  void clear(Release&& release) {
    lookahead_ = nullptr;
    dense_.clear(release);
    for (FrameList* list : {&bottleneck_, &delay_line_, &express_}) {
      while (!list->empty()) {
        Frame& f = list->front();
        list->pop_front();
        release(f);
      }
    }
    queued_frames_ = 0;
    queued_bytes_ = 0;
    held_frames_ = 0;
    held_bytes_ = 0;
  }

 private:
  explicit Pipe(const PipeConfig& config);

  template <bool kWritten>
  Verdict offer(Frame& frame, uint32_t length, int64_t now);
  template <bool kWritten>
  Verdict admit(Frame& frame, uint32_t length, int64_t now, Verdict verdict);
  // Moves frames whose serialization ended by now onto the wire. Inline
  // check, out-of-line work: most calls find nothing to move.
  void advance(int64_t now) {
    if (!bottleneck_.empty() && bottleneck_.front().ready_ns <= now) advance_slow(now);
  }
  // Applies every change of the schedule and every event due by now, each
  // at its own instant. Inline check: without either the next change is
  // never.
  void catch_up(int64_t now) {
    if (now >= next_change_ns_) [[unlikely]]
      catch_up_slow(now);
  }
  void catch_up_slow(int64_t now);
  void start_schedule(int64_t at);
  void step_schedule(int64_t at);
  // Not started yet: since `now`, as the schedule's start says.
  void await_schedule(int64_t now);
  void update_awaiting() {
    awaiting_frame_ =
        schedule_ && !sched_.started && schedule_->start == ScheduleStart::kFirstFrame;
  }
  void fire_event();
  // next_change_ns_: the earlier of the schedule's next change and the
  // first pending event.
  void update_next_change() {
    next_change_ns_ =
        events_.empty() ? next_segment_ns_ : std::min(next_segment_ns_, events_.front().at_ns);
  }
  bool skip_cycles(int64_t at, int64_t now);
  // Binds config()'s schedule: segments resolved against the static
  // parameters. Does not move the position.
  void bind_schedule();
  // The parameters the schedule's position asks for, and whether a trace runs.
  const PipeConfig& scheduled_config() const;
  bool scheduled_trace() const;
  int64_t next_change_after_position() const;
  // Moves to new parameters at now (the body of reconfigure()).
  void change_to(const PipeConfig& next, bool traced, int64_t now);
  // The trace: when the head of the bottleneck has been delivered.
  int64_t trace_ready(const Frame& head);
  int64_t opportunity_ns() const {
    return trace_loop_base_ns_ + int64_t{trace_->ms[sched_.trace_index]} * 1'000'000;
  }
  void next_opportunity() {
    if (++sched_.trace_index == trace_->ms.size()) {
      sched_.trace_index = 0;
      ++sched_.trace_loops;
      trace_loop_base_ns_ += trace_->period_ns();
    }
  }
  void skip_opportunities_through(int64_t t);
  void advance_slow(int64_t now);
  // Moves frames of the list part of the delay line into its dense part
  // while that has room, so that unwritten frames can follow (they go to
  // the dense part only behind nothing in the list).
  void refill() {
    if (!delay_line_.empty()) refill_slow();
  }
  void refill_slow();
  void advance_lookahead(const Frame* popped);
  // dequeue()'s hand-out of frames due by now from the wire (delay line and
  // express path, merged in departure order), adding their bytes.
  unsigned hand_out(int64_t now, Frame** out, int64_t* departures, unsigned max, int64_t* arrivals,
                    uint64_t& bytes);
  static void insert_sorted(FrameList& list, Frame& frame);
  static constexpr unsigned kLookahead = 8;
  static constexpr unsigned kRefill = 64;
  static constexpr uint32_t kDefaultWireFrames = 4096;
  void start_serialization(Frame& head);
  int64_t serialization_ns(uint32_t length);
  // The same at the current static rate, without the carry (0 while a
  // trace shapes the pipe: its opportunities are not known ahead). Cold.
  int64_t earliest_serialization_ns(uint32_t length) const {
    const uint64_t rate = traced_ ? 0 : config_.rate_bps;
    if (rate == 0) return 0;
    return static_cast<int64_t>((uint64_t{length} + config_.overhead_bytes) * 8 * 1'000'000'000ULL /
                                rate);
  }
  // A written frame leaves the bottleneck (or arrives at an unlimited-rate
  // pipe): express path or the delay line's list.
  void put_on_wire(Frame& frame);
  // An unwritten frame onto the delay line's dense part; the Frame is
  // written only if it must wait in the list.
  void put_on_wire(Frame& frame, uint32_t length, int64_t departure_ns, DenseWire::Stamps stamps);
  // The departure of a frame ready (serialized) at ready_ns: delay and
  // jitter, but never before it was serialized, nor before the frame ahead.
  int64_t departure_after(int64_t ready_ns, int64_t extra_delay_ns) {
    int64_t departure = ready_ns + config_.delay_ns + extra_delay_ns;
    if (departure < ready_ns) departure = ready_ns;
    if (departure < last_departure_ns_) departure = last_departure_ns_;
    last_departure_ns_ = departure;
    return departure;
  }
  int64_t delay_line_head_ns() const;  // kNever when empty
  int64_t delay_line_tail_ns() const;
  int64_t draw_jitter();
  void apply_config(const PipeConfig& config, bool traced);
  void update_plain();
  Verdict drop(uint32_t length, DropCause cause, Verdict verdict);
  void count_removed(uint32_t length);

  PipeConfig config_;  // in force now, without the schedule
  // Of the schedule or an event (kNever: never; min: at the first event).
  int64_t next_change_ns_ = kNever;
  PipeCounters counters_;
  Rng rng_;
  LossProcess loss_;
  Chance duplicate_, corrupt_, reorder_;
  // Limits as plain integers: "no limit" is the maximum.
  uint32_t limit_frames_ = 0;
  uint64_t limit_bytes_ = 0;

  bool plain_ = false;
  bool shaped_ = false;  // frames wait in the bottleneck: a rate or a trace
  bool traced_ = false;
  bool down_ = false;  // every arrival is dropped

  FrameList bottleneck_;  // arrival order; the head is in serialization
  // The delay line, in departure order: first dense_ (unwritten frames,
  // and written ones moved in ahead of them), then delay_line_ (written
  // frames, and unwritten ones when dense_ was full).
  DenseWire dense_;
  FrameList delay_line_;
  FrameList express_;  // departure order, skipping the delay line
  uint32_t queued_frames_ = 0;
  uint64_t queued_bytes_ = 0;
  uint64_t held_frames_ = 0;
  uint64_t held_bytes_ = 0;
  int64_t link_free_ns_ = 0;
  uint64_t serialization_carry_ = 0;
  int64_t last_departure_ns_ = std::numeric_limits<int64_t>::min();
  const Frame* lookahead_ = nullptr;  // prefetch cursor in delay_line_

  // The schedule, after the per-frame state (a static pipe never reads
  // it): where it stands, the trace while one runs, its segments applied
  // to the static parameters, and the configuration as given.
  ScheduleState sched_;
  const DeliveryTrace* trace_ = nullptr;
  int64_t trace_loop_base_ns_ = 0;  // start of the trace's current pass
  const Schedule* schedule_ = nullptr;
  std::vector<PipeConfig> segment_configs_;
  bool cycle_changes_loss_ = false;   // a full loop of segments restarts the loss model
  int64_t next_segment_ns_ = kNever;  // the schedule's next change (min: at the first event)
  bool awaiting_frame_ = false;       // awaits_first_frame()
  std::vector<LinkEvent> events_;     // pending, in the order they fire
  PipeConfig base_;
};

}  // namespace amber::link
