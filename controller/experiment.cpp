#include "controller/experiment.h"

#include <algorithm>
#include <filesystem>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment_steps.h"
#include "controller/grpc_status.h"

namespace amber::controller {
namespace fs = std::filesystem;
namespace {

// Files of a VM saved by an agent that sent no digests, checksummed here
// (the store is shared).
Status digest_tree(const std::string& root, const std::string& rel, Piece* piece) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(cat(root, "/", rel), ec), end; !ec && it != end;
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    auto sha = sha256_file(it->path());
    if (!sha) return sha.status();
    StoredFile* f = piece->add_files();
    f->set_path(fs::relative(it->path(), root).string());
    f->set_bytes(it->file_size());
    f->set_sha256(*sha);
  }
  if (ec) return unavailable(cat(root, "/", rel, ": ", ec.message()));
  return Status::ok();
}

}  // namespace

struct Experiment::Asked {
  std::vector<bool> node;  // Freeze sent
  std::vector<bool> host;  // StopAt sent
};

Experiment::Experiment(Topology topology, Agents agents, std::unique_ptr<MasterClock> clock,
                       std::unique_ptr<CheckpointStore> store)
    : topology_(std::move(topology)),
      agents_(std::move(agents)),
      clock_(std::move(clock)),
      store_(std::move(store)) {}

Result<std::unique_ptr<Experiment>> Experiment::create(Topology topology,
                                                       std::vector<std::string>* notes) {
  auto agents = Agents::connect(topology.proto);
  if (!agents) return agents.status();
  auto clock = MasterClock::create(topology.proto);
  if (!clock) return clock.status();
  std::vector<std::string> removed;
  auto store = CheckpointStore::open(topology.proto.store(), topology.proto.experiment(), &removed);
  if (!store) return store.status();
  if (notes) {
    for (const auto& id : removed) {
      notes->push_back(cat("store: removed the partial checkpoint ", id, " of an earlier run"));
    }
  }
  return std::unique_ptr<Experiment>(new Experiment(std::move(topology), std::move(agents).value(),
                                                    std::move(clock).value(),
                                                    std::move(store).value()));
}

Status Experiment::await_clock() const {
  // A monitor that has just started needs a few samples.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!clock_->trustworthy() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!clock_->trustworthy()) {
    return failed_precondition(cat("master clock of the controller: ", clock_->describe()));
  }
  return Status::ok();
}

int64_t Experiment::lead_ns() const {
  // A request reaches the agent within the round trip of the call just
  // made (which included the agent's own work): one of them ahead, plus the
  // margin, is enough.
  return max_round_trip_ns_.load() + topology_.durations.margin_ns;
}

Result<Manifest> Experiment::checkpoint(const CheckpointRequest& request, const std::string& reason,
                                        const ProgressFn& progress) {
  std::unique_lock lock(operation_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::nanoseconds(topology_.durations.save_deadline_ns))) {
    return unavailable(cat("busy: another operation (", activity_.load(), ") did not finish"));
  }
  activity_ = "checkpointing";
  auto result = checkpoint_locked(request, reason, progress);
  activity_ = "idle";
  return result;
}

Result<Manifest> Experiment::checkpoint_locked(const CheckpointRequest& request,
                                               const std::string& reason,
                                               const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  auto say = [&](const char* step, std::string detail, uint64_t done = 0, uint64_t total = 0) {
    report(progress, step, std::move(detail), done, total);
  };
  const ExperimentState state = store_->state();
  if (state.swapped_out()) {
    return failed_precondition(cat("the experiment is swapped out (checkpoint ", state.head(),
                                   "): restore a checkpoint first"));
  }
  if (request.naive() && request.swap_out()) {
    return invalid_argument("a naive checkpoint cannot swap out: it does not save the network");
  }
  const bool naive = request.naive();
  if (Status s = await_clock(); !s)
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  auto id = store_->begin_checkpoint();
  if (!id) return id.status().with_context("store: ");
  const std::string dir = store_->path_of(*id);
  bool keep = false;
  struct Discard {
    CheckpointStore& store;
    const std::string& id;
    const bool& keep;
    ~Discard() {
      if (!keep) store.discard(id);
    }
  } discard{*store_, *id, keep};

  Manifest m;
  m.set_format(1);
  m.set_experiment(topology_.proto.experiment());
  m.set_id(*id);
  m.set_parent(state.head());
  m.set_branch(state.branch());
  m.set_label(request.label());
  m.set_reason(reason);
  m.set_naive(naive);
  m.set_created_unix_ns(clock_sync::SystemClock::realtime_ns());

  auto& nodes = agents_.delay_nodes;
  auto& hosts = agents_.vm_hosts;
  const size_t nn = naive ? 0 : nodes.size();
  const size_t nh = hosts.size();
  std::vector<Status> errors(nn + nh);
  std::vector<int64_t> round_trip(nn + nh, 0);
  std::vector<uint64_t> estimate(nn + nh, 0);
  const bool allow = topology_.proto.allow_unsynchronized();

  // 1. Prepare: nothing is touched until every agent says yes.
  say("prepare", cat("asking ", nn + nh, " agents"));
  std::vector<std::function<void()>> tasks;
  for (size_t i = 0; i < nn; ++i) {
    tasks.push_back([&, i] {
      DelayNodeClient& n = nodes[i];
      agent::GetStatsReply stats;
      if (auto s = unary(*n.stub, &NodeStub::GetStats, {}, &stats, d.step_deadline_ns); !s.ok()) {
        errors[i] = agent_error(n.what(), "prepare", s);
        return;
      }
      if (stats.node_id() != n.ref.id()) {
        errors[i] =
            failed_precondition(cat("prepare: ", n.what(), ": the agent at ", n.ref.address(),
                                    " serves node '", stats.node_id(), "'"));
        return;
      }
      agent::PrepareRequest req;
      req.set_checkpoint_dir(dir + "/delaynodes");
      req.set_allow_unsynchronized(allow);
      for (const auto& link : n.ref.link()) req.add_links(link);
      agent::PrepareReply reply;
      const int64_t t0 = steady_ns();
      auto s = unary(*n.stub, &NodeStub::Prepare, req, &reply, d.step_deadline_ns);
      round_trip[i] = steady_ns() - t0;
      if (!s.ok()) {
        errors[i] = agent_error(n.what(), "prepare", s);
      } else if (!reply.ready()) {
        errors[i] = failed_precondition(
            cat("prepare: ", n.what(), " is not ready: ", join(reply.reasons())));
      }
      estimate[i] = reply.estimated_image_bytes();
    });
  }
  for (size_t j = 0; j < nh; ++j) {
    tasks.push_back([&, j] {
      VmHostClient& h = hosts[j];
      const size_t k = nn + j;
      vmhost::GetStatusReply status;
      if (auto s = unary(*h.stub, &HostStub::GetStatus, {}, &status, d.step_deadline_ns); !s.ok()) {
        errors[k] = agent_error(h.what(), "prepare", s);
        return;
      }
      for (const auto& vm : h.ref.vm()) {
        auto found = std::find_if(status.vms().begin(), status.vms().end(),
                                  [&](const vmhost::VmState& v) { return v.name() == vm; });
        if (found == status.vms().end()) {
          errors[k] = failed_precondition(
              cat("prepare: ", h.what(), ": VM '", vm, "' of the topology is not on this host"));
          return;
        }
        if (found->state() != "running") {
          errors[k] = failed_precondition(
              cat("prepare: ", h.what(), ": VM '", vm, "' is ", found->state(), ", not running"));
          return;
        }
      }
      vmhost::PrepareRequest req;
      req.set_checkpoint_dir(dir + "/vms");
      req.set_allow_unsynchronized(allow);
      vmhost::PrepareReply reply;
      const int64_t t0 = steady_ns();
      auto s = unary(*h.stub, &HostStub::Prepare, req, &reply, d.step_deadline_ns);
      round_trip[k] = steady_ns() - t0;
      if (!s.ok()) {
        errors[k] = agent_error(h.what(), "prepare", s);
      } else if (!reply.ready()) {
        errors[k] = failed_precondition(
            cat("prepare: ", h.what(), " is not ready: ", join(reply.reasons())));
      }
      estimate[k] = reply.estimated_state_bytes();
    });
  }
  run_parallel(tasks);
  if (Status s = first_error(errors); !s)
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  int64_t max_rtt = 0;
  for (int64_t r : round_trip) max_rtt = std::max(max_rtt, r);
  max_round_trip_ns_ = max_rtt;
  uint64_t total_estimate = 0;
  for (uint64_t e : estimate) total_estimate += e;

  // 2. The instant: far enough ahead for every agent to receive it.
  auto now = clock_->now_ns();
  if (!now) return now.status().with_context("master clock: ");
  const int64_t lead = lead_ns();
  int64_t at = *now + lead;
  if (request.at_ns() != 0) {
    if (request.at_ns() < at) {
      return deadline_exceeded(
          cat("freeze: the instant asked for is ", format_duration_ns(request.at_ns() - *now),
              " from now, but the agents need at least ", format_duration_ns(lead),
              " (round trips + margin): nothing was touched"));
    }
    at = request.at_ns();
  }
  const int64_t lease = at + 2 * d.step_deadline_ns + d.save_deadline_ns;
  m.set_freeze_ns(at);
  say("freeze", cat(naive ? "VMs only (naive), " : "", "at +", format_duration_ns(at - *now)));

  // 3. Freeze every delay node and stop every VM at `at`.
  Asked asked{std::vector<bool>(nn, false), std::vector<bool>(nh, false)};
  std::vector<AgentStep> steps(nn + nh);
  std::fill(errors.begin(), errors.end(), Status::ok());
  tasks.clear();
  for (size_t i = 0; i < nn; ++i) {
    tasks.push_back([&, i] {
      DelayNodeClient& n = nodes[i];
      agent::FreezeRequest req;
      req.set_at_ns(at);
      req.set_lease_until_ns(lease);
      agent::FreezeReply reply;
      asked.node[i] = true;
      if (auto s = unary(*n.stub, &NodeStub::Freeze, req, &reply, at - *now + d.step_deadline_ns);
          !s.ok()) {
        errors[i] = agent_error(n.what(), "freeze", s);
        return;
      }
      int64_t late = 0;
      for (int64_t l : reply.latency_ns()) late = std::max(late, l);
      steps[i].set_agent(n.what());
      steps[i].set_step("freeze");
      steps[i].set_lateness_ns(late);
    });
  }
  for (size_t j = 0; j < nh; ++j) {
    tasks.push_back([&, j] {
      VmHostClient& h = hosts[j];
      const size_t k = nn + j;
      vmhost::StopAtRequest req;
      req.set_at_ns(at);
      req.set_lease_until_ns(lease);
      vmhost::StopAtReply reply;
      asked.host[j] = true;
      if (auto s = unary(*h.stub, &HostStub::StopAt, req, &reply, at - *now + d.step_deadline_ns);
          !s.ok()) {
        errors[k] = agent_error(h.what(), "freeze", s);
        return;
      }
      int64_t late = 0;
      for (const auto& vm : reply.vms()) {
        late = std::max(late, vm.lateness_ns());
        (*steps[k].mutable_vm_event_ns())[vm.vm()] = vm.event_ns();
      }
      steps[k].set_agent(h.what());
      steps[k].set_step("freeze");
      steps[k].set_lateness_ns(late);
    });
  }
  run_parallel(tasks);
  if (Status s = first_error(errors); !s) return rollback(asked, at, s, progress);
  for (auto& step : steps) *m.add_steps() = step;

  // 4. Save every piece into the checkpoint's folder.
  std::vector<std::vector<Piece>> pieces(nn + nh);
  std::fill(errors.begin(), errors.end(), Status::ok());
  std::fill(steps.begin(), steps.end(), AgentStep());
  tasks.clear();
  for (size_t i = 0; i < nn; ++i) {
    tasks.push_back([&, i] {
      DelayNodeClient& n = nodes[i];
      const std::string rel = cat("delaynodes/", n.ref.id(), ".img");
      agent::SaveRequest req;
      req.set_path(cat(dir, "/", rel));
      agent::SaveReply reply;
      const int64_t t0 = steady_ns();
      if (auto s = unary(*n.stub, &NodeStub::Save, req, &reply, d.save_deadline_ns); !s.ok()) {
        errors[i] = agent_error(n.what(), "save", s);
        return;
      }
      Piece piece;
      piece.set_kind("delay node");
      piece.set_name(n.ref.id());
      piece.set_agent(n.what());
      for (const auto& link : n.ref.link()) piece.add_links(link);
      StoredFile* f = piece.add_files();
      f->set_path(rel);
      f->set_bytes(reply.image_bytes());
      if (!reply.sha256().empty()) {
        f->set_sha256(reply.sha256());
      } else {
        auto sha = sha256_file(req.path());
        if (!sha) {
          errors[i] = sha.status().with_context(cat("save: ", n.what(), ": "));
          return;
        }
        f->set_sha256(*sha);
      }
      pieces[i].push_back(piece);
      steps[i].set_agent(n.what());
      steps[i].set_step("save");
      steps[i].set_duration_ns(steady_ns() - t0);
      steps[i].set_bytes(reply.image_bytes());
    });
  }
  for (size_t j = 0; j < nh; ++j) {
    tasks.push_back([&, j] {
      VmHostClient& h = hosts[j];
      const size_t k = nn + j;
      vmhost::SaveRequest req;
      req.set_checkpoint_dir(dir + "/vms");
      vmhost::SaveReply reply;
      const int64_t t0 = steady_ns();
      if (auto s = unary(*h.stub, &HostStub::Save, req, &reply, d.save_deadline_ns); !s.ok()) {
        errors[k] = agent_error(h.what(), "save", s);
        return;
      }
      uint64_t bytes = 0;
      for (const auto& vm : reply.vms()) {
        Piece piece;
        piece.set_kind("vm");
        piece.set_name(vm.vm());
        piece.set_agent(h.what());
        for (const auto& file : vm.files()) {
          StoredFile* f = piece.add_files();
          f->set_path(cat("vms/", file.path()));
          f->set_bytes(file.bytes());
          f->set_sha256(file.sha256());
        }
        if (vm.files().empty()) {
          if (Status s = digest_tree(dir, cat("vms/", vm.vm()), &piece); !s) {
            errors[k] = s.with_context(cat("save: ", h.what(), ": "));
            return;
          }
        }
        for (const auto& f : piece.files()) bytes += f.bytes();
        pieces[k].push_back(piece);
      }
      steps[k].set_agent(h.what());
      steps[k].set_step("save");
      steps[k].set_duration_ns(steady_ns() - t0);
      steps[k].set_bytes(bytes);
    });
  }
  {
    say("save", cat("~", format_bytes(total_estimate)), 0, total_estimate);
    Poller poller([&] { say("save", "", tree_bytes(dir), total_estimate); });
    run_parallel(tasks);
  }
  if (Status s = first_error(errors); !s) return rollback(asked, at, s, progress);
  uint64_t total = 0;
  for (size_t k = 0; k < pieces.size(); ++k) {
    for (auto& piece : pieces[k]) {
      for (const auto& f : piece.files()) {
        std::error_code ec;
        const uint64_t size = fs::file_size(cat(dir, "/", f.path()), ec);
        if (ec || size != f.bytes()) {
          return rollback(asked, at,
                          data_loss(cat("save: ", piece.agent(), ": ", f.path(), " is ",
                                        ec ? "missing" : cat(size, " bytes, not ", f.bytes()),
                                        " in the store")),
                          progress);
        }
        total += f.bytes();
      }
      *m.add_pieces() = std::move(piece);
    }
    *m.add_steps() = steps[k];
  }
  m.set_total_bytes(total);
  auto saved_at = clock_->now_ns();
  m.set_save_ns(saved_at ? *saved_at - at : 0);

  // 5. Swap-out: the manifest first (the VMs go away for good), then down.
  if (request.swap_out()) {
    m.set_swapped_out(true);
    say("manifest", cat(m.pieces_size(), " pieces, ", format_bytes(total)));
    if (Status s = store_->commit(m); !s) {
      return rollback(asked, at, s.with_context("manifest: "), progress);
    }
    keep = true;
    say("swap out", "shutting the VMs down; the delay nodes stay frozen");
    std::vector<Status> down(nh);
    tasks.clear();
    for (size_t j = 0; j < nh; ++j) {
      tasks.push_back([&, j] {
        vmhost::ShutdownReply reply;
        auto s = unary(*hosts[j].stub, &HostStub::Shutdown, {}, &reply, d.step_deadline_ns);
        if (!s.ok()) down[j] = agent_error(hosts[j].what(), "swap out", s);
      });
    }
    run_parallel(tasks);
    if (Status s = first_error(down); !s) {
      return Status(s.code(), cat("checkpoint ", m.id(), " is saved, but ", s.message()));
    }
    return m;
  }

  // 6. Resume at one instant, then the manifest: if writing it fails the
  // experiment still runs and the checkpoint is discarded whole.
  auto later = clock_->now_ns();
  if (!later) return rollback(asked, at, later.status().with_context("master clock: "), progress);
  const int64_t resume_at = std::max(*later + lead_ns(), at + 1'000'000);
  Status resumed = resume_all(resume_at, !naive, &m, progress);
  say("manifest", cat(m.pieces_size(), " pieces, ", format_bytes(total)));
  if (Status s = store_->commit(m); !s) {
    return Status(s.code(), cat("manifest: ", s.message(),
                                ": the checkpoint is discarded; the experiment runs on"));
  }
  keep = true;
  if (!resumed) {
    return Status(resumed.code(), cat("checkpoint ", m.id(), " is saved, but ", resumed.message()));
  }
  return m;
}

Status Experiment::resume_all(int64_t at_ns, bool include_nodes, Manifest* manifest,
                              const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  auto now = clock_->now_ns();
  const int64_t wait = now ? std::max<int64_t>(at_ns - *now, 0) : 0;
  if (progress) {
    Progress p;
    p.set_step("resume");
    p.set_detail(cat("at +", format_duration_ns(wait)));
    progress(p);
  }
  auto& nodes = agents_.delay_nodes;
  auto& hosts = agents_.vm_hosts;
  const size_t nn = include_nodes ? nodes.size() : 0;
  std::vector<Status> errors(nn + hosts.size());
  std::vector<AgentStep> steps(nn + hosts.size());
  std::vector<std::function<void()>> tasks;
  // An agent that gets the instant only after it passed (a loaded host)
  // still resumes, at once: late is better than an experiment half paused.
  std::vector<std::string> late(nn + hosts.size());
  auto is_past = [](const grpc::Status& s) {
    return s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
           s.error_message().find("past") != std::string::npos;
  };
  for (size_t i = 0; i < nn; ++i) {
    tasks.push_back([&, i] {
      steps[i].set_agent(nodes[i].what());
      steps[i].set_step("resume");
      agent::ThawRequest req;
      req.set_at_ns(at_ns);
      agent::ThawReply reply;
      auto s = unary(*nodes[i].stub, &NodeStub::Thaw, req, &reply, wait + d.step_deadline_ns);
      if (is_past(s)) {
        req.set_rollback(true);  // now
        s = unary(*nodes[i].stub, &NodeStub::Thaw, req, &reply, d.step_deadline_ns);
        auto t = clock_->now_ns();
        const int64_t lateness = t ? *t - at_ns : 0;
        steps[i].set_lateness_ns(lateness);
        late[i] = cat(nodes[i].what(), " thawed ", format_duration_ns(lateness), " late");
      }
      if (!s.ok()) errors[i] = agent_error(nodes[i].what(), "resume", s);
    });
  }
  for (size_t j = 0; j < hosts.size(); ++j) {
    tasks.push_back([&, j] {
      steps[nn + j].set_agent(hosts[j].what());
      steps[nn + j].set_step("resume");
      vmhost::ResumeAtRequest req;
      req.set_at_ns(at_ns);
      vmhost::ResumeAtReply reply;
      auto s = unary(*hosts[j].stub, &HostStub::ResumeAt, req, &reply, wait + d.step_deadline_ns);
      if (is_past(s)) {
        req.set_only_stopped(true);  // now
        s = unary(*hosts[j].stub, &HostStub::ResumeAt, req, &reply, d.step_deadline_ns);
        late[nn + j] = cat(hosts[j].what(), " resumed late");
      }
      if (!s.ok()) errors[nn + j] = agent_error(hosts[j].what(), "resume", s);
      int64_t lateness = 0;
      for (const auto& vm : reply.vms()) {
        lateness = std::max(lateness, vm.lateness_ns());
        (*steps[nn + j].mutable_vm_event_ns())[vm.vm()] = vm.event_ns();
      }
      steps[nn + j].set_lateness_ns(lateness);
      if (!late[nn + j].empty()) late[nn + j] += cat(" (", format_duration_ns(lateness), ")");
    });
  }
  run_parallel(tasks);
  for (const auto& l : late) {
    if (l.empty()) continue;
    log(cat("resume: ", l, ": the instant had passed when it arrived (raise the margin)"));
    if (progress) {
      Progress p;
      p.set_step("resume");
      p.set_detail(cat("warning: ", l, ": the instant had passed when it arrived"));
      progress(p);
    }
  }
  if (manifest) {
    manifest->set_resume_ns(at_ns);
    for (auto& step : steps) *manifest->add_steps() = step;
  }
  Status s = first_error(errors);
  if (!s) {
    return Status(s.code(), cat(s.message(),
                                "; an agent that missed the resume resumes by "
                                "itself when its lease ends"));
  }
  return Status::ok();
}

Status Experiment::rollback(const Asked& asked, int64_t not_before_ns, const Status& cause,
                            const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  auto now = clock_->now_ns();
  const int64_t base = now ? *now : clock_sync::SystemClock::realtime_ns();
  const int64_t at = std::max(base + lead_ns(), not_before_ns + 1'000'000);
  if (progress) {
    Progress p;
    p.set_step("rollback");
    p.set_detail(
        cat(cause.message(), "; resuming every agent at +", format_duration_ns(at - base)));
    progress(p);
  }
  log(cat("rollback: ", cause.message()));
  auto& nodes = agents_.delay_nodes;
  auto& hosts = agents_.vm_hosts;
  std::vector<std::string> failures(asked.node.size() + asked.host.size());
  std::vector<std::function<void()>> tasks;
  for (size_t i = 0; i < asked.node.size(); ++i) {
    if (!asked.node[i]) continue;
    tasks.push_back([&, i] {
      agent::ThawRequest req;
      req.set_at_ns(at);
      req.set_rollback(true);
      agent::ThawReply reply;
      auto s = unary(*nodes[i].stub, &NodeStub::Thaw, req, &reply, at - base + d.step_deadline_ns);
      if (s.ok()) return;
      // A node whose freeze never took effect has nothing to thaw.
      agent::GetStatsReply stats;
      auto again = unary(*nodes[i].stub, &NodeStub::GetStats, {}, &stats, d.step_deadline_ns);
      if (again.ok() && !stats.frozen()) return;
      failures[i] = cat(nodes[i].what(), ": ", s.error_message());
    });
  }
  for (size_t j = 0; j < asked.host.size(); ++j) {
    if (!asked.host[j]) continue;
    tasks.push_back([&, j] {
      vmhost::ResumeAtRequest req;
      req.set_at_ns(at);
      req.set_only_stopped(true);
      vmhost::ResumeAtReply reply;
      auto s =
          unary(*hosts[j].stub, &HostStub::ResumeAt, req, &reply, at - base + d.step_deadline_ns);
      if (!s.ok()) failures[asked.node.size() + j] = cat(hosts[j].what(), ": ", s.error_message());
    });
  }
  run_parallel(tasks);
  std::string unresolved;
  for (const auto& f : failures) {
    if (!f.empty()) unresolved += (unresolved.empty() ? "" : "; ") + f;
  }
  std::string outcome = "rolled back: every agent that stopped was resumed at one instant";
  if (!unresolved.empty()) {
    outcome = cat("rolled back, but not everywhere (", unresolved,
                  "): those agents resume by themselves when their lease ends");
  }
  return Status(cause.code(),
                cat(cause.message(), "; ", outcome, "; the partial checkpoint is removed"));
}

Result<uint64_t> Experiment::remove(const std::string& id) {
  std::unique_lock lock(operation_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::seconds(10))) {
    return unavailable(cat("busy: another operation (", activity_.load(), ") did not finish"));
  }
  return store_->remove(id);
}

ListReply Experiment::list() const {
  ListReply reply;
  const ExperimentState state = store_->state();
  reply.set_experiment(topology_.proto.experiment());
  reply.set_branch(state.branch());
  reply.set_head(state.head());
  for (auto& m : store_->list()) *reply.add_checkpoints() = std::move(m);
  return reply;
}

StatusReply Experiment::status() {
  StatusReply reply;
  const ExperimentState state = store_->state();
  reply.set_experiment(topology_.proto.experiment());
  const char* activity = activity_.load();
  reply.set_state(std::string(activity) != "idle" ? activity
                  : state.swapped_out()           ? "swapped out"
                                                  : "running");
  reply.set_branch(state.branch());
  reply.set_head(state.head());
  reply.set_checkpoints(static_cast<uint32_t>(store_->list().size()));
  reply.set_clock_trustworthy(clock_->trustworthy());
  reply.set_clock(clock_->describe());
  {
    std::lock_guard lock(background_mutex_);
    if (topology_.durations.periodic_interval_ns > 0) {
      std::string next;
      if (next_periodic_ns_ > 0) {
        next =
            cat("; next in ", format_duration_ns(std::max<int64_t>(
                                  next_periodic_ns_ - clock_sync::SystemClock::realtime_ns(), 0)));
      }
      reply.set_periodic(cat("every ", format_duration_ns(topology_.durations.periodic_interval_ns),
                             topology_.proto.periodic().keep() > 0
                                 ? cat(", keeping the last ", topology_.proto.periodic().keep())
                                 : std::string(", keeping all"),
                             next));
    }
    for (const auto& t : trigger_state_) reply.add_triggers(t);
  }
  auto& nodes = agents_.delay_nodes;
  auto& hosts = agents_.vm_hosts;
  std::vector<AgentStatus> agents(nodes.size() + hosts.size());
  std::vector<std::function<void()>> tasks;
  for (size_t i = 0; i < nodes.size(); ++i) {
    tasks.push_back([&, i] {
      AgentStatus& a = agents[i];
      a.set_kind("delay node");
      a.set_id(nodes[i].ref.id());
      a.set_address(nodes[i].ref.address());
      agent::GetStatsReply stats;
      const int64_t t0 = steady_ns();
      auto s = unary(*nodes[i].stub, &NodeStub::GetStats, {}, &stats, 2'000'000'000);
      a.set_round_trip_ns(steady_ns() - t0);
      a.set_reachable(s.ok());
      if (!s.ok()) {
        a.set_error(s.error_message());
        return;
      }
      const auto& c = stats.clock();
      a.set_clock_trustworthy(!c.synchronized() || c.trustworthy());
      a.set_clock(!c.synchronized() ? std::string("unsynchronized: local clock")
                  : c.trustworthy()
                      ? cat(c.mode(), ", correction ", format_duration_ns(c.correction_ns()))
                      : cat(c.mode(), ": not trustworthy: ", join(c.reasons())));
      a.set_frozen(stats.frozen());
      for (const auto& p : stats.pipes()) *a.add_pipes() = p;
    });
  }
  for (size_t j = 0; j < hosts.size(); ++j) {
    tasks.push_back([&, j] {
      AgentStatus& a = agents[nodes.size() + j];
      a.set_kind("vm host");
      a.set_id(hosts[j].ref.id());
      a.set_address(hosts[j].ref.address());
      vmhost::GetStatusReply status;
      const int64_t t0 = steady_ns();
      auto s = unary(*hosts[j].stub, &HostStub::GetStatus, {}, &status, 2'000'000'000);
      a.set_round_trip_ns(steady_ns() - t0);
      a.set_reachable(s.ok());
      if (!s.ok()) {
        a.set_error(s.error_message());
        return;
      }
      const auto& c = status.clock();
      a.set_clock_trustworthy(c.trustworthy());
      a.set_clock(c.trustworthy() ? cat(c.mode(), ", offset ", format_duration_ns(c.offset_ns()))
                                  : cat(c.mode(), ": not trustworthy: ", join(c.reasons())));
      for (const auto& vm : status.vms()) a.add_vms(cat(vm.name(), " ", vm.state()));
    });
  }
  run_parallel(tasks);
  for (auto& a : agents) *reply.add_agents() = std::move(a);
  return reply;
}

}  // namespace amber::controller
