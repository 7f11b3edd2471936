#include "controller/delaynode_client.h"

#include <algorithm>

#include "common/strings.h"
#include "common/units.h"
#include "controller/agent_calls.h"
#include "controller/experiment_steps.h"
#include "rpc/files.h"

namespace amber::controller {

DelayNodeClient::DelayNodeClient(config::DelayNodeRef ref, std::unique_ptr<Stub> stub,
                                 const Durations& durations, const MasterClock& clock)
    : ref_(std::move(ref)),
      stub_(std::move(stub)),
      step_deadline_ns_(durations.step_deadline_ns),
      save_deadline_ns_(durations.save_deadline_ns),
      watch_deadline_ns_(durations.watch_deadline_ns),
      run_on_ns_(durations.run_on_ns),
      clock_(clock),
      what_(cat("delay node ", ref_.id())) {}

Result<Prepared> DelayNodeClient::prepare(const std::string& dir, bool allow_unsynchronized) {
  agent::GetStatsReply stats;
  if (auto s = unary(*stub_, &Stub::GetStats, {}, &stats, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  if (stats.node_id() != ref_.id()) {
    return failed_precondition(
        cat(what_, ": the agent at ", ref_.address(), " serves node '", stats.node_id(), "'"));
  }
  agent::PrepareRequest req;
  req.set_checkpoint_dir(dir + "/delaynodes");
  req.set_allow_unsynchronized(allow_unsynchronized);
  for (const auto& link : ref_.link()) req.add_links(link);
  agent::PrepareReply reply;
  const int64_t t0 = steady_ns();
  auto s = unary(*stub_, &Stub::Prepare, req, &reply, step_deadline_ns_);
  const Prepared prepared{reply.estimated_image_bytes(), steady_ns() - t0};
  if (!s.ok()) return agent_error(what_, s);
  if (!reply.ready()) {
    return failed_precondition(cat(what_, " is not ready: ", join(reply.reasons())));
  }
  return prepared;
}

namespace {
// The direction that leaves by the VM's end delivers to it.
const char* delivering_to(const config::Attachment& a) {
  return a.end() == "a" ? "b_to_a" : "a_to_b";
}
}  // namespace

Result<AgentStep> DelayNodeClient::stop_at(int64_t at_ns, int64_t lease_until_ns,
                                           int64_t ahead_ns) {
  agent::FreezeRequest req;
  req.set_at_ns(at_ns);
  req.set_lease_until_ns(lease_until_ns);
  if (run_on_ns_ > 0) {
    for (const auto& a : ref_.attach()) {
      agent::PipeRef* p = req.add_run_on();
      p->set_link(a.link());
      p->set_direction(delivering_to(a));
    }
    if (!req.run_on().empty()) req.set_run_on_until_ns(at_ns + run_on_ns_);
  }
  agent::FreezeReply reply;
  if (auto s = unary(*stub_, &Stub::Freeze, req, &reply, ahead_ns + step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  int64_t late = 0;
  for (int64_t l : reply.latency_ns()) late = std::max(late, l);
  AgentStep step;
  step.set_lateness_ns(late);
  return step;
}

Result<Saved> DelayNodeClient::save(const std::string& dir) {
  const std::string rel = cat("delaynodes/", ref_.id(), ".img");
  agent::SaveRequest req;
  req.set_path(cat(dir, "/", rel));
  agent::SaveReply reply;
  if (auto s = unary(*stub_, &Stub::Save, req, &reply, save_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  Saved saved;
  Piece& piece = saved.pieces.emplace_back();
  piece.set_kind("delay node");
  piece.set_name(ref_.id());
  piece.set_agent(what_);
  for (const auto& link : ref_.link()) piece.add_links(link);
  StoredFile* f = piece.add_files();
  f->set_path(rel);
  f->set_bytes(reply.image_bytes());
  if (!reply.sha256().empty()) {
    f->set_sha256(reply.sha256());
  } else {
    auto sha = sha256_file(req.path());
    if (!sha) return sha.status().with_context(cat(what_, ": "));
    f->set_sha256(*sha);
  }
  saved.step.set_bytes(reply.image_bytes());
  return saved;
}

Result<Resumed> DelayNodeClient::resume_at(int64_t at_ns, int64_t ahead_ns) {
  agent::ThawRequest req;
  req.set_at_ns(at_ns);
  agent::ThawReply reply;
  auto s = unary(*stub_, &Stub::Thaw, req, &reply, ahead_ns + step_deadline_ns_);
  Resumed resumed;
  if (instant_passed(s)) {
    req.set_rollback(true);  // now
    s = unary(*stub_, &Stub::Thaw, req, &reply, step_deadline_ns_);
    auto now = clock_.now_ns();
    resumed.late = true;
    resumed.step.set_lateness_ns(now ? *now - at_ns : 0);
  }
  if (!s.ok()) return agent_error(what_, s);
  return resumed;
}

Result<AgentStep> DelayNodeClient::vm_stopped(const std::map<std::string, int64_t>& stopped_ns) {
  AgentStep step;
  if (run_on_ns_ == 0) return step;
  agent::VmStoppedRequest req;
  for (const auto& a : ref_.attach()) {
    auto stopped = stopped_ns.find(a.vm());
    if (stopped == stopped_ns.end()) continue;
    agent::DirectionStop* stop = req.add_stops();
    stop->mutable_pipe()->set_link(a.link());
    stop->mutable_pipe()->set_direction(delivering_to(a));
    stop->set_at_ns(stopped->second);
  }
  if (req.stops().empty()) return step;
  agent::VmStoppedReply reply;
  if (auto s = unary(*stub_, &Stub::VmStopped, req, &reply, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  for (int i = 0; i < req.stops_size() && i < reply.ran_ns_size(); ++i) {
    const auto& p = req.stops(i).pipe();
    (*step.mutable_ran_on_ns())[cat(p.link(), "/", p.direction())] = reply.ran_ns(i);
  }
  int64_t late = 0;
  for (int64_t l : reply.latency_ns()) late = std::max(late, l);
  step.set_lateness_ns(late);
  return step;
}

Result<AgentStep> DelayNodeClient::align(const std::map<std::string, int64_t>& pause_excess_ns) {
  agent::ShiftRequest req;
  AgentStep step;
  for (const auto& a : ref_.attach()) {
    auto excess = pause_excess_ns.find(a.vm());
    const int64_t by = excess == pause_excess_ns.end() ? 0 : excess->second;
    // With run-on, a direction shifts back what it ran on even when its
    // VM's pause had no excess (the node adds it).
    if (by == 0 && run_on_ns_ == 0) continue;
    const std::string direction = delivering_to(a);
    agent::DirectionShift* shift = req.add_shifts();
    shift->mutable_pipe()->set_link(a.link());
    shift->mutable_pipe()->set_direction(direction);
    shift->set_shift_ns(by);
  }
  if (req.shifts().empty()) return step;
  agent::ShiftReply reply;
  auto s = unary(*stub_, &Stub::Shift, req, &reply, step_deadline_ns_);
  if (!s.ok()) return agent_error(what_, s);
  // What each direction moved by, what it ran on included.
  for (int i = 0; i < req.shifts_size(); ++i) {
    const auto& p = req.shifts(i).pipe();
    (*step.mutable_shift_ns())[cat(p.link(), "/", p.direction())] =
        i < reply.moved_ns_size() ? reply.moved_ns(i) : req.shifts(i).shift_ns();
  }
  return step;
}

Status DelayNodeClient::roll_back(int64_t at_ns, int64_t ahead_ns) {
  agent::ThawRequest req;
  req.set_at_ns(at_ns);
  req.set_rollback(true);
  agent::ThawReply reply;
  auto s = unary(*stub_, &Stub::Thaw, req, &reply, ahead_ns + step_deadline_ns_);
  if (s.ok()) return Status::ok();
  // A node whose freeze never took effect has nothing to thaw.
  agent::GetStatsReply stats;
  auto again = unary(*stub_, &Stub::GetStats, {}, &stats, step_deadline_ns_);
  if (again.ok() && !stats.frozen()) return Status::ok();
  return agent_error(what_, s);
}

Status DelayNodeClient::shutdown() {
  agent::HoldReply reply;
  if (auto s = unary(*stub_, &Stub::Hold, {}, &reply, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return Status::ok();
}

Status DelayNodeClient::find_pieces(const Manifest& manifest) const {
  for (const auto& p : manifest.pieces()) {
    if (p.kind() == "delay node" && p.name() == ref_.id()) return Status::ok();
  }
  return failed_precondition(cat("checkpoint ", manifest.id(), " holds no image for ", what_));
}

Result<bool> DelayNodeClient::running() {
  agent::GetStatsReply stats;
  if (auto s = unary(*stub_, &Stub::GetStats, {}, &stats, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return !stats.frozen();
}

Status DelayNodeClient::load(const std::string& dir, int64_t lease_until_ns) {
  agent::RestoreRequest req;
  req.set_path(cat(dir, "/delaynodes/", ref_.id(), ".img"));
  req.set_allow_other_node(true);
  req.set_lease_until_ns(lease_until_ns);
  agent::RestoreReply reply;
  if (auto s = unary(*stub_, &Stub::Restore, req, &reply, save_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return Status::ok();
}

AgentStatus DelayNodeClient::status() {
  AgentStatus a;
  a.set_kind("delay node");
  a.set_id(ref_.id());
  a.set_address(ref_.address());
  agent::GetStatsReply stats;
  const int64_t t0 = steady_ns();
  auto s = unary(*stub_, &Stub::GetStats, {}, &stats, 2'000'000'000);
  a.set_round_trip_ns(steady_ns() - t0);
  a.set_reachable(s.ok());
  if (!s.ok()) {
    a.set_error(s.error_message());
    return a;
  }
  const auto& c = stats.clock();
  a.set_clock_trustworthy(!c.synchronized() || c.trustworthy());
  a.set_clock(!c.synchronized() ? std::string("unsynchronized: local clock")
              : c.trustworthy()
                  ? cat(c.mode(), ", correction ", format_duration_ns(c.correction_ns()))
                  : cat(c.mode(), ": not trustworthy: ", join(c.reasons())));
  a.set_frozen(stats.frozen());
  a.set_virtual_now_ns(stats.virtual_now_ns());
  for (const auto& p : stats.pipes()) *a.add_pipes() = p;
  return a;
}

Result<NodeTime> DelayNodeClient::virtual_time_at(int64_t at_ns) {
  agent::VirtualTimeRequest req;
  req.set_at_ns(at_ns);
  agent::VirtualTimeReply reply;
  if (auto s = unary(*stub_, &Stub::GetVirtualTime, req, &reply, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return NodeTime{reply.virtual_ns(), reply.clock_id(), reply.frozen()};
}

Result<uint32_t> DelayNodeClient::schedule_events(const agent::ScheduleEventsRequest& request) {
  agent::ScheduleEventsReply reply;
  if (auto s = unary(*stub_, &Stub::ScheduleEvents, request, &reply, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return reply.scheduled();
}

Result<std::unique_ptr<TriggerStream>> DelayNodeClient::watch(const config::Trigger& trigger,
                                                              const std::string& pattern) {
  if (!trigger.has_frame() || trigger.frame().delay_node() != ref_.id()) {
    return invalid_argument(cat("trigger '", trigger.name(), "' does not watch ", what_));
  }
  agent::WatchFramesRequest req;
  req.set_link(trigger.frame().link());
  req.set_pattern(pattern);
  return std::unique_ptr<TriggerStream>(std::make_unique<TriggerCall>(
      [&](grpc::ClientContext* context) { return stub_->WatchFrames(context, req); },
      watch_deadline_ns_));
}

}  // namespace amber::controller
