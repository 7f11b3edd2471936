// The pipe's scheduled events (link_event.h): changes of its static
// configuration at instants of its virtual time. They wait in the pipe's
// state, so a checkpoint carries those still pending and a restore fires
// them at their instants; those that fired are part of the configuration.
#include <algorithm>

#include "common/strings.h"
#include "link-emulator/pipe.h"

namespace amber::link {

Status Pipe::schedule_events(std::vector<LinkEvent> events, int64_t now) {
  catch_up(now);  // what is due fires first: a new event is never before it
  for (const LinkEvent& e : events) {
    if (e.at_ns < now) {
      return invalid_argument(cat("event at ", e.at_ns, " ns (", describe_change(e), ") is ",
                                  now - e.at_ns, " ns before the pipe's time (", now,
                                  " ns): it would never fire"));
    }
  }
  // Each keeps its place behind the events given before for its instant.
  std::stable_sort(events.begin(), events.end(),
                   [](const LinkEvent& a, const LinkEvent& b) { return a.at_ns < b.at_ns; });
  std::vector<LinkEvent> merged;
  merged.reserve(events_.size() + events.size());
  std::merge(events_.begin(), events_.end(), events.begin(), events.end(),
             std::back_inserter(merged),
             [](const LinkEvent& a, const LinkEvent& b) { return a.at_ns < b.at_ns; });
  AMBER_RETURN_IF_ERROR(check_events(base_, merged));
  events_ = std::move(merged);
  update_next_change();
  update_plain();
  return Status::ok();
}

size_t Pipe::cancel_events() {
  const size_t n = events_.size();
  events_.clear();
  update_next_change();
  update_plain();
  return n;
}

// The first pending event, at its instant: the static configuration
// changes, the schedule keeps its position (as reconfigure() with the same
// schedule), and the parameters in force move at that instant.
void Pipe::fire_event() {
  const int64_t at = events_.front().at_ns;
  if (events_.front().kind == LinkEventKind::kStart) {
    events_.erase(events_.begin());
    start_schedule(at);  // from its beginning, even if it runs
    return;
  }
  advance(at);  // frames serialized before the change, at the old parameters
  // Checked when it was scheduled, and by every reconfigure() since.
  base_ = events_.front().applied_to(std::move(base_));
  events_.erase(events_.begin());
  bind_schedule();
  change_to(scheduled_config(), scheduled_trace(), at);
  next_segment_ns_ = next_change_after_position();
  update_next_change();
}

}  // namespace amber::link
