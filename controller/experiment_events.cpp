// Scheduled link events in experiment time (controller/README.md,
// "Scheduled link events"): experiment time 0 is a master instant the
// controller picks when it first starts the experiment; each delay node's
// virtual clock at that instant (its epoch, kept in the store) maps
// experiment time onto the node, where the events wait in the pipes.
// Every node freezes and thaws at the same instants and a restore sets
// its clock back to the image's, so the epochs hold for the whole
// experiment and its branches. A node that joins late, or whose process
// started afresh (another clock id), is mapped from the experiment time
// of the nodes that kept theirs, or from the controller's last reading of
// it when nothing froze since.
#include <algorithm>
#include <map>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"
#include "link-emulator/link_event.h"

namespace amber::controller {
namespace {

// The topology's events for one node whose clock reads `virtual_ns` at
// experiment time `experiment_ns`: those still ahead at their instants,
// those already past (a node that joins late) at that instant, in their
// order, so their changes apply at once. Counts the past ones.
agent::ScheduleEventsRequest events_for(const std::vector<ScheduledEvent>& events,
                                        const std::string& node, int64_t virtual_ns,
                                        int64_t experiment_ns, uint32_t* past) {
  std::vector<const ScheduledEvent*> mine;
  for (const ScheduledEvent& e : events) {
    if (e.delay_node == node) mine.push_back(&e);
  }
  std::stable_sort(mine.begin(), mine.end(), [](const ScheduledEvent* a, const ScheduledEvent* b) {
    return a->at_ns < b->at_ns;
  });
  agent::ScheduleEventsRequest req;
  *past = 0;
  for (const ScheduledEvent* e : mine) {
    agent::LinkEvent* out = req.add_events();
    out->mutable_pipe()->set_link(e->link);
    out->mutable_pipe()->set_direction(e->direction);
    if (e->at_ns < experiment_ns) ++*past;
    out->set_at_virtual_ns(virtual_ns + std::max<int64_t>(e->at_ns - experiment_ns, 0));
    out->set_change(e->change);
  }
  return req;
}

}  // namespace

void Experiment::tend_experiment_time(std::vector<std::string>* notes) {
  auto note = [&](std::string line) {
    log(line);
    if (notes) notes->push_back(std::move(line));
  };
  const ExperimentState state = store_->state();
  // A swapped-out experiment's nodes hold frozen until a restore.
  if (state.swapped_out()) return;
  Crew nodes = crew_of(agents_, [](const Agent& a) { return a.moves_network(); });
  if (nodes.empty()) return;
  auto now = clock_->now_ns();
  if (!now) {
    note(cat("experiment time: master clock: ", now.status().message(), " (trying again)"));
    return;
  }
  // Ahead of now, so that an event at that instant reaches every node
  // before it.
  const int64_t at = *now + lead_ns();
  auto read = on_each("", nodes, [&](Member& a) { return a.agent->virtual_time_at(at); });

  // Experiment time at `at`, from the nodes that kept their clocks.
  std::optional<int64_t> experiment_ns;
  std::string source;
  bool standing = false;  // a node that kept its clock stands frozen
  std::vector<size_t> joining;
  std::map<std::string, uint64_t> learnt;  // clock ids a STATE from before them lacked
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Agent& a = *nodes[i].agent;
    const auto epoch = state.epoch_virtual_ns().find(a.id());
    const bool started = epoch != state.epoch_virtual_ns().end();
    if (!read[i]) {
      if (!started) note(cat("experiment time: ", read[i].status().message(), " (trying again)"));
      continue;
    }
    const auto known = state.clock_id().find(a.id());
    if (!started || (known != state.clock_id().end() && known->second != read[i]->clock_id)) {
      joining.push_back(i);
      continue;
    }
    if (known == state.clock_id().end()) learnt[a.id()] = read[i]->clock_id;
    standing = standing || read[i]->frozen;
    if (!experiment_ns) {
      experiment_ns = read[i]->virtual_ns - epoch->second;
      source = a.what();
    }
  }
  if (!learnt.empty()) (void)store_->set_epochs({}, learnt);
  // Experiment time stands still while a node is frozen (an operator's
  // freeze, a lease not yet run out): nothing is read or mapped from it.
  if (standing) return;
  if (experiment_ns) {
    reading_ = Reading{at, *experiment_ns, network_stops_};
  } else if (reading_ && reading_->network_stops == network_stops_) {
    // No node kept its clock, but none froze since the last reading:
    // experiment time ran on with master time.
    experiment_ns = reading_->experiment_ns + (at - reading_->master_ns);
    source = cat("the controller's reading of ", format_duration_ns(at - reading_->master_ns),
                 " before");
  } else if (state.epoch_virtual_ns().empty()) {
    experiment_ns = 0;  // the experiment starts
    source = "the start";
    reading_ = Reading{at, 0, network_stops_};
  }
  if (joining.empty()) return;
  if (!experiment_ns) {
    for (size_t i : joining) {
      const Agent& a = *nodes[i].agent;
      std::string line =
          state.epoch_virtual_ns().contains(a.id())
              ? cat(a.what(),
                    " started afresh (its clock is not the one experiment time was mapped onto), "
                    "and no delay node kept its clock and the network froze since the controller "
                    "last read experiment time: its events wait; restore a checkpoint to bring "
                    "its timeline back")
              : cat(a.what(), " waits for experiment time: no delay node that has it answers");
      std::lock_guard lock(timeline_mutex_);
      if (timelines_[a.id()].text != line) note(line);
      timelines_[a.id()] = Timeline{line, false};
    }
    return;
  }

  // Each joining node's epoch: its clock at `at` less experiment time
  // there; then the topology's events on that clock.
  struct Joined {
    int64_t epoch_ns = 0;
    uint32_t events = 0;
    uint32_t past = 0;
  };
  Crew crew;
  std::map<const Agent*, NodeTime> clocks;
  for (size_t i : joining) {
    crew.push_back(nodes[i]);
    clocks[nodes[i].agent] = *read[i];
  }
  auto sent = on_each("", crew, [&](Member& m) -> Result<Joined> {
    const NodeTime& clock = clocks.at(m.agent);
    Joined j;
    j.epoch_ns = clock.virtual_ns - *experiment_ns;
    agent::ScheduleEventsRequest req =
        events_for(topology_.events, m.agent->id(), clock.virtual_ns, *experiment_ns, &j.past);
    if (req.events().empty()) return j;
    auto scheduled = m.agent->schedule_events(req);
    if (!scheduled) return scheduled.status();
    j.events = static_cast<uint32_t>(req.events_size());
    return j;
  });
  std::map<std::string, int64_t> epochs;
  std::map<std::string, uint64_t> clock_ids;
  std::string started;
  for (size_t i = 0; i < crew.size(); ++i) {
    const Agent& a = *crew[i].agent;
    if (!sent[i]) {
      note(cat("experiment time: ", sent[i].status().message(), " (trying again)"));
      continue;
    }
    epochs[a.id()] = sent[i]->epoch_ns;
    clock_ids[a.id()] = clocks.at(&a).clock_id;
    const Joined& j = *sent[i];
    const std::string events = cat(j.events - j.past, j.events - j.past == 1 ? " event" : " events",
                                   j.past ? cat(", ", j.past, " past ones applied at once") : "");
    if (state.epoch_virtual_ns().empty()) {
      started += cat(started.empty() ? "" : ", ", a.what(), " (", events, ")");
      continue;
    }
    const std::string line =
        state.epoch_virtual_ns().contains(a.id())
            ? cat(a.what(), " started afresh: experiment time ", format_duration_ns(*experiment_ns),
                  " mapped onto its new clock from ", source, "; ", events,
                  " from the topology; the frames it held, where its links' schedules stood and "
                  "events given by amberctl schedule were lost (a restore brings them back)")
            : cat(a.what(), " joined at experiment time ", format_duration_ns(*experiment_ns),
                  " (from ", source, "): ", events);
    note(line);
    std::lock_guard lock(timeline_mutex_);
    timelines_[a.id()] = Timeline{line, true};
  }
  if (epochs.empty()) return;
  if (Status s = store_->set_epochs(epochs, clock_ids); !s) {
    // Its events are on the node: trying again would repeat them.
    note(cat("experiment time: store: ", s.message(),
             ": the events are scheduled, but a controller started again would send them twice"));
    return;
  }
  if (!started.empty()) note(cat("experiment time 0 at master ", at, " ns: ", started));
}

void Experiment::count_network_stops(const Crew& crew) {
  if (std::any_of(crew.begin(), crew.end(),
                  [](const Member& m) { return m.agent->moves_network(); })) {
    ++network_stops_;
  }
}

void Experiment::experiment_time_loop() {
  std::unique_lock lock(background_mutex_);
  while (!stopping_) {
    background_wake_.wait_for(lock, std::chrono::seconds(2), [&] { return stopping_; });
    if (stopping_) return;
    lock.unlock();
    {
      std::unique_lock op(operation_, std::try_to_lock);
      if (op.owns_lock()) tend_experiment_time(nullptr);
    }
    lock.lock();
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
  std::map<std::string, Timeline> timelines;
  {
    std::lock_guard lock(timeline_mutex_);
    timelines = timelines_;
  }
  for (AgentStatus& a : *reply.mutable_agents()) {
    auto epoch = state.epoch_virtual_ns().find(a.id());
    if (a.kind() != "delay node" || epoch == state.epoch_virtual_ns().end()) continue;
    const auto timeline = timelines.find(a.id());
    if (timeline != timelines.end()) {
      a.set_timeline(timeline->second.text);
      // Its clock maps no experiment time until a restore.
      if (!timeline->second.mapped) continue;
    }
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
