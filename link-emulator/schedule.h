// Link parameters that change over time: a schedule for one direction of a
// link, run on the pipe's virtual clock (a freeze pauses it, a checkpoint
// carries its position). Plain data; the pipe runs it (pipe.h), the loaders
// below read its two file formats.
//
// A schedule is a list of segments, each changing some of the pipe's
// parameters for a duration, and/or a delivery-opportunity trace that
// replaces the rate while the schedule runs. After the last segment it
// loops, holds the last segment, or ends (the pipe returns to its static
// configuration). A trace alone repeats (as Mahimahi does) unless the
// schedule ends, which it then does after one pass.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "link-emulator/pipe_config.h"

namespace amber::link {

// What one segment changes; an unset field keeps the static configuration's
// value (so a runtime change of the static delay shows in every segment
// that does not set its own).
struct Segment {
  int64_t duration_ns = 0;
  std::optional<uint64_t> rate_bps{};
  std::optional<int64_t> delay_ns{};
  std::optional<int64_t> jitter_ns{};
  std::optional<LossConfig> loss{};
  std::optional<uint32_t> queue_limit_frames{};
  std::optional<uint64_t> queue_limit_bytes{};

  // The static configuration with this segment's changes.
  PipeConfig applied_to(PipeConfig base) const;
  bool operator==(const Segment&) const = default;
};

// Mahimahi's delivery-opportunity trace (mm-link): each entry is an instant
// in milliseconds from the start at which opportunity_bytes may leave;
// entries repeat for several opportunities in one millisecond. Accounting is
// by bytes, as in Mahimahi's LinkQueue: an opportunity serves the frame in
// transmission and, with what is left of it, the frames queued behind it
// (several small frames share one opportunity); a frame larger than what is
// left takes the rest and continues in later opportunities; an opportunity
// (or its remainder) that finds no frame queued is lost. The trace repeats
// with a period equal to its last instant.
struct DeliveryTrace {
  std::vector<uint32_t> ms;  // non-decreasing, last > 0
  // Mahimahi's opportunity is one MTU-sized IP packet (1500 bytes); amber's
  // frames carry an Ethernet header Mahimahi never sees, so a frame counts
  // its length minus header_bytes against an opportunity.
  uint32_t opportunity_bytes = 1500;
  uint32_t header_bytes = 14;
  std::string source;  // file name, for people

  int64_t period_ns() const { return int64_t{ms.back()} * 1'000'000; }
  // Mean rate the opportunities allow, in bit/s (of opportunity bytes).
  uint64_t mean_rate_bps() const;
  bool operator==(const DeliveryTrace&) const = default;
};

// Append-only: stored in checkpoint images.
enum class ScheduleEnd : uint8_t {
  kLoop = 0,      // start again with the first segment
  kHoldLast = 1,  // stay in the last segment
  kEnd = 2,       // return to the static configuration
};
const char* schedule_end_name(ScheduleEnd end);

// When a schedule starts. Append-only: stored in checkpoint images.
enum class ScheduleStart : uint8_t {
  kAtOnce = 0,  // at the pipe's first event (frame or poll) once configured
  // The link's first frame: the pipe's own, or one in the other direction
  // (the delay node starts both directions of a link at one instant).
  kFirstFrame = 1,
  // A "start" link event: an instant of experiment time (link_event.h),
  // both directions at once when the event names no direction.
  kOnEvent = 2,
};
// As the configuration names it: "now", "first_frame", "event".
const char* schedule_start_name(ScheduleStart start);
// What a schedule not started yet waits for, for people: "waiting for the
// link's first frame".
const char* schedule_waiting_for(ScheduleStart start);

struct Schedule {
  std::vector<Segment> segments;
  std::optional<DeliveryTrace> trace;
  ScheduleEnd at_end = ScheduleEnd::kLoop;
  ScheduleStart start = ScheduleStart::kAtOnce;

  // The schedule itself (durations, trace shape); the pipe's validate()
  // also checks every segment applied to the static configuration.
  Status validate() const;
  int64_t cycle_ns() const;  // sum of the segments' durations
  bool operator==(const Schedule&) const = default;
};

// Where a pipe stands in its schedule: part of its checkpointed state.
struct ScheduleState {
  bool started = false;  // Schedule::start says when
  bool ended = false;    // ScheduleEnd::kEnd reached: static configuration
  // Virtual instant the schedule started; not started yet: since when it
  // waits (a first frame before this instant does not start it).
  int64_t start_ns = 0;
  uint32_t segment = 0;
  int64_t segment_start_ns = 0;
  uint64_t loops = 0;  // completed passes over the segments
  // The trace: the next opportunity (pass and index) and what is left of
  // the last one used (surplus bytes at its instant, for frames that were
  // queued before it).
  uint64_t trace_loops = 0;
  uint32_t trace_index = 0;
  uint32_t surplus_bytes = 0;
  int64_t surplus_at_ns = 0;
  bool operator==(const ScheduleState&) const = default;
};

// The Mahimahi trace format: one integer millisecond per line. Errors name
// the file and line: "up.trace:7: 12 ms is before the line above (15 ms):
// timestamps must not decrease".
Result<DeliveryTrace> parse_mahimahi_trace(std::string_view text, const std::string& name);
Result<DeliveryTrace> load_mahimahi_trace(const std::string& path);

// The CSV segment format: a header naming the columns, then one segment per
// line. Columns: duration (required), rate, delay, jitter, loss, queue
// (frames), queue_bytes; an empty cell keeps the static value. '#' starts a
// comment line.
//   duration,rate,delay,loss
//   10s,50Mbit,20ms,0
//   10s,10Mbit,40ms,1%
Result<std::vector<Segment>> parse_segments_csv(std::string_view text, const std::string& name);
Result<std::vector<Segment>> load_segments_csv(const std::string& path);

// "3 segments (30s, loop)" / "trace Verizon-LTE-short.down (58655
// opportunities over 140s, mean 5.03Mbit/s)".
std::string describe(const Schedule& schedule);

}  // namespace amber::link
