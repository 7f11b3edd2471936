// Changes of a link direction at instants of its virtual clock: the events
// an experiment schedules ("at 30 s the delay becomes 200 ms", "at 60 s
// the link goes down, at 62 s up again"). Plain data; the pipe holds its
// pending events in its state (pipe.h), so a checkpoint carries them and a
// restore fires the rest at their instants.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "link-emulator/pipe_config.h"
#include "link-emulator/schedule.h"

namespace amber::link {

// Append-only: stored in checkpoint images.
enum class LinkEventKind : uint8_t {
  kSet = 0,   // change parameters, as `amberctl set` would at that instant
  kDown = 1,  // every arriving frame is dropped (DropCause::kLinkDown)
  kUp = 2,    // frames are accepted again
  // The schedule starts from its beginning (restarts if it runs): a
  // schedule whose start is ScheduleStart::kOnEvent waits for this.
  kStart = 3,
};

struct LinkEvent {
  int64_t at_ns = 0;  // on the pipe's virtual clock
  LinkEventKind kind = LinkEventKind::kSet;
  // kSet: what changes, as a segment sets it (its duration unused), on the
  // static configuration: a schedule's segment that sets the same
  // parameter still overrides it while it runs.
  Segment set{};

  // The static configuration after the event.
  PipeConfig applied_to(PipeConfig base) const;
  bool operator==(const LinkEvent&) const = default;
};

// "down", "up", "start", or settings as `amberctl set` takes them, limited to what a
// segment can change: rate, delay, jitter, loss, queue_frames, queue_bytes
// ("delay=200ms loss=1%"). Errors name the problem: "event: unknown key
// 'seed' (an event sets rate, delay, jitter, loss, queue_frames or
// queue_bytes; or give down or up)".
Result<LinkEvent> parse_link_event(int64_t at_ns, std::string_view change);

// "down", "up", "start", "delay=200ms loss=1%": what parse_link_event reads.
std::string describe_change(const LinkEvent& event);

// Whether `event` can apply to the static configuration `base`: the
// result, without its schedule (an event cannot make a segment invalid
// that was not), must be valid, and a start needs a schedule. Cheap: no
// trace is looked at.
Status check_event(const LinkEvent& event, const PipeConfig& base);
// The same for events applied in turn (in the order they fire).
Status check_events(const PipeConfig& base, const std::vector<LinkEvent>& events);

}  // namespace amber::link
