// One direction of a link as the worker runs it: frames received on rx_port
// go through the pipe and leave on tx_port.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>

#include "dataplane/frame_watch.h"
#include "link-emulator/pipe.h"

namespace amber::dataplane {

inline constexpr uint16_t kBurst = 32;
// Frames dequeued from the pipe that the tx ring has not yet taken; they
// are retried before anything else leaves, never dropped.
inline constexpr uint16_t kTxPending = 2 * kBurst;

// How late frames leave, as the node sees it: per tx burst, the pass's
// virtual time minus the virtual departure of the burst's earliest frame,
// counted in buckets below these bounds (ns; the last one is open).
inline constexpr std::array<int64_t, 12> kLatenessBoundsNs = {
    50, 100, 200, 500, 1'000, 2'000, 5'000, 10'000, 100'000, 1'000'000, 10'000'000, INT64_MAX};

// Node-level counters beyond the pipe's own.
struct DirectionCounters {
  uint64_t rx_bursts = 0;
  uint64_t tx_retries = 0;        // tx bursts the port did not take whole
  uint64_t dup_no_mbuf = 0;       // duplicates not made: the mempool was empty
  uint64_t oversize = 0;          // multi-segment frames refused (the pipe holds linear frames)
  uint64_t late_departures = 0;   // frames sent more than 10 us after their virtual departure
  uint64_t no_priv_area = 0;      // mbufs from a pool without room for the Frame: dropped
  uint64_t run_on_port_down = 0;  // run-ons stopped by their port going down (its VM stopped)
  std::array<uint64_t, kLatenessBoundsNs.size()> burst_lateness{};
};

struct Direction {
  Direction(std::string link, std::string name, uint16_t rx, uint16_t tx, link::Pipe p)
      : link_name(std::move(link)),
        direction(std::move(name)),
        rx_port(rx),
        tx_port(tx),
        pipe(std::move(p)) {}

  std::string link_name;
  std::string direction;  // "a_to_b" or "b_to_a"
  uint16_t rx_port;
  uint16_t tx_port;
  link::Pipe pipe;
  rte_mbuf* pending[kTxPending] = {};
  uint16_t pending_count = 0;
  // The burst received in the previous pass, stamped then, not yet in the
  // pipe: its headers were prefetched when it came in, so the pass that
  // puts it in reads them from the cache (see Worker::run).
  rte_mbuf* staged[kBurst] = {};
  uint16_t staged_count = 0;
  int64_t staged_arrival = 0;       // virtual
  int64_t staged_real_arrival = 0;  // real, for the frame watches
  DirectionCounters counters;
  // Armed frame-pattern watches, changed only by the owning worker (through
  // its command ring); the control thread owns the FrameWatch objects.
  FrameWatch* watches[kMaxWatchesPerDirection] = {};
  uint8_t watch_count = 0;
  // The direction's own timeline: the worker's virtual time less `shift_ns`
  // (the controller aligns a direction to the VM it delivers to: see
  // DelayNode::shift), never below `shift_floor_ns` so that a shift later
  // makes the direction stand still instead of going back in time.
  int64_t shift_ns = 0;
  int64_t shift_floor_ns = INT64_MIN;

  int64_t virtual_time(int64_t worker_virtual_ns) const {
    const int64_t t = worker_virtual_ns - shift_ns;
    return t > shift_floor_ns ? t : shift_floor_ns;
  }
  // Moves the timeline by `by_ns` from the worker's virtual time `now`.
  void shift(int64_t by_ns, int64_t worker_virtual_now_ns) {
    shift_floor_ns = virtual_time(worker_virtual_now_ns);
    shift_ns += by_ns;
  }
  // Run-on: while the worker stands frozen from real instant
  // `run_on_from_ns` (INT64_MAX: no run-on), this direction keeps its own
  // time, `run_on_base_ns` there, running with real time up to
  // `run_on_until_ns`; it departs and stamps arrivals on it. It ends when
  // its VM is reported stopped (end_run_on), or at the thaw or a park,
  // and what it ran is kept in `ran_on_ns` for the next shift to add back.
  int64_t run_on_from_ns = INT64_MAX;
  int64_t run_on_until_ns = INT64_MAX;
  int64_t run_on_base_ns = 0;
  int64_t ran_on_ns = 0;

  bool has_run_on() const { return run_on_from_ns != INT64_MAX; }
  bool runs_on(int64_t real_ns) const { return real_ns >= run_on_from_ns; }
  // Its own time at real_ns while it runs on.
  int64_t run_on_time(int64_t real_ns) const {
    return run_on_base_ns + (real_ns < run_on_until_ns ? real_ns : run_on_until_ns) -
           run_on_from_ns;
  }
  // Ends the run-on: its timeline stands where it was at `stopped_ns` (real;
  // clamped to the run-on's span and to now), never going back from where it reached
  // by `real_now` (the frames sent meanwhile have left). Returns how far it
  // ran (0 for a run-on not reached yet, which is simply dropped).
  int64_t end_run_on(int64_t stopped_ns, int64_t real_now) {
    if (!has_run_on()) return 0;
    int64_t ran = 0;
    if (real_now >= run_on_from_ns) {
      const int64_t reached = run_on_time(real_now);
      const int64_t stopped = stopped_ns < real_now ? stopped_ns : real_now;
      ran = run_on_time(stopped > run_on_from_ns ? stopped : run_on_from_ns) - run_on_base_ns;
      shift_ns -= ran;
      ran_on_ns += ran;
      if (reached > shift_floor_ns) shift_floor_ns = reached;
    }
    run_on_from_ns = INT64_MAX;
    run_on_until_ns = INT64_MAX;
    return ran;
  }
  // Shared by the link's two directions, which may run on two workers:
  // the worker virtual instant at which a schedule that starts on the
  // link's first frame last started (INT64_MIN: never). The other
  // direction, if its schedule waits for the first frame, starts at it.
  std::atomic<int64_t>* link_start = nullptr;
};

// link_start again from the pipes' states (after a restore): the latest
// start of a schedule that started on the link's first frame.
void reset_link_starts(std::span<Direction* const> directions);

// A copy of a direction's counters, taken by its worker on request.
struct DirectionStats {
  std::string link;
  std::string direction;
  link::PipeConfig config;
  link::PipeCounters pipe;
  DirectionCounters node;
  uint64_t held_frames = 0;
  uint64_t held_bytes = 0;
  uint32_t queued_frames = 0;
  uint64_t queued_bytes = 0;
  uint16_t tx_pending = 0;
  int64_t shift_ns = 0;  // Direction::shift_ns
  // The direction's own virtual time when the copy was taken (0: no
  // worker runs), where its schedule stood then (config.schedule set) and
  // the parameters in force: a segment's, or while a trace runs, the rate
  // its opportunities allow over the next 100 ms.
  int64_t virtual_now_ns = 0;
  link::ScheduleState schedule{};
  bool traced = false;
  uint64_t rate_now_bps = 0;
  int64_t delay_now_ns = 0;
  // Scheduled events still pending, and the first of them (instants on
  // the direction's own timeline; a fixed array: the copy is made on the
  // worker, which must not allocate).
  static constexpr size_t kEventsShown = 8;
  uint32_t pending_events = 0;
  std::array<link::LinkEvent, kEventsShown> next_events{};
};

// Copies a direction's counters (all but its names, which would allocate
// on a worker) at its virtual time virtual_now_ns. Only on the thread that
// owns it.
void fill_stats(const Direction& d, int64_t virtual_now_ns, DirectionStats& s);
// Of a copy with a schedule: "waiting" (its worker has not run it yet),
// "running" or
// "ended", and how long its current segment has run.
const char* schedule_state_name(const DirectionStats& s);
int64_t schedule_segment_elapsed_ns(const DirectionStats& s);
DirectionStats snapshot(const Direction& d);

// Frees every frame the direction holds (its pipe's, those waiting for the
// tx port and a staged burst), a batch of mbufs at a time. Only on the
// thread that owns it, or while its worker is parked or stopped.
void release_frames(Direction& d);

}  // namespace amber::dataplane
