// The delay node's scheduled link events (delay_node.h): commands to the
// worker that owns each direction; the pipe keeps them (link::Pipe).
#include "common/strings.h"
#include "dataplane/delay_node.h"

namespace amber::dataplane {

Status DelayNode::schedule_events(const std::string& link, const std::string& direction,
                                  std::vector<link::LinkEvent> events) {
  auto target = find(link, direction);
  if (!target) return target.status();
  Direction& d = *target->second;
  if (!running()) {
    // Nobody polls: the caller owns the pipes (as in stats()).
    const int64_t node_now = workers_.front()->virtual_clock().now(now_ns());
    for (link::LinkEvent& e : events) e.at_ns -= d.shift_ns;
    return d.pipe.schedule_events(std::move(events), d.virtual_time(node_now))
        .with_context(cat(link, "/", direction, ": "));
  }
  auto c = std::make_shared<Command>();
  c->type = CommandType::kScheduleEvents;
  c->target = &d;
  c->events = std::move(events);
  return send(*target->first, c).with_context(cat(link, "/", direction, ": "));
}

Result<size_t> DelayNode::cancel_events(const std::string& link, const std::string& direction) {
  auto target = find(link, direction);
  if (!target) return target.status();
  if (!running()) return target->second->pipe.cancel_events();
  auto c = std::make_shared<Command>();
  c->type = CommandType::kCancelEvents;
  c->target = target->second;
  AMBER_RETURN_IF_ERROR(send(*target->first, c));
  return static_cast<size_t>(c->result_ns);
}

Result<int64_t> DelayNode::virtual_at(int64_t real_ns) {
  // Every worker's clock freezes and thaws at the same instants: the
  // first one speaks for the node.
  if (workers_.empty()) return failed_precondition("the delay node has no links");
  Worker& w = *workers_.front();
  if (!running()) return w.virtual_clock().at(real_ns);
  auto c = std::make_shared<Command>();
  c->type = CommandType::kVirtualAt;
  c->at_ns = real_ns;
  AMBER_RETURN_IF_ERROR(send(w, c));
  return c->result_ns;
}

}  // namespace amber::dataplane
