#include "delaynode/delaynode_agent.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "clock-sync/sync_monitor.h"
#include "common/realtime_thread.h"
#include "common/strings.h"
#include "common/units.h"
#include "core-checkpoint/frame_summary.h"
#include "core-checkpoint/node_checkpoint.h"
#include "link-emulator/pipe_edit.h"
#include "proto/agent.grpc.pb.h"
#include "rpc/files.h"
#include "rpc/grpc_status.h"
#include "rpc/lease.h"

namespace amber::controller {
namespace {

const char* stage_name(link::FrameStage stage) {
  switch (stage) {
    case link::FrameStage::kBottleneck:
      return "bottleneck";
    case link::FrameStage::kDelayLine:
      return "delay_line";
    case link::FrameStage::kExpress:
      return "express";
  }
  return "unknown";
}

void fill_schedule(const dataplane::DirectionStats& s, agent::ScheduleStats& out) {
  const link::Schedule& schedule = *s.config.schedule;
  out.set_state(dataplane::schedule_state_name(s));
  out.set_segment(s.schedule.segment);
  out.set_segments(static_cast<uint32_t>(schedule.segments.size()));
  out.set_segment_elapsed_ns(dataplane::schedule_segment_elapsed_ns(s));
  if (s.schedule.segment < schedule.segments.size()) {
    out.set_segment_duration_ns(schedule.segments[s.schedule.segment].duration_ns);
  }
  out.set_loops(s.schedule.loops);
  if (schedule.trace) out.set_trace(schedule.trace->source);
  out.set_trace_index(s.schedule.trace_index);
  out.set_trace_loops(s.schedule.trace_loops);
}

// A direction's pending events, on the node's clock (a direction's own
// timeline plus its shift).
void fill_events(const dataplane::DirectionStats& s, agent::PipeStats& out) {
  out.set_down(s.config.down);
  out.set_pending_events(s.pending_events);
  const size_t shown = std::min<size_t>(s.pending_events, s.next_events.size());
  for (size_t i = 0; i < shown; ++i) {
    agent::PendingEvent* e = out.add_events();
    e->set_at_virtual_ns(s.next_events[i].at_ns + s.shift_ns);
    e->set_change(link::describe_change(s.next_events[i]));
  }
}

// The events of a ScheduleEvents request by direction, every change
// parsed and every instant checked against the node's clock (`now`)
// before anything is scheduled.
Result<std::map<std::pair<std::string, std::string>, std::vector<link::LinkEvent>>> events_by_pipe(
    const agent::ScheduleEventsRequest& req, int64_t now) {
  std::map<std::pair<std::string, std::string>, std::vector<link::LinkEvent>> by_pipe;
  for (int i = 0; i < req.events_size(); ++i) {
    const agent::LinkEvent& e = req.events(i);
    const std::string what = cat("event ", i + 1, " (", e.pipe().link(), " ", e.change(), "): ");
    if (e.pipe().link().empty()) return invalid_argument(cat(what, "give a link"));
    if (e.at_virtual_ns() < now) {
      return invalid_argument(cat(what, "its instant is ",
                                  format_duration_ns(now - e.at_virtual_ns()),
                                  " in the past on the node's clock"));
    }
    auto parsed = link::parse_link_event(e.at_virtual_ns(), e.change());
    if (!parsed) return parsed.status().with_context(what);
    const std::string& d = e.pipe().direction();
    if (!d.empty() && d != "a_to_b" && d != "b_to_a") {
      return invalid_argument(cat(what, "direction '", d, "': a_to_b, b_to_a or empty for both"));
    }
    for (const char* dir : {"a_to_b", "b_to_a"}) {
      if (d.empty() || d == dir) by_pipe[{e.pipe().link(), dir}].push_back(*parsed);
    }
  }
  return by_pipe;
}

// The longest a direction may run on past a freeze (FreezeRequest.run_on).
constexpr int64_t kMaxRunOnNs = 1'000'000'000;

Status need_pipe(const agent::PipeRef& p) {
  if (p.link().empty() || p.direction().empty()) {
    return invalid_argument("pipe: give a link name and a direction (a_to_b or b_to_a)");
  }
  return Status::ok();
}

// The agent's logic over one node: each call as the protocol describes it
// (controller/README.md), with the Protobuf request and reply; Service
// below is the gRPC face that checks who may call.
class Node {
 public:
  // The paths a call names must lie in `store` or, ExportPcap's, in
  // `exports`.
  Node(dataplane::DelayNode& node, clock_sync::SyncMonitor* monitor, std::string mode,
       PathRoot store, PathRoot exports, int realtime_priority)
      : node_(node),
        monitor_(monitor),
        mode_(std::move(mode)),
        store_(std::move(store)),
        exports_(std::move(exports)),
        realtime_priority_(realtime_priority),
        lease_(node.operations(), [this] {
          // On the node's own clock: the lease needs no master time.
          Status s = roll_back(0);
          std::fprintf(stderr,
                       "agent: the freeze lease ended without a thaw from the controller: %s\n",
                       s ? "thawed" : cat(s.to_string(), " (trying again in 1 s)").c_str());
          return s.is_ok();
        }) {}

  // Serving stops: streams (WatchFrames) end.
  void shut_down() { shutting_down_ = true; }

  // A master-time instant on the local clock, or why it cannot be trusted.
  Result<int64_t> local_instant(int64_t master_ns) {
    if (monitor_ == nullptr) return master_ns;
    auto correction = monitor_->correction_ns();
    if (!correction) return correction.status();
    return master_ns + *correction;
  }

  // One state-changing call at a time: a Thaw that comes during a Save
  // waits for it (parked workers cannot take commands). The node's lock:
  // a /amber/set on the telemetry socket takes it too.
  Result<std::unique_lock<std::timed_mutex>> lock(const char* what) {
    if (realtime_priority_ > 0) {
      // Once a thread of the server's pool has served an operation, it
      // waits for the next request at SCHED_FIFO (AgentOptions).
      thread_local bool raised = false;
      if (!raised) raised = make_thread_realtime(realtime_priority_);
    }
    return node_.operations().acquire(what);
  }

  grpc::Status prepare(const agent::PrepareRequest& req, agent::PrepareReply* reply) {
    std::vector<std::string> reasons;
    if (monitor_ != nullptr) {
      clock_sync::SyncVerdict v = monitor_->verdict();
      if (!v.trustworthy) {
        reasons.push_back(cat("clock: master time not trustworthy: ", v.to_string()));
      }
    } else if (!req.allow_unsynchronized()) {
      reasons.push_back(
          "clock: no PTP configured (--ptp-socket); instants would be read on the local "
          "clock (the controller must allow unsynchronized agents)");
    }
    std::set<std::string> links;
    for (const auto& l : node_.config().links) links.insert(l.name);
    for (const auto& l : req.links()) {
      if (!links.count(l)) reasons.push_back(cat("link '", l, "' is not on this node"));
    }
    auto frozen = node_.frozen();
    if (!frozen) {
      reasons.push_back(cat("node: ", frozen.status().message()));
    } else if (*frozen) {
      reasons.push_back("node: already frozen (an earlier checkpoint or amberctl freeze)");
    }
    auto stats = node_.stats();
    uint64_t estimate = 1 << 20;
    if (!stats) {
      reasons.push_back(cat("node: ", stats.status().message()));
    } else {
      // What the pipes hold now, with room for them to fill up to their
      // bandwidth-delay product by the freeze, and each frame's metadata.
      for (const auto& d : *stats) {
        const auto& c = d.config;
        uint64_t bdp = 0;
        if (c.rate_bps > 0) {
          bdp = static_cast<uint64_t>(static_cast<double>(c.rate_bps) / 8 *
                                      static_cast<double>(c.delay_ns + c.jitter_ns) / 1e9);
        }
        estimate += std::max<uint64_t>(d.held_bytes * 5 / 4, bdp) + d.held_frames * 64;
      }
    }
    reply->set_estimated_image_bytes(estimate);
    std::string dir;
    if (!req.checkpoint_dir().empty()) {
      auto confined = store_.confine(req.checkpoint_dir());
      if (!confined) return to_grpc(confined.status().with_context("Prepare: checkpoint_dir "));
      dir = *confined;
    }
    if (dir.empty()) {
      reasons.push_back("checkpoint_dir: not given");
    } else if (auto free = free_bytes(dir); !free) {
      reasons.push_back(cat("checkpoint_dir ", free.status().message()));
    } else {
      reply->set_free_bytes(*free);
      if (*free < estimate) {
        reasons.push_back(cat("checkpoint_dir ", dir, ": ", format_bytes(*free),
                              " free, the image may need ", format_bytes(estimate)));
      }
      if (::access(dir.c_str(), W_OK) != 0) {
        reasons.push_back(cat("checkpoint_dir ", dir, ": not writable"));
      }
    }
    for (auto& r : reasons) reply->add_reasons(r);
    reply->set_ready(reasons.empty());
    return grpc::Status::OK;
  }

  grpc::Status freeze(const agent::FreezeRequest& req, agent::FreezeReply* reply) {
    for (const auto& p : req.run_on()) {
      if (Status s = need_pipe(p); !s) return to_grpc(s.with_context("Freeze: run_on: "));
    }
    auto guard = lock("Freeze");
    if (!guard) return to_grpc(guard.status());
    auto at = local_instant(req.at_ns());
    if (!at) return to_grpc(at.status());
    int64_t lease = 0;
    if (req.lease_until_ns() != 0) {
      auto l = local_instant(req.lease_until_ns());
      if (!l) return to_grpc(l.status());
      if (*l <= *at) {
        return to_grpc(invalid_argument("Freeze: the lease must end after the freeze instant"));
      }
      lease = *l;
    }
    int64_t run_on_until = 0;
    if (!req.run_on().empty()) {
      auto u = local_instant(req.run_on_until_ns());
      if (!u) return to_grpc(u.status());
      if (*u <= *at || *u - *at > kMaxRunOnNs) {
        return to_grpc(invalid_argument(
            cat("Freeze: run_on_until_ns must be within ", kMaxRunOnNs / 1'000'000,
                " ms after the freeze instant (", (*u - *at) / 1'000'000, " ms)")));
      }
      run_on_until = *u;
    }
    Status s = node_.freeze_at(*at);
    if (!s) return to_grpc(s);
    for (const auto& p : req.run_on()) {
      if (s = node_.run_on(p.link(), p.direction(), run_on_until); !s) {
        (void)node_.cancel_freeze();  // all or none
        return to_grpc(s.with_context("Freeze: "));
      }
    }
    set_lease(lease);
    // A run-on's VmStopped comes soon after the instant: the controller
    // waits for this reply before it sends one, so no wait for the
    // latencies here (VmStopped reports them).
    if (!req.run_on().empty()) return grpc::Status::OK;
    // Report how late each worker froze if the instant is near.
    const int64_t wait = *at - node_.now_ns();
    if (wait < 2'000'000'000) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(wait, 0)) +
                                  std::chrono::milliseconds(20));
      auto latencies = node_.freeze_latencies();
      if (latencies) {
        for (int64_t l : *latencies) reply->add_latency_ns(l);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status vm_stopped(const agent::VmStoppedRequest& req, agent::VmStoppedReply* reply) {
    for (const auto& stop : req.stops()) {
      if (Status s = need_pipe(stop.pipe()); !s) return to_grpc(s.with_context("VmStopped: "));
    }
    auto guard = lock("VmStopped");
    if (!guard) return to_grpc(guard.status());
    for (const auto& stop : req.stops()) {
      const auto& p = stop.pipe();
      auto at = local_instant(stop.at_ns());
      if (!at) return to_grpc(at.status().with_context("VmStopped: "));
      auto ran = node_.end_run_on(p.link(), p.direction(), *at);
      if (!ran) return to_grpc(ran.status().with_context("VmStopped: "));
      reply->add_ran_ns(*ran);
      if (reply->latency_ns().empty()) {
        if (auto latencies = node_.freeze_latencies()) {
          for (int64_t l : *latencies) reply->add_latency_ns(l);
        }
      }
      std::fprintf(stderr,
                   "agent: %s/%s ran on %.3f ms past the freeze (its VM stopped %+.3f ms "
                   "from now)\n",
                   p.link().c_str(), p.direction().c_str(), *ran / 1e6,
                   (*at - node_.now_ns()) / 1e6);
    }
    return grpc::Status::OK;
  }

  grpc::Status thaw(const agent::ThawRequest& req, agent::ThawReply*) {
    auto guard = lock("Thaw");
    if (!guard) return to_grpc(guard.status());
    auto at = local_instant(req.at_ns());
    if (!at) return to_grpc(at.status());
    if (req.rollback()) return to_grpc(roll_back(*at));
    Status s = node_.thaw_at(*at);
    if (s) set_lease(0);
    return to_grpc(s);
  }

  grpc::Status shift(const agent::ShiftRequest& req, agent::ShiftReply* reply) {
    for (const auto& shift : req.shifts()) {
      if (Status s = need_pipe(shift.pipe()); !s) return to_grpc(s.with_context("Shift: "));
    }
    auto guard = lock("Shift");
    if (!guard) return to_grpc(guard.status());
    for (const auto& shift : req.shifts()) {  // all or none
      const auto& p = shift.pipe();
      if (auto c = node_.pipe_config(p.link(), p.direction()); !c) {
        return to_grpc(c.status().with_context("Shift: "));
      }
    }
    for (const auto& shift : req.shifts()) {
      const auto& p = shift.pipe();
      int64_t moved = 0;
      auto total = node_.shift(p.link(), p.direction(), shift.shift_ns(), &moved);
      if (!total) return to_grpc(total.status().with_context("Shift: "));
      reply->add_total_ns(*total);
      reply->add_moved_ns(moved);
      std::fprintf(stderr, "agent: %s/%s shifted %+.3f ms (%+.3f ms against the node's clock)\n",
                   p.link().c_str(), p.direction().c_str(), moved / 1e6, *total / 1e6);
    }
    return grpc::Status::OK;
  }

  grpc::Status hold(const agent::HoldRequest&, agent::HoldReply*) {
    auto guard = lock("Hold");
    if (!guard) return to_grpc(guard.status());
    auto frozen = node_.frozen();
    if (!frozen) return to_grpc(frozen.status().with_context("Hold: "));
    if (!*frozen) return to_grpc(failed_precondition("Hold: the node is not frozen"));
    set_lease(0);
    return grpc::Status::OK;
  }

  grpc::Status save(grpc::ServerContext* context, const agent::SaveRequest& req,
                    agent::SaveReply* reply) {
    if (req.path().empty()) return to_grpc(invalid_argument("path: give the image file to write"));
    auto path = store_.confine(req.path());
    if (!path) return to_grpc(path.status().with_context("Save: "));
    auto guard = lock("Save");
    if (!guard) return to_grpc(guard.status());
    // A caller that gave up meanwhile (its deadline passed while this
    // waited for the lock, or during the save) will not use the image:
    // none is written, or it goes (#16 defect 9).
    const grpc::Status gave_up(grpc::StatusCode::CANCELLED, "Save: the caller gave up");
    if (context->IsCancelled()) return gave_up;
    auto r = checkpoint::save_node(node_, *path);
    if (!r) return to_grpc(r.status());
    if (context->IsCancelled()) {
      ::unlink(path->c_str());
      return gave_up;
    }
    // The digest of what is on disk, for the controller's manifest.
    auto sha = sha256_file(*path);
    if (!sha) return to_grpc(sha.status().with_context("Save: "));
    reply->set_sha256(*sha);
    reply->set_frames(r->frames);
    reply->set_bytes(r->bytes);
    reply->set_image_bytes(r->image_bytes);
    reply->set_duration_ns(r->duration_ns);
    return grpc::Status::OK;
  }

  grpc::Status restore(const agent::RestoreRequest& req, agent::RestoreReply* reply) {
    if (req.path().empty()) return to_grpc(invalid_argument("path: give the image file to read"));
    auto path = store_.confine(req.path());
    if (!path) return to_grpc(path.status().with_context("Restore: "));
    auto guard = lock("Restore");
    if (!guard) return to_grpc(guard.status());
    int64_t lease = 0;
    if (req.lease_until_ns() != 0) {
      auto l = local_instant(req.lease_until_ns());
      if (!l) return to_grpc(l.status().with_context("Restore: lease: "));
      lease = *l;
    }
    checkpoint::RestoreOptions options;
    options.allow_other_node = req.allow_other_node();
    auto r = checkpoint::restore_node(node_, *path, options);
    // Frozen with the image or as before: either way until the lease ends
    // at the latest (#16 defect 3: a restore once cleared the freeze's
    // lease, and a controller gone mid-restore left the node frozen).
    auto frozen = node_.frozen();
    set_lease(frozen && *frozen ? lease : 0);
    if (!r) return to_grpc(r.status());
    reply->set_frames(r->frames);
    reply->set_bytes(r->bytes);
    reply->set_virtual_now_ns(r->virtual_now_ns);
    reply->set_duration_ns(r->duration_ns);
    return grpc::Status::OK;
  }

  grpc::Status list_frames(const agent::ListFramesRequest& req, agent::ListFramesReply* reply) {
    if (Status s = need_pipe(req.pipe()); !s) return to_grpc(s);
    auto guard = lock("ListFrames");
    if (!guard) return to_grpc(guard.status());
    auto r = checkpoint::list_frames(node_, req.pipe().link(), req.pipe().direction(), req.offset(),
                                     req.limit(), req.with_bytes());
    if (!r) return to_grpc(r.status());
    reply->set_total(r->total);
    reply->set_virtual_now_ns(r->virtual_now_ns);
    for (const auto& f : r->frames) {
      agent::HeldFrame* h = reply->add_frames();
      h->set_index(f.index);
      h->set_stage(stage_name(f.stage));
      h->set_length(f.length);
      h->set_arrival_ns(f.arrival_ns);
      h->set_departure_ns(f.departure_ns);
      h->set_summary(f.summary);
      if (req.with_bytes()) h->set_data(f.bytes.data(), f.bytes.size());
    }
    return grpc::Status::OK;
  }

  grpc::Status edit_frames(const agent::EditFramesRequest& req, agent::EditFramesReply* reply) {
    if (Status s = need_pipe(req.pipe()); !s) return to_grpc(s);
    auto guard = lock("EditFrames");
    if (!guard) return to_grpc(guard.status());
    const std::string& link = req.pipe().link();
    const std::string& dir = req.pipe().direction();
    uint32_t applied = 0;
    for (const agent::FrameEdit& e : req.edits()) {
      Status s;
      auto bytes_of = [](const std::string& data) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size());
      };
      switch (e.edit_case()) {
        case agent::FrameEdit::kDropIndex:
          s = checkpoint::drop_frame(node_, link, dir, e.drop_index());
          break;
        case agent::FrameEdit::kReplace:
          s = checkpoint::replace_frame(node_, link, dir, e.replace().index(),
                                        bytes_of(e.replace().data()));
          break;
        case agent::FrameEdit::kInject: {
          const auto& in = e.inject();
          std::optional<uint64_t> before;
          std::optional<int64_t> at;
          if (in.where_case() == agent::InjectFrame::kBeforeIndex) before = in.before_index();
          if (in.where_case() == agent::InjectFrame::kDepartureNs) at = in.departure_ns();
          s = checkpoint::inject_frame(node_, link, dir, bytes_of(in.data()), before, at);
          break;
        }
        case agent::FrameEdit::EDIT_NOT_SET:
          s = invalid_argument("an edit needs drop_index, replace or inject");
          break;
      }
      if (!s) return to_grpc(s.with_context(cat("edit ", applied, " (", applied, " applied): ")));
      ++applied;
    }
    reply->set_applied(applied);
    return grpc::Status::OK;
  }

  grpc::Status get_stats(const agent::GetStatsRequest&, agent::GetStatsReply* reply) {
    auto stats = node_.stats();
    if (!stats) return to_grpc(stats.status());
    reply->set_node_id(node_.config().node_id);
    auto frozen = node_.frozen();
    reply->set_frozen(frozen.is_ok() && *frozen);
    agent::ClockHealth* clock = reply->mutable_clock();
    clock->set_synchronized(monitor_ != nullptr);
    clock->set_tsc_offset_ns(node_.clock().last_offset_ns());
    clock->set_tsc_hz(node_.clock().rate_hz());
    if (monitor_) {
      clock_sync::SyncVerdict v = monitor_->verdict();
      clock->set_trustworthy(v.trustworthy);
      clock->set_mode(mode_);
      for (const std::string& r : v.reasons) clock->add_reasons(r);
      if (auto c = monitor_->correction_ns()) clock->set_correction_ns(*c);
    } else {
      clock->set_mode("local clock");
    }
    for (const dataplane::PortStats& st : node_.port_stats()) {
      agent::PortStats* ps = reply->add_ports();
      ps->set_name(st.name);
      ps->set_rx_frames(st.rx_frames);
      ps->set_tx_frames(st.tx_frames);
      ps->set_rx_missed(st.rx_missed);
      ps->set_rx_errors(st.rx_errors);
      ps->set_rx_no_mbuf(st.rx_no_mbuf);
      ps->set_tx_errors(st.tx_errors);
    }
    for (const auto& s : *stats) {
      agent::PipeStats* p = reply->add_pipes();
      p->mutable_pipe()->set_link(s.link);
      p->mutable_pipe()->set_direction(s.direction);
      p->set_config(link::describe(s.config));
      p->set_frames_in(s.pipe.frames_in);
      p->set_frames_out(s.pipe.frames_out);
      p->set_bytes_in(s.pipe.bytes_in);
      p->set_bytes_out(s.pipe.bytes_out);
      p->set_held_frames(s.held_frames);
      p->set_held_bytes(s.held_bytes);
      p->set_queued_frames(s.queued_frames);
      auto& dropped = *p->mutable_dropped();
      for (size_t c = 0; c < link::kDropCauseCount; ++c) {
        dropped[link::drop_cause_name(static_cast<link::DropCause>(c))] = s.pipe.frames_dropped[c];
      }
      dropped["dup_no_mbuf"] = s.node.dup_no_mbuf;
      dropped["oversize"] = s.node.oversize;
      dropped["no_priv_area"] = s.node.no_priv_area;
      p->set_late_departures(s.node.late_departures);
      for (uint64_t n : s.node.burst_lateness) p->add_tx_bursts_by_lateness(n);
      p->set_rate_now_bps(s.rate_now_bps);
      p->set_delay_now_ns(s.delay_now_ns);
      if (s.config.schedule) fill_schedule(s, *p->mutable_schedule());
      fill_events(s, *p);
    }
    if (auto v = node_.virtual_at(node_.now_ns())) reply->set_virtual_now_ns(*v);
    return grpc::Status::OK;
  }

  grpc::Status get_virtual_time(const agent::VirtualTimeRequest& req,
                                agent::VirtualTimeReply* reply) {
    Result<int64_t> at = node_.now_ns();
    if (req.at_ns() != 0) at = local_instant(req.at_ns());
    if (!at) return to_grpc(at.status().with_context("GetVirtualTime: "));
    auto v = node_.virtual_at(*at);
    if (!v) return to_grpc(v.status().with_context("GetVirtualTime: "));
    reply->set_virtual_ns(*v);
    reply->set_clock_id(node_.clock_id());
    auto frozen = node_.frozen();
    reply->set_frozen(frozen.is_ok() && *frozen);
    return grpc::Status::OK;
  }

  grpc::Status schedule_events(const agent::ScheduleEventsRequest& req,
                               agent::ScheduleEventsReply* reply) {
    auto guard = lock("ScheduleEvents");
    if (!guard) return to_grpc(guard.status());
    auto now = node_.virtual_at(node_.now_ns());
    if (!now) return to_grpc(now.status().with_context("ScheduleEvents: "));
    auto by_pipe = events_by_pipe(req, *now);
    if (!by_pipe) return to_grpc(by_pipe.status().with_context("ScheduleEvents: "));
    std::vector<std::pair<std::string, std::string>> cancel;
    for (const auto& p : req.cancel()) {
      for (const char* dir : {"a_to_b", "b_to_a"}) {
        if (p.direction().empty() || p.direction() == dir) cancel.emplace_back(p.link(), dir);
      }
    }
    // Every direction named exists before anything changes.
    std::vector<std::pair<std::string, std::string>> named = cancel;
    for (const auto& entry : *by_pipe) named.push_back(entry.first);
    for (const auto& [link_name, dir] : named) {
      if (auto c = node_.pipe_config(link_name, dir); !c) {
        return to_grpc(c.status().with_context("ScheduleEvents: "));
      }
    }
    uint32_t cancelled = 0, scheduled = 0;
    for (const auto& [link_name, dir] : cancel) {
      auto n = node_.cancel_events(link_name, dir);
      if (!n) return to_grpc(n.status().with_context("ScheduleEvents: "));
      cancelled += static_cast<uint32_t>(*n);
    }
    for (auto& [key, events] : *by_pipe) {
      const size_t n = events.size();
      Status s = node_.schedule_events(key.first, key.second, std::move(events));
      if (!s) {
        return to_grpc(
            s.with_context(cat("ScheduleEvents: ", scheduled, " events scheduled before: ")));
      }
      scheduled += static_cast<uint32_t>(n);
      std::fprintf(stderr, "agent: %zu event(s) scheduled on %s/%s\n", n, key.first.c_str(),
                   key.second.c_str());
    }
    reply->set_scheduled(scheduled);
    reply->set_cancelled(cancelled);
    return grpc::Status::OK;
  }

  grpc::Status export_pcap(const agent::ExportPcapRequest& req, agent::ExportPcapReply* reply) {
    if (req.dir().empty()) return to_grpc(invalid_argument("dir: give the folder to write into"));
    auto dir = exports_.confine(req.dir());
    if (!dir) return to_grpc(dir.status().with_context("ExportPcap: "));
    auto guard = lock("ExportPcap");
    if (!guard) return to_grpc(guard.status());
    auto files = checkpoint::export_node_pcap(node_, *dir);
    if (!files) return to_grpc(files.status());
    for (const std::string& f : *files) reply->add_files(f);
    return grpc::Status::OK;
  }

  grpc::Status set_link_params(const agent::SetLinkParamsRequest& req,
                               agent::SetLinkParamsReply* reply) {
    if (Status s = need_pipe(req.pipe()); !s) return to_grpc(s);
    auto guard = lock("SetLinkParams");
    if (!guard) return to_grpc(guard.status());
    auto current = node_.pipe_config(req.pipe().link(), req.pipe().direction());
    if (!current) return to_grpc(current.status());
    link::PipeConfig next = *current;
    Status s = link::apply_settings(next, req.settings());
    if (s) s = node_.set_pipe(req.pipe().link(), req.pipe().direction(), next);
    if (!s) return to_grpc(s);
    reply->set_config(link::describe(next));
    return grpc::Status::OK;
  }

  grpc::Status watch_frames(grpc::ServerContext* context, const agent::WatchFramesRequest& req,
                            grpc::ServerWriter<agent::TriggerEvent>* writer) {
    auto watch = dataplane::FrameWatch::create(req.pattern());
    if (!watch) return to_grpc(watch.status().with_context("WatchFrames: "));
    if (Status s = node_.watch(req.link(), watch->get()); !s) {
      return to_grpc(s.with_context("WatchFrames: "));
    }
    dataplane::FrameMatch matches[32];
    uint64_t reported_missed = 0;
    grpc::Status result = grpc::Status::OK;
    while (!context->IsCancelled() && !shutting_down_) {
      const unsigned n = (*watch)->drain(matches, 32);
      for (unsigned i = 0; i < n; ++i) {
        const dataplane::FrameMatch& m = matches[i];
        agent::TriggerEvent event;
        auto correction = monitor_ ? monitor_->correction_ns() : Result<int64_t>(int64_t{0});
        event.set_at_ns(m.real_ns - (correction ? *correction : 0));
        event.set_where(cat("link ", m.where->link_name, " ", m.where->direction));
        event.set_detail(
            cat(m.length, " B ", checkpoint::summarize_frame({m.head, m.head_length})));
        if (!writer->Write(event)) return grpc::Status::CANCELLED;
      }
      if (const uint64_t missed = (*watch)->missed(); missed != reported_missed) {
        reported_missed = missed;
        std::fprintf(stderr, "agent: WatchFrames: %llu matches not reported (ring full)\n",
                     static_cast<unsigned long long>(missed));
      }
      if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (Status s = node_.unwatch(watch->get()); !s) {
      // A worker that never acknowledged may still hold the watch: keep it
      // alive rather than free memory a loop could touch.
      std::fprintf(stderr, "agent: WatchFrames: %s\n", s.to_string().c_str());
      (void)watch->release();
    }
    return result;
  }

 private:
  void set_lease(int64_t local_ns) { lease_.set(local_ns); }

  // Undoes a freeze whatever it has become: not reached yet (cancelled),
  // reached (thawed now or at `at`), or never set (nothing to do). Only
  // then does the lease end: a thaw that failed leaves it to try again.
  Status roll_back(int64_t at) {
    Status s;
    if (!node_.cancel_freeze()) {
      auto frozen = node_.frozen();
      if (!frozen || *frozen) s = node_.thaw_at(std::max(at, node_.now_ns() + 1'000'000));
    }
    if (s) set_lease(0);
    return s;
  }

  dataplane::DelayNode& node_;
  clock_sync::SyncMonitor* monitor_;  // null: no PTP
  std::string mode_;
  const PathRoot store_;
  const PathRoot exports_;
  const int realtime_priority_;
  std::atomic<bool> shutting_down_{false};
  Lease lease_;  // last: it uses everything above
};

// Every call first asks `access` (rpc/access.h) whether its caller may
// make it, then goes to the node.
class Service final : public agent::DelayNodeAgent::Service {
 public:
  Service(Node& node, Authorizer access) : node_(node), access_(std::move(access)) {}

  grpc::Status Prepare(grpc::ServerContext* context, const agent::PrepareRequest* req,
                       agent::PrepareReply* out) override {
    if (Status s = access_.check(*context, "Prepare"); !s) return to_grpc(s);
    return node_.prepare(*req, out);
  }
  grpc::Status Freeze(grpc::ServerContext* context, const agent::FreezeRequest* req,
                      agent::FreezeReply* out) override {
    if (Status s = access_.check(*context, "Freeze"); !s) return to_grpc(s);
    return node_.freeze(*req, out);
  }
  grpc::Status Thaw(grpc::ServerContext* context, const agent::ThawRequest* req,
                    agent::ThawReply* out) override {
    if (Status s = access_.check(*context, "Thaw"); !s) return to_grpc(s);
    return node_.thaw(*req, out);
  }
  grpc::Status VmStopped(grpc::ServerContext* context, const agent::VmStoppedRequest* req,
                         agent::VmStoppedReply* out) override {
    if (Status s = access_.check(*context, "VmStopped"); !s) return to_grpc(s);
    return node_.vm_stopped(*req, out);
  }
  grpc::Status Shift(grpc::ServerContext* context, const agent::ShiftRequest* req,
                     agent::ShiftReply* out) override {
    if (Status s = access_.check(*context, "Shift"); !s) return to_grpc(s);
    return node_.shift(*req, out);
  }
  grpc::Status Hold(grpc::ServerContext* context, const agent::HoldRequest* req,
                    agent::HoldReply* out) override {
    if (Status s = access_.check(*context, "Hold"); !s) return to_grpc(s);
    return node_.hold(*req, out);
  }
  grpc::Status Save(grpc::ServerContext* context, const agent::SaveRequest* req,
                    agent::SaveReply* out) override {
    if (Status s = access_.check(*context, "Save"); !s) return to_grpc(s);
    return node_.save(context, *req, out);
  }
  grpc::Status Restore(grpc::ServerContext* context, const agent::RestoreRequest* req,
                       agent::RestoreReply* out) override {
    if (Status s = access_.check(*context, "Restore"); !s) return to_grpc(s);
    return node_.restore(*req, out);
  }
  grpc::Status ListFrames(grpc::ServerContext* context, const agent::ListFramesRequest* req,
                          agent::ListFramesReply* out) override {
    if (Status s = access_.check(*context, "ListFrames"); !s) return to_grpc(s);
    return node_.list_frames(*req, out);
  }
  grpc::Status EditFrames(grpc::ServerContext* context, const agent::EditFramesRequest* req,
                          agent::EditFramesReply* out) override {
    if (Status s = access_.check(*context, "EditFrames"); !s) return to_grpc(s);
    return node_.edit_frames(*req, out);
  }
  grpc::Status GetStats(grpc::ServerContext* context, const agent::GetStatsRequest* req,
                        agent::GetStatsReply* out) override {
    if (Status s = access_.check(*context, "GetStats"); !s) return to_grpc(s);
    return node_.get_stats(*req, out);
  }
  grpc::Status GetVirtualTime(grpc::ServerContext* context, const agent::VirtualTimeRequest* req,
                              agent::VirtualTimeReply* out) override {
    if (Status s = access_.check(*context, "GetVirtualTime"); !s) return to_grpc(s);
    return node_.get_virtual_time(*req, out);
  }
  grpc::Status ScheduleEvents(grpc::ServerContext* context, const agent::ScheduleEventsRequest* req,
                              agent::ScheduleEventsReply* out) override {
    if (Status s = access_.check(*context, "ScheduleEvents"); !s) return to_grpc(s);
    return node_.schedule_events(*req, out);
  }
  grpc::Status ExportPcap(grpc::ServerContext* context, const agent::ExportPcapRequest* req,
                          agent::ExportPcapReply* out) override {
    if (Status s = access_.check(*context, "ExportPcap"); !s) return to_grpc(s);
    return node_.export_pcap(*req, out);
  }
  grpc::Status SetLinkParams(grpc::ServerContext* context, const agent::SetLinkParamsRequest* req,
                             agent::SetLinkParamsReply* out) override {
    if (Status s = access_.check(*context, "SetLinkParams"); !s) return to_grpc(s);
    return node_.set_link_params(*req, out);
  }
  grpc::Status WatchFrames(grpc::ServerContext* context, const agent::WatchFramesRequest* req,
                           grpc::ServerWriter<agent::TriggerEvent>* out) override {
    if (Status s = access_.check(*context, "WatchFrames"); !s) return to_grpc(s);
    return node_.watch_frames(context, *req, out);
  }

 private:
  Node& node_;
  const Authorizer access_;
};

}  // namespace

struct DelayNodeAgent::Impl {
  clock_sync::SystemClock clock;
  std::unique_ptr<clock_sync::SyncMonitor> monitor;
  std::unique_ptr<Node> node;  // after the monitor: it uses it
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

DelayNodeAgent::DelayNodeAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DelayNodeAgent::~DelayNodeAgent() {
  if (!impl_) return;
  impl_->node->shut_down();
  stop_serving(impl_->server.get());
}

const std::string& DelayNodeAgent::address() const {
  return impl_->address;
}

Result<std::unique_ptr<DelayNodeAgent>> DelayNodeAgent::start(dataplane::DelayNode& node,
                                                              const AgentOptions& options) {
  if (!options.tls.enabled()) AMBER_RETURN_IF_ERROR(check_plaintext_address(options.listen));
  auto impl = std::make_unique<Impl>();
  if (!options.ptp_socket.empty()) {
    clock_sync::SyncMonitorOptions sync;
    if (options.ptp_mode == "free-running")
      sync.policy.mode = clock_sync::SyncMode::kFreeRunning;
    else if (options.ptp_mode == "disciplined")
      sync.policy.mode = clock_sync::SyncMode::kDisciplined;
    else if (options.ptp_mode == "grandmaster")
      sync.policy.mode = clock_sync::SyncMode::kGrandmaster;
    else {
      return invalid_argument(
          cat("ptp mode '", options.ptp_mode, "': use free-running, disciplined or grandmaster"));
    }
    auto monitor = clock_sync::SyncMonitor::open(options.ptp_socket, impl->clock, sync);
    if (!monitor) return monitor.status();
    impl->monitor = std::move(monitor).value();
  }
  AccessPolicy policy = options.access;
  policy.tls = options.tls.enabled();
  policy.operators_may_export = !options.export_dir.empty();
  auto access = Authorizer::create(agent::DelayNodeAgent::service_full_name(), policy);
  if (!access) return access.status();
  PathRoot store(options.store, "store", "--store");
  PathRoot exports = options.export_dir.empty()
                         ? store
                         : PathRoot(options.export_dir, "export folder", "--export-dir");
  std::fprintf(stderr, "agent: access: %s\n", access->describe().c_str());
  std::fprintf(stderr, "agent: store: %s; pcap exports: %s\n",
               options.store.empty() ? "none (--store): Prepare, Save and Restore are refused"
                                     : options.store.c_str(),
               options.export_dir.empty() ? "into the store" : options.export_dir.c_str());
  impl->node = std::make_unique<Node>(node, impl->monitor.get(), options.ptp_mode, std::move(store),
                                      std::move(exports), options.realtime_priority);
  impl->service = std::make_unique<Service>(*impl->node, *std::move(access));
  auto serving = serve(options.listen, options.tls, impl->service.get());
  if (!serving) return serving.status();
  impl->server = std::move(serving->server);
  impl->address = serving->address;
  return std::unique_ptr<DelayNodeAgent>(new DelayNodeAgent(std::move(impl)));
}

}  // namespace amber::controller
