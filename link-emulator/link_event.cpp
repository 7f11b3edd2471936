#include "link-emulator/link_event.h"

#include <sstream>

#include "common/strings.h"
#include "common/units.h"
#include "link-emulator/pipe_edit.h"

namespace amber::link {

PipeConfig LinkEvent::applied_to(PipeConfig base) const {
  switch (kind) {
    case LinkEventKind::kSet:
      return set.applied_to(std::move(base));
    case LinkEventKind::kDown:
      base.down = true;
      break;
    case LinkEventKind::kUp:
      base.down = false;
      break;
    case LinkEventKind::kStart:
      break;  // the schedule's position, not the configuration
  }
  return base;
}

Result<LinkEvent> parse_link_event(int64_t at_ns, std::string_view change) {
  LinkEvent event;
  event.at_ns = at_ns;
  if (change == "down" || change == "up" || change == "start") {
    event.kind = change == "down" ? LinkEventKind::kDown
                 : change == "up" ? LinkEventKind::kUp
                                  : LinkEventKind::kStart;
    return event;
  }
  // Each setting through apply_setting (one parser of values for both),
  // on a configuration whose fields it then takes over.
  Segment& s = event.set;
  size_t pos = 0;
  bool any = false;
  while (pos < change.size()) {
    size_t end = change.find_first_of(", ", pos);
    if (end == std::string_view::npos) end = change.size();
    const std::string_view item = change.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return invalid_argument(cat("event: '", item, "' is not key=value, down, up or start"));
    }
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (key != "rate" && key != "delay" && key != "jitter" && key != "loss" &&
        key != "queue_frames" && key != "queue_bytes") {
      return invalid_argument(cat("event: unknown key '", key,
                                  "' (an event sets rate, delay, jitter, loss, queue_frames or "
                                  "queue_bytes; or give down, up or start)"));
    }
    if ((key == "queue_frames" || key == "queue_bytes") && value == "none") {
      return invalid_argument(
          cat("event: ", key, "=none: an event sets a limit, it cannot remove one"));
    }
    PipeConfig scratch;
    Status parsed = apply_setting(scratch, key, value);
    if (!parsed) return parsed.with_context("event: ");
    if (key == "rate")
      s.rate_bps = scratch.rate_bps;
    else if (key == "delay")
      s.delay_ns = scratch.delay_ns;
    else if (key == "jitter")
      s.jitter_ns = scratch.jitter_ns;
    else if (key == "loss")
      s.loss = scratch.loss;
    else if (key == "queue_frames")
      s.queue_limit_frames = scratch.queue_limit_frames;
    else
      s.queue_limit_bytes = scratch.queue_limit_bytes;
    any = true;
  }
  if (!any) return invalid_argument("event: give down, up, start or settings (delay=200ms ...)");
  return event;
}

std::string describe_change(const LinkEvent& e) {
  if (e.kind == LinkEventKind::kDown) return "down";
  if (e.kind == LinkEventKind::kUp) return "up";
  if (e.kind == LinkEventKind::kStart) return "start";
  const Segment& s = e.set;
  std::ostringstream out;
  const char* sep = "";
  auto field = [&](const char* key, const std::string& value) {
    out << sep << key << "=" << value;
    sep = " ";
  };
  if (s.rate_bps) field("rate", format_rate_bps(*s.rate_bps));
  if (s.delay_ns) field("delay", format_duration_ns(*s.delay_ns));
  if (s.jitter_ns) field("jitter", format_duration_ns(*s.jitter_ns));
  if (s.loss) {
    if (const auto* r = std::get_if<RandomLoss>(&*s.loss)) {
      std::ostringstream p;
      p << r->probability * 100 << "%";
      field("loss", p.str());
    } else if (std::holds_alternative<NoLoss>(*s.loss)) {
      field("loss", "0");
    } else {
      field("loss", "(model)");
    }
  }
  if (s.queue_limit_frames) field("queue_frames", cat(*s.queue_limit_frames));
  if (s.queue_limit_bytes) field("queue_bytes", format_bytes(*s.queue_limit_bytes));
  return out.str();
}

Status check_event(const LinkEvent& event, const PipeConfig& base) {
  if (event.kind == LinkEventKind::kStart && !base.schedule) {
    return invalid_argument(
        cat("event at ", event.at_ns, " ns (start): the link direction has no schedule to start"));
  }
  PipeConfig next = event.applied_to(base);
  next.schedule = ScheduleRef();
  Status s = next.validate();
  if (!s)
    return s.with_context(cat("event at ", event.at_ns, " ns (", describe_change(event), "): "));
  return Status::ok();
}

Status check_events(const PipeConfig& base, const std::vector<LinkEvent>& events) {
  PipeConfig next = base;
  next.schedule = ScheduleRef();
  for (const LinkEvent& e : events) {
    // Events keep the schedule: a start is checked against the one given.
    AMBER_RETURN_IF_ERROR(check_event(e, e.kind == LinkEventKind::kStart ? base : next));
    next = e.applied_to(std::move(next));
  }
  return Status::ok();
}

}  // namespace amber::link
