// Scheduled link events in experiment time (controller/README.md,
// "Scheduled link events"): experiment time 0 is a master instant the
// controller picks when it first starts the experiment; each delay node's
// virtual clock at that instant (its epoch, kept in the store) maps
// experiment time onto the node, where the events wait in the pipes.
// Every node freezes and thaws at the same instants and a restore sets
// its clock back to the image's, so the epochs hold for the whole
// experiment and its branches.
#include <map>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"
#include "link-emulator/link_event.h"

namespace amber::controller {
namespace {

// The topology's events for one node, on its clock.
agent::ScheduleEventsRequest events_for(const std::vector<ScheduledEvent>& events,
                                        const std::string& node, int64_t epoch_ns) {
  agent::ScheduleEventsRequest req;
  for (const ScheduledEvent& e : events) {
    if (e.delay_node != node) continue;
    agent::LinkEvent* out = req.add_events();
    out->mutable_pipe()->set_link(e.link);
    out->mutable_pipe()->set_direction(e.direction);
    out->set_at_virtual_ns(epoch_ns + e.at_ns);
    out->set_change(e.change);
  }
  return req;
}

}  // namespace

bool Experiment::start_experiment_time(std::vector<std::string>* notes) {
  auto note = [&](std::string line) {
    log(line);
    if (notes) notes->push_back(std::move(line));
  };
  const ExperimentState state = store_->state();
  // A swapped-out experiment's nodes hold frozen until a restore.
  if (state.swapped_out()) return false;
  Crew missing = crew_of(agents_, [&](const Agent& a) {
    return a.moves_network() && !state.epoch_virtual_ns().contains(a.id());
  });
  if (missing.empty()) return true;
  auto now = clock_->now_ns();
  if (!now) {
    note(cat("experiment time: master clock: ", now.status().message(), " (trying again)"));
    return false;
  }
  // Ahead of now, so that an event at 0 reaches every node before its
  // instant.
  const int64_t zero = *now + lead_ns();
  struct Started {
    int64_t epoch_ns = 0;
    uint32_t events = 0;
  };
  // Each node's clock at that instant, then its events on that clock.
  auto sent = on_each("", missing, [&](Member& a) -> Result<Started> {
    auto epoch = a.agent->virtual_time_at(zero);
    if (!epoch) return epoch.status();
    agent::ScheduleEventsRequest req = events_for(topology_.events, a.agent->id(), *epoch);
    if (req.events().empty()) return Started{*epoch, 0};
    auto scheduled = a.agent->schedule_events(req);
    if (!scheduled) return scheduled.status();
    return Started{*epoch, static_cast<uint32_t>(req.events_size())};
  });
  std::map<std::string, int64_t> epochs;
  std::string started;
  bool all = true;
  for (size_t i = 0; i < missing.size(); ++i) {
    if (!sent[i]) {
      note(cat("experiment time: ", sent[i].status().message(), " (trying again)"));
      all = false;
      continue;
    }
    epochs[missing[i].agent->id()] = sent[i]->epoch_ns;
    started += cat(started.empty() ? "" : ", ", missing[i].agent->what(), " (", sent[i]->events,
                   sent[i]->events == 1 ? " event)" : " events)");
  }
  if (epochs.empty()) return false;
  if (Status s = store_->set_epochs(epochs); !s) {
    // Its events are on the node: trying again would repeat them.
    note(cat("experiment time: store: ", s.message(),
             ": the events are scheduled, but a controller started again would send them twice"));
    return all;
  }
  note(cat("experiment time 0 at master ", zero, " ns: ", started));
  return all;
}

void Experiment::experiment_time_loop() {
  std::unique_lock lock(background_mutex_);
  while (!stopping_) {
    background_wake_.wait_for(lock, std::chrono::seconds(2), [&] { return stopping_; });
    if (stopping_) return;
    lock.unlock();
    bool done = false;
    {
      std::unique_lock op(operation_, std::try_to_lock);
      if (op.owns_lock()) done = start_experiment_time(nullptr);
    }
    lock.lock();
    if (done) return;
  }
}

Result<std::string> Experiment::schedule(const ScheduleRequest& request) {
  std::unique_lock lock(operation_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::seconds(10))) {
    return unavailable(cat("busy: another operation (", activity_.load(), ") did not finish"));
  }
  const std::string& link = request.link();
  const std::string& dir = request.direction();
  if (link.empty()) return invalid_argument("schedule: give a link");
  if (!dir.empty() && dir != "a_to_b" && dir != "b_to_a") {
    return invalid_argument(
        cat("schedule: direction '", dir, "': a_to_b, b_to_a or none for both"));
  }
  // The node that emulates the link.
  std::vector<std::string> nodes;
  for (const auto& n : topology_.proto.delay_node()) {
    for (const auto& l : n.link()) {
      if (l == link && (request.delay_node().empty() || request.delay_node() == n.id())) {
        nodes.push_back(n.id());
      }
    }
  }
  if (nodes.empty()) {
    return not_found(cat("schedule: link '", link, "' is listed for no delay node",
                         request.delay_node().empty() ? "" : cat(" '", request.delay_node(), "'"),
                         " of the topology"));
  }
  if (nodes.size() > 1) {
    return invalid_argument(cat("schedule: link '", link, "' is on ", nodes.size(),
                                " delay nodes: say which (--node)"));
  }
  Agent* node = nullptr;
  for (const auto& a : agents_) {
    if (a->moves_network() && a->id() == nodes[0]) node = a.get();
  }
  if (node == nullptr) return not_found(cat("schedule: no agent for delay node ", nodes[0]));
  const std::string where =
      cat(link, dir.empty() ? " (both directions)" : cat("/", dir), " on ", node->what());
  agent::ScheduleEventsRequest req;
  if (request.clear()) {
    agent::PipeRef* p = req.add_cancel();
    p->set_link(link);
    p->set_direction(dir);
    auto done = node->schedule_events(req);
    if (!done) return done.status().with_context("schedule: ");
    return cat(where, ": pending events dropped");
  }
  if (request.at_experiment_ns() < 0) {
    return invalid_argument("schedule: experiment time starts at 0");
  }
  if (auto parsed = link::parse_link_event(0, request.change()); !parsed) {
    return parsed.status().with_context("schedule: ");
  }
  const ExperimentState state = store_->state();
  auto epoch = state.epoch_virtual_ns().find(node->id());
  if (epoch == state.epoch_virtual_ns().end()) {
    return failed_precondition(cat("schedule: experiment time has not started on ", node->what(),
                                   " (it has not answered since the controller started)"));
  }
  agent::LinkEvent* e = req.add_events();
  e->mutable_pipe()->set_link(link);
  e->mutable_pipe()->set_direction(dir);
  e->set_at_virtual_ns(epoch->second + request.at_experiment_ns());
  e->set_change(request.change());
  auto done = node->schedule_events(req);
  if (!done) return done.status().with_context("schedule: ");
  const std::string line = cat(where, ": ", request.change(), " at experiment time ",
                               format_duration_ns(request.at_experiment_ns()));
  log(cat("schedule: ", line));
  return line;
}

void Experiment::add_experiment_time(StatusReply& reply) const {
  const ExperimentState state = store_->state();
  for (AgentStatus& a : *reply.mutable_agents()) {
    auto epoch = state.epoch_virtual_ns().find(a.id());
    if (a.kind() != "delay node" || epoch == state.epoch_virtual_ns().end()) continue;
    if (!a.reachable()) continue;
    if (!reply.has_experiment_ns()) reply.set_experiment_ns(a.virtual_now_ns() - epoch->second);
    for (agent::PipeStats& p : *a.mutable_pipes()) {
      for (agent::PendingEvent& e : *p.mutable_events()) {
        e.set_at_experiment_ns(e.at_virtual_ns() - epoch->second);
      }
    }
  }
}

}  // namespace amber::controller
