#include "controller/experiment.h"

#include <algorithm>
#include <filesystem>

#include "clock-sync/clock.h"
#include "common/realtime_thread.h"
#include "common/strings.h"
#include "common/units.h"
#include "controller/agents.h"
#include "controller/experiment_steps.h"
#include "rpc/files.h"

namespace amber::controller {
namespace fs = std::filesystem;
namespace {

Status untouched(const Status& s) {
  return Status(s.code(), cat(s.message(), ": nothing was touched"));
}

// What a new checkpoint is, where it continues from and why.
Manifest manifest_header(const std::string& experiment, const std::string& id,
                         const ExperimentState& state, const CheckpointRequest& request,
                         const std::string& reason) {
  Manifest m;
  m.set_format(1);
  m.set_experiment(experiment);
  m.set_id(id);
  m.set_parent(state.head());
  m.set_branch(state.branch());
  m.set_label(request.label());
  m.set_reason(reason);
  m.set_naive(request.naive());
  m.set_created_unix_ns(clock_sync::SystemClock::realtime_ns());
  *m.mutable_epoch_virtual_ns() = state.epoch_virtual_ns();
  *m.mutable_clock_id() = state.clock_id();
  return m;
}

}  // namespace

Experiment::Experiment(Topology topology, std::unique_ptr<MasterClock> clock,
                       std::vector<std::unique_ptr<Agent>> agents,
                       std::unique_ptr<CheckpointStore> store)
    : topology_(std::move(topology)),
      clock_(std::move(clock)),
      agents_(std::move(agents)),
      store_(std::move(store)) {}

Result<std::unique_ptr<Experiment>> Experiment::create(Topology topology,
                                                       std::vector<std::string>* notes) {
  auto clock = MasterClock::create(topology.proto);
  if (!clock) return clock.status();
  auto agents = connect_agents(topology, **clock);
  if (!agents) return agents.status();
  return create(std::move(topology), std::move(agents).value(), std::move(clock).value(), notes);
}

Result<std::unique_ptr<Experiment>> Experiment::create(Topology topology,
                                                       std::vector<std::unique_ptr<Agent>> agents,
                                                       std::unique_ptr<MasterClock> clock,
                                                       std::vector<std::string>* notes) {
  std::vector<std::string> removed;
  std::vector<std::string> corrected;
  auto store = CheckpointStore::open(topology.proto.store(), topology.proto.experiment(), &removed,
                                     &corrected);
  if (!store) return store.status();
  if (notes) {
    notes->insert(notes->end(), corrected.begin(), corrected.end());
    for (const auto& id : removed) {
      notes->push_back(cat("store: removed the partial checkpoint ", id, " of an earlier run"));
    }
  }
  std::unique_ptr<Experiment> experiment(new Experiment(
      std::move(topology), std::move(clock), std::move(agents), std::move(store).value()));
  experiment->reconcile(notes);
  experiment->finish_interrupted_restore(notes);
  experiment->tend_experiment_time(notes);
  return experiment;
}

void Experiment::reconcile(std::vector<std::string>* notes) {
  auto note = [&](std::string line) {
    log(line);
    if (notes) notes->push_back(std::move(line));
  };
  Crew all = crew_of(agents_, everyone);
  auto found = on_each("", all, [](Member& a) { return a.agent->status(); });
  bool vms_present = false;
  for (size_t i = 0; i < all.size(); ++i) {
    const AgentStatus& s = found[i];
    if (!s.reachable()) {
      note(cat("reconcile: ", all[i].agent->what(), " did not answer (", s.error(),
               "): if it is stopped, its lease resumes it"));
      continue;
    }
    all[i].asked = s.frozen();
    for (const auto& vm : s.vms()) vms_present |= vm.find(" absent") == std::string::npos;
  }
  Crew stopped = only(all, [](const Member& a) { return a.asked; });
  const ExperimentState state = store_->state();
  if (!state.restoring().empty()) return;  // finish_interrupted_restore() takes over
  if (state.swapped_out()) {
    note(cat("reconcile: the experiment is swapped out (checkpoint ", state.head(),
             "): the delay nodes stay frozen until a restore",
             vms_present ? "; VMs are present: a restore was interrupted, restore again" : ""));
    return;
  }
  if (stopped.empty()) return;
  std::string names;
  for (const Member& a : stopped) names += cat(names.empty() ? "" : ", ", a.agent->what());
  auto now = clock_->now_ns();
  const int64_t base = now ? *now : clock_sync::SystemClock::realtime_ns();
  const int64_t at = base + lead_ns();
  auto undone =
      on_each("reconcile", stopped, [&](Member& a) { return a.agent->roll_back(at, at - base); });
  std::string failed;
  for (const Status& s : undone) {
    if (!s) failed += cat(failed.empty() ? "" : "; ", s.message());
  }
  note(cat("reconcile: ", names, " stopped (left by an earlier controller): resumed at one instant",
           failed.empty() ? std::string() : cat(", except: ", failed, " (its lease resumes it)")));
}

void Experiment::finish_interrupted_restore(std::vector<std::string>* notes) {
  const std::string id = store_->state().restoring();
  if (id.empty()) return;
  auto note = [&](std::string line) {
    log(line);
    if (notes) notes->push_back(std::move(line));
  };
  note(cat("reconcile: a restore of ", id,
           " was interrupted (the controller stopped during it): restoring it again"));
  RestoreRequest request;
  request.set_id(id);
  auto restored = restore(request, {});
  if (restored) {
    note(cat("reconcile: restored ", id, ": the experiment runs on branch ", restored->branch()));
    return;
  }
  note(cat("reconcile: restoring ", id, " again failed: ", restored.status().message(),
           store_->state().restoring().empty() ? "" : cat(" (amberctl restore ", id, ")")));
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

Result<Manifest> Experiment::exclusively(const char* activity,
                                         const std::function<Result<Manifest>()>& operation) {
  std::unique_lock lock(operation_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::nanoseconds(topology_.durations.save_deadline_ns))) {
    return unavailable(cat("busy: another operation (", activity_.load(), ") did not finish"));
  }
  activity_ = activity;
  auto result = operation();
  activity_ = "idle";
  return result;
}

Result<int64_t> Experiment::first_instant(int64_t asked_ns, int64_t now_ns,
                                          const char* what) const {
  const int64_t lead = lead_ns();
  if (asked_ns == 0) return now_ns + lead;
  if (asked_ns < now_ns + lead) {
    return deadline_exceeded(
        cat(what, ": the instant asked for is ", format_duration_ns(asked_ns - now_ns),
            " from now, but the agents need at least ", format_duration_ns(lead),
            " (round trips + margin): nothing was touched"));
  }
  return asked_ns;
}

Result<Manifest> Experiment::checkpoint(const CheckpointRequest& request, const std::string& reason,
                                        const ProgressFn& progress) {
  return exclusively("checkpointing", [&] { return checkpoint_locked(request, reason, progress); });
}

Result<Manifest> Experiment::checkpoint_locked(const CheckpointRequest& request,
                                               const std::string& reason,
                                               const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  auto say = [&](const char* step, std::string detail) {
    report(progress, step, std::move(detail));
  };
  const ExperimentState state = store_->state();
  if (Status s = runs_whole(state); !s) return s;
  if (request.naive() && request.swap_out()) {
    return invalid_argument("a naive checkpoint cannot swap out: it does not save the network");
  }
  const bool naive = request.naive();
  if (Status s = await_clock(); !s) return untouched(s);
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

  Manifest m = manifest_header(topology_.proto.experiment(), *id, state, request, reason);

  // A naive checkpoint (evaluation) leaves the network running.
  Crew crew = crew_of(agents_, [&](const Agent& a) { return !(naive && a.moves_network()); });
  const bool allow = topology_.proto.allow_unsynchronized();

  // 1. Prepare: nothing is touched until every agent says yes.
  say("prepare", cat("asking ", crew.size(), " agents"));
  auto prepared = on_each("prepare", crew, [&](Member& a) { return a.agent->prepare(dir, allow); });
  if (Status s = first_error(prepared); !s) return untouched(s);
  int64_t max_rtt = 0;
  uint64_t estimate = 0;
  for (const auto& p : prepared) {
    max_rtt = std::max(max_rtt, p->round_trip_ns);
    estimate += p->estimated_bytes;
  }
  max_round_trip_ns_ = max_rtt;

  // 2. The instant: far enough ahead for every agent to receive it.
  auto now = clock_->now_ns();
  if (!now) return now.status().with_context("master clock: ");
  auto first = first_instant(request.at_ns(), *now, "freeze");
  if (!first) return first.status();
  const int64_t at = *first;
  const int64_t lease = at + d.lease_ns();
  m.set_freeze_ns(at);
  say("freeze", cat(naive ? "VMs only (naive), " : "", "at +", format_duration_ns(at - *now)));

  // 3.-5. Stop, save and, for a swap-out, the manifest. Any failure from
  // here to the resume instant rolls back, in this one place.
  Status s = stop_and_save(crew, at, lease, at - *now, dir, estimate, &m, progress);
  if (s && request.swap_out()) {
    // The manifest first: the VMs go away for good.
    m.set_swapped_out(true);
    say("manifest", cat(m.pieces_size(), " pieces, ", format_bytes(m.total_bytes())));
    s = store_->commit(m);
    if (!s) s = s.with_context("manifest: ");
  }
  int64_t resume_at = 0;
  if (s && !request.swap_out()) {
    auto later = clock_->now_ns();
    if (later) {
      resume_at = std::max(*later + lead_ns(), at + 1'000'000);
    } else {
      s = later.status().with_context("master clock: ");
    }
  }
  if (!s) return rollback(crew, at, s, progress);

  if (request.swap_out()) {
    keep = true;
    // Every agent: the VMs quit, and the delay nodes end their freeze's
    // lease (it would thaw them by themselves) and stay frozen.
    say("swap out", "shutting the VMs down; the delay nodes stay frozen");
    auto down = on_each("swap out", crew, [](Member& a) { return a.agent->shutdown(); });
    if (Status e = first_error(down); !e) {
      return Status(e.code(), cat("checkpoint ", m.id(), " is saved, but ", e.message(),
                                  " (an agent not told resumes when its lease ends)"));
    }
    return m;
  }

  // 6. Resume at one instant, then the manifest: if writing it fails the
  // experiment still runs and the checkpoint is discarded whole.
  Status resumed = resume_all(resume_at, crew, &m, progress);
  say("manifest", cat(m.pieces_size(), " pieces, ", format_bytes(m.total_bytes())));
  if (Status e = store_->commit(m); !e) {
    return Status(e.code(), cat("manifest: ", e.message(),
                                ": the checkpoint is discarded; the experiment runs on"));
  }
  keep = true;
  if (!resumed) {
    return Status(resumed.code(), cat("checkpoint ", m.id(), " is saved, but ", resumed.message()));
  }
  return m;
}

Status Experiment::stop_and_save(Crew& crew, int64_t at_ns, int64_t lease_until_ns,
                                 int64_t ahead_ns, const std::string& dir, uint64_t estimate,
                                 Manifest* m, const ProgressFn& progress) {
  // 3. Freeze every delay node and stop every VM at `at_ns`. With run-on
  // each VM host's report of its VMs' stops goes to the nodes at once.
  auto stopped = stop_crew(crew, at_ns, lease_until_ns, ahead_ns);
  if (Status s = first_error(stopped); !s) return s;
  for (size_t i = 0; i < crew.size(); ++i) {
    *m->add_steps() = named(*stopped[i], *crew[i].agent, "freeze");
  }

  // 4. Save every piece into the checkpoint's folder.
  std::vector<Result<Saved>> saved;
  {
    report(progress, "save", cat("~", format_bytes(estimate)), 0, estimate);
    Poller poller([&] { report(progress, "save", "", tree_bytes(dir), estimate); });
    saved = on_each("save", crew, [&](Member& a) {
      const int64_t t0 = steady_ns();
      auto r = a.agent->save(dir);
      if (r) r->step.set_duration_ns(steady_ns() - t0);
      return r;
    });
  }
  if (Status s = first_error(saved); !s) return s;
  // A delay node that died while the VMs were saving took their vhost-user
  // back ends with it: QEMU resets the rings' state when its back end goes,
  // and a checkpoint of those VMs restores with a dead network (the fault
  // matrix's "delay node killed mid-save"). Such a checkpoint is not kept.
  for (Member& a : crew) {
    if (!a.agent->moves_network()) continue;
    const AgentStatus st = a.agent->status();
    if (!st.reachable()) {
      return unavailable(cat("save: ", a.agent->what(), " stopped answering during the save (",
                             st.error(), "): the VMs' vhost-user back ends went with it and ",
                             "their saved state would restore without a network"));
    }
  }
  uint64_t total = 0;
  for (size_t i = 0; i < crew.size(); ++i) {
    for (auto& piece : saved[i]->pieces) {
      for (const auto& f : piece.files()) {
        std::error_code ec;
        const uint64_t size = fs::file_size(cat(dir, "/", f.path()), ec);
        if (ec || size != f.bytes()) {
          return data_loss(cat("save: ", piece.agent(), ": ", f.path(), " is ",
                               ec ? "missing" : cat(size, " bytes, not ", f.bytes()),
                               " in the store"));
        }
        total += f.bytes();
      }
      *m->add_pieces() = std::move(piece);
    }
    *m->add_steps() = named(saved[i]->step, *crew[i].agent, "save");
  }
  m->set_total_bytes(total);
  auto saved_at = clock_->now_ns();
  m->set_save_ns(saved_at ? *saved_at - at_ns : 0);
  return Status::ok();
}

std::vector<Result<AgentStep>> Experiment::stop_crew(Crew& crew, int64_t at_ns,
                                                     int64_t lease_until_ns, int64_t ahead_ns) {
  count_network_stops(crew);
  RunOnReports run_on(crew, topology_.durations.run_on_ns > 0);
  auto stopped = on_each("freeze", crew, [&](Member& a) {
    a.asked = true;
    // A VM host's reply is passed on at once: its thread must not wait
    // for a CPU the guests hold (FIFO 2, as the VM host's stepping thread).
    std::optional<RealtimeThread> prompt;
    if (topology_.durations.run_on_ns > 0) prompt.emplace(2);
    auto r = a.agent->stop_at(at_ns, lease_until_ns, ahead_ns);
    run_on.stopped(
        a, r, [this](const std::string& line) { log(line); }, *clock_);
    return r;
  });
  for (size_t i = 0; i < crew.size(); ++i) {
    if (stopped[i]) run_on.add_to(*crew[i].agent, *stopped[i]);
  }
  return stopped;
}

Status Experiment::resume_all(int64_t at_ns, Crew& crew, Manifest* manifest,
                              const ProgressFn& progress) {
  auto now = clock_->now_ns();
  const int64_t ahead = now ? std::max<int64_t>(at_ns - *now, 0) : 0;
  report(progress, "resume", cat("at +", format_duration_ns(ahead)));
  auto resumed =
      on_each("resume", crew, [&](Member& a) { return a.agent->resume_at(at_ns, ahead); });
  if (manifest) manifest->set_resume_ns(at_ns);
  for (size_t i = 0; i < crew.size(); ++i) {
    const AgentStep step =
        named(resumed[i] ? resumed[i]->step : AgentStep(), *crew[i].agent, "resume");
    if (manifest) *manifest->add_steps() = step;
    if (!resumed[i] || !resumed[i]->late) continue;
    const std::string late =
        cat(crew[i].agent->what(), " resumed ", format_duration_ns(step.lateness_ns()), " late");
    log(cat("resume: ", late, ": the instant had passed when it arrived (raise the margin)"));
    report(progress, "resume", cat("warning: ", late, ": the instant had passed when it arrived"));
  }
  if (Status s = first_error(resumed); !s) {
    // Like a rollback's: one that answers again is resumed then.
    const int64_t lease_end = at_ns + topology_.durations.lease_ns();
    {
      std::lock_guard lock(background_mutex_);
      for (size_t i = 0; i < crew.size(); ++i) {
        if (!resumed[i]) stragglers_[crew[i].agent] = lease_end;
      }
    }
    background_wake_.notify_all();
    return Status(s.code(), cat(s.message(),
                                "; an agent that missed the resume is resumed when it answers "
                                "again, or by itself when its lease ends"));
  }
  std::map<std::string, int64_t> excess;
  for (const auto& r : resumed) {
    for (const auto& [vm, ns] : r->step.vm_pause_excess_ns()) excess[vm] = ns;
  }
  align_network(excess, crew, manifest, progress);
  return Status::ok();
}

void Experiment::align_network(const std::map<std::string, int64_t>& pause_excess_ns, Crew& crew,
                               Manifest* manifest, const ProgressFn& progress) {
  if (pause_excess_ns.empty() && topology_.durations.run_on_ns == 0) return;
  Crew nodes;
  for (const Member& m : crew) {
    if (m.agent->moves_network()) nodes.push_back(m);
  }
  auto aligned =
      on_each("align", nodes, [&](Member& a) { return a.agent->align(pause_excess_ns); });
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!aligned[i]) {
      // The experiment runs; only the frames in flight reach their VM off
      // by its pause's excess, as without alignment.
      log(cat("align: ", aligned[i].status().to_string()));
      report(progress, "align", cat("warning: ", aligned[i].status().message()));
      continue;
    }
    if (aligned[i]->shift_ns().empty()) continue;
    std::string what;
    const std::map<std::string, int64_t> shifts(aligned[i]->shift_ns().begin(),
                                                aligned[i]->shift_ns().end());  // in order
    for (const auto& [pipe, ns] : shifts) {
      what += cat(what.empty() ? "" : ", ", pipe, " ", ns >= 0 ? "+" : "-",
                  format_duration_ns(ns >= 0 ? ns : -ns));
    }
    log(cat("align: ", nodes[i].agent->what(), ": ", what));
    if (manifest) *manifest->add_steps() = named(*aligned[i], *nodes[i].agent, "align");
  }
}

Status Experiment::rollback(Crew& crew, int64_t not_before_ns, const Status& cause,
                            const ProgressFn& progress, bool partial_checkpoint) {
  auto now = clock_->now_ns();
  const int64_t base = now ? *now : clock_sync::SystemClock::realtime_ns();
  const int64_t at = std::max(base + lead_ns(), not_before_ns + 1'000'000);
  report(progress, "rollback",
         cat(cause.message(), "; resuming every agent at +", format_duration_ns(at - base)));
  log(cat("rollback: ", cause.message()));
  Crew asked = only(crew, [](const Member& a) { return a.asked; });
  auto undone = on_each("", asked, [&](Member& a) { return a.agent->roll_back(at, at - base); });
  std::string unresolved;
  {
    // One that comes back (an agent restarted) is resumed then, not only
    // when its lease ends; the lease still covers one that stays away.
    const int64_t lease_end = base + topology_.durations.lease_ns();
    std::lock_guard lock(background_mutex_);
    for (size_t i = 0; i < undone.size(); ++i) {
      if (undone[i]) continue;
      unresolved += cat(unresolved.empty() ? "" : "; ", undone[i].message());
      stragglers_[asked[i].agent] = lease_end;
    }
  }
  std::string outcome = "rolled back: every agent that stopped was resumed at one instant";
  if (!unresolved.empty()) {
    background_wake_.notify_all();
    outcome = cat("rolled back, but not everywhere (", unresolved,
                  "): those agents are resumed when they answer again, or by themselves when "
                  "their lease ends");
  }
  return Status(cause.code(), cat(cause.message(), "; ", outcome,
                                  partial_checkpoint ? "; the partial checkpoint is removed" : ""));
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
                  : !state.restoring().empty()
                      ? cat("restore of ", state.restoring(), " interrupted: restore again")
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
  Crew all = crew_of(agents_, everyone);
  auto agents = on_each("", all, [](Member& a) { return a.agent->status(); });
  for (auto& a : agents) *reply.add_agents() = std::move(a);
  add_experiment_time(reply);
  return reply;
}

}  // namespace amber::controller
