// The experiment's background work: periodic checkpoints (every N seconds,
// keeping the last K) and triggered checkpoints (an agent reports a frame
// pattern or a console line; the controller checkpoints at once).
#include <algorithm>
#include <map>
#include <set>

#include "clock-sync/clock.h"
#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"

namespace amber::controller {

Experiment::~Experiment() {
  {
    std::lock_guard lock(background_mutex_);
    stopping_ = true;
    for (auto& watch : watches_) {
      if (watch) watch->cancel();
    }
  }
  background_wake_.notify_all();
  for (auto& t : background_) t.join();
}

void Experiment::start_background() {
  std::lock_guard lock(background_mutex_);
  if (std::any_of(agents_.begin(), agents_.end(),
                  [](const auto& a) { return a->moves_network(); })) {
    background_.emplace_back([this] { experiment_time_loop(); });
  }
  background_.emplace_back([this] { straggler_loop(); });
  if (topology_.durations.periodic_interval_ns > 0) {
    next_periodic_ns_ =
        clock_sync::SystemClock::realtime_ns() + topology_.durations.periodic_interval_ns;
    background_.emplace_back([this] { periodic_loop(); });
  }
  const auto& triggers = topology_.proto.trigger();
  trigger_state_.assign(triggers.size(), "");
  watches_.assign(triggers.size(), nullptr);
  for (int i = 0; i < triggers.size(); ++i) {
    trigger_state_[i] = cat(triggers[i].name(), ": connecting");
    background_.emplace_back([this, i] { watch_loop(static_cast<size_t>(i)); });
  }
}

// One pass over `pending` (guarded by background_mutex_, held in `lock`)
// between operations: `pass` gets a copy, without the lock, and returns
// the agents it is done with.
template <class Pending, class Pass>
void Experiment::drain(std::unique_lock<std::mutex>& lock, Pending& pending, Pass pass) {
  if (pending.empty()) return;
  const Pending copy = pending;
  lock.unlock();
  std::set<Agent*> done;
  {
    // An operation that runs now stops and resumes every agent itself.
    std::unique_lock op(operation_, std::try_to_lock);
    if (op.owns_lock()) done = pass(copy);
  }
  lock.lock();
  for (Agent* a : done) pending.erase(a);
}

void Experiment::straggler_loop() {
  // A controller killed after its agents took a StopAt finds them running
  // when it starts again (reconcile()), and they stop at T with nobody to
  // resume them but their lease: for as long as such a lease can last
  // after the start, agents found stopped between operations are resumed.
  const int64_t watch_until =
      clock_sync::SystemClock::realtime_ns() + topology_.durations.lease_ns();
  std::unique_lock lock(background_mutex_);
  while (!stopping_) {
    const bool watching = clock_sync::SystemClock::realtime_ns() < watch_until;
    const bool pending = !stragglers_.empty() || !to_shut_down_.empty();
    background_wake_.wait_for(lock, std::chrono::milliseconds(pending    ? 250
                                                              : watching ? 1000
                                                                         : 2000));
    if (stopping_) continue;
    drain(lock, to_shut_down_, [this](const std::set<Agent*>& agents) {
      std::set<Agent*> done;
      const bool down = store_->state().swapped_out();
      for (Agent* agent : agents) {
        if (!down) {
          done.insert(agent);  // restored since: its restore took care of it
        } else if (agent->shutdown()) {
          log(cat("restore: ", agent->what(),
                  " answers again: shut down (the experiment is swapped out)"));
          done.insert(agent);
        }
      }
      return done;
    });
    drain(lock, stragglers_, [this](const std::map<Agent*, int64_t>& agents) {
      std::set<Agent*> done;
      for (const auto& [agent, lease_end] : agents) {
        auto now = clock_->now_ns();
        const int64_t base = now ? *now : clock_sync::SystemClock::realtime_ns();
        if (base >= lease_end || store_->state().swapped_out()) {
          done.insert(agent);  // its lease resumed it, or it stays down
          continue;
        }
        const int64_t at = base + lead_ns();
        if (agent->roll_back(at, at - base)) {
          log(cat("rollback: ", agent->what(), " answers again: resumed at +",
                  format_duration_ns(at - base), ", before its lease ended"));
          done.insert(agent);
        }
      }
      return done;
    });
    if (stragglers_.empty() && to_shut_down_.empty() && watching) {
      lock.unlock();
      resume_left_stopped();
      lock.lock();
    }
  }
}

void Experiment::resume_left_stopped() {
  std::unique_lock op(operation_, std::try_to_lock);
  if (!op.owns_lock() || !runs_whole(store_->state())) return;
  Crew all = crew_of(agents_, everyone);
  auto found = on_each("", all, [](Member& a) { return a.agent->status(); });
  for (size_t i = 0; i < all.size(); ++i) all[i].asked = found[i].reachable() && found[i].frozen();
  Crew stopped = only(all, [](const Member& a) { return a.asked; });
  if (stopped.empty()) return;
  auto now = clock_->now_ns();
  const int64_t base = now ? *now : clock_sync::SystemClock::realtime_ns();
  const int64_t at = base + lead_ns();
  auto undone =
      on_each("reconcile", stopped, [&](Member& a) { return a.agent->roll_back(at, at - base); });
  for (size_t i = 0; i < stopped.size(); ++i) {
    log(cat(
        "reconcile: ", stopped[i].agent->what(),
        " stopped after this controller started (an operation of the one before): ",
        undone[i] ? "resumed" : cat("not resumed: ", undone[i].message(), " (its lease will)")));
  }
}

void Experiment::periodic_loop() {
  const int64_t interval = topology_.durations.periodic_interval_ns;
  std::unique_lock lock(background_mutex_);
  while (!stopping_) {
    const int64_t wait = next_periodic_ns_ - clock_sync::SystemClock::realtime_ns();
    if (wait > 0) {
      background_wake_.wait_for(lock, std::chrono::nanoseconds(wait));
      continue;
    }
    next_periodic_ns_ += interval;
    // Missed turns (a long save) are skipped, not caught up.
    const int64_t now = clock_sync::SystemClock::realtime_ns();
    if (next_periodic_ns_ <= now) next_periodic_ns_ = now + interval;
    lock.unlock();
    if (store_->state().swapped_out()) {
      log("periodic: skipped, the experiment is swapped out");
    } else {
      std::unique_lock op(operation_, std::try_to_lock);
      if (!op.owns_lock()) {
        log(cat("periodic: skipped, busy (", activity_.load(), ")"));
      } else {
        activity_ = "checkpointing";
        auto m = checkpoint_locked({}, "periodic", nullptr);
        activity_ = "idle";
        op.unlock();
        if (m) {
          log(cat("periodic: checkpoint ", m->id(), ", ", format_bytes(m->total_bytes())));
          prune_periodic();
        } else {
          log(cat("periodic: failed: ", m.status().message()));
        }
      }
    }
    lock.lock();
  }
}

void Experiment::prune_periodic() {
  const uint32_t keep = topology_.proto.periodic().keep();
  if (keep == 0) return;
  const auto all = store_->list();
  const ExperimentState state = store_->state();
  // A checkpoint that another branch continues from is a branch point: it
  // stays (a chain of periodic checkpoints on one branch is not).
  std::map<std::string, std::string> branch_of;
  for (const auto& m : all) branch_of[m.id()] = m.branch();
  std::set<std::string> branch_points;
  for (const auto& m : all) {
    auto parent = branch_of.find(m.parent());
    if (parent != branch_of.end() && parent->second != m.branch()) branch_points.insert(m.parent());
  }
  std::vector<std::string> periodic;
  for (const auto& m : all) {
    if (m.reason() == "periodic" && m.branch() == state.branch()) periodic.push_back(m.id());
  }
  for (size_t i = 0; i + keep < periodic.size(); ++i) {
    const std::string& id = periodic[i];
    if (id == state.head() || branch_points.count(id)) continue;
    auto freed = remove(id);
    if (freed) log(cat("periodic: removed ", id, " (keeping the last ", keep, ")"));
  }
}

void Experiment::watch_loop(size_t index) {
  const config::Trigger& trigger = topology_.proto.trigger(static_cast<int>(index));
  const std::string& pattern = topology_.durations.trigger_pattern[index];
  const int64_t cooldown = topology_.durations.trigger_cooldown_ns[index];
  int64_t quiet_until = 0;
  unsigned fired = 0;
  std::string last;
  auto set_state = [&](std::string text) {
    std::lock_guard lock(background_mutex_);
    trigger_state_[index] = cat(trigger.name(), ": ", text);
  };
  // The agent that watches: the delay node of a frame trigger, the VM host
  // of a console trigger.
  Agent* watcher = nullptr;
  std::string what;
  if (trigger.has_frame()) {
    const auto& f = trigger.frame();
    for (const auto& a : agents_) {
      if (a->kind() == Agent::Kind::kDelayNode && a->id() == f.delay_node()) watcher = a.get();
    }
    what = cat("frames on delay node ", f.delay_node(), f.link().empty() ? "" : " link ", f.link());
  } else {
    const auto& c = trigger.console();
    for (const auto& a : agents_) {
      if (a->kind() == Agent::Kind::kVmHost && a->id() == c.vm_host()) watcher = a.get();
    }
    what = cat("console of VM ", c.vm());
  }
  for (;;) {
    Result<std::unique_ptr<TriggerStream>> opened =
        watcher ? watcher->watch(trigger, pattern)
                : Result<std::unique_ptr<TriggerStream>>(not_found("no such agent"));
    std::shared_ptr<TriggerStream> stream;
    if (opened) stream = std::move(opened).value();
    {
      // The destructor cancels the streams under this lock: it ends this
      // one, or this thread sees it stopping and ends it here.
      std::lock_guard lock(background_mutex_);
      if (stopping_) {
        if (stream) stream->cancel();
        return;
      }
      watches_[index] = stream;
    }
    set_state(
        cat("watching ", what, fired ? cat(" (fired ", fired, " times, last ", last, ")") : ""));
    agent::TriggerEvent event;
    while (stream && stream->next(&event)) {
      // Events seen before the last checkpoint ended, or within the
      // cooldown after it, are not new breakpoints.
      if (clock_sync::SystemClock::realtime_ns() < quiet_until) continue;
      const std::string reason =
          cat("trigger ", trigger.name(), ": ", event.where(), ": ", event.detail().substr(0, 120));
      log(reason);
      CheckpointRequest req;
      req.set_swap_out(trigger.swap_out());
      req.set_label(trigger.name());
      auto m = checkpoint(req, reason, nullptr);
      quiet_until = clock_sync::SystemClock::realtime_ns() + cooldown;
      ++fired;
      last = m ? m->id() : cat("failed: ", m.status().message());
      log(cat("trigger ", trigger.name(), ": ", last));
      set_state(cat("watching ", what, " (fired ", fired, " times, last ", last, ")"));
    }
    const Status s = stream ? stream->finish() : opened.status();
    std::unique_lock lock(background_mutex_);
    if (stopping_) return;
    // Its deadline passed (Durations::watch_deadline_ns): a new one now.
    if (stream && s.code() == ErrorCode::kDeadlineExceeded) continue;
    trigger_state_[index] =
        cat(trigger.name(), ": not watching ", what, ": ", s.message(), " (retrying)");
    background_wake_.wait_for(lock, std::chrono::seconds(2), [&] { return stopping_; });
  }
}

}  // namespace amber::controller
