// Helpers of the experiment's protocols (experiment*.cpp): one phase on
// many agents at once, collecting the errors of a parallel step, timing,
// polling progress.
#pragma once

#include <google/protobuf/repeated_ptr_field.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "controller/agent.h"
#include "controller/master_clock.h"
#include "proto/controller.pb.h"

namespace amber::controller {

int64_t steady_ns();
// "a; b; c"
std::string join(const google::protobuf::RepeatedPtrField<std::string>& parts);

// One agent's part in an operation. During a phase each Member is written
// by its own agent's thread only, and each is an object of its own: flags
// in a std::vector<bool> share words, and concurrent writes to them once
// lost an agent from a rollback (issue #16).
struct Member {
  Agent* agent = nullptr;
  bool asked = false;    // asked to stop: a failure rolls it back
  bool running = false;  // restore: runs now, so it stops before anything loads
};
using Crew = std::vector<Member>;

inline bool everyone(const Agent&) {
  return true;
}
// The agents `keep` selects (everyone, ...), in order.
template <typename Keep>
Crew crew_of(const std::vector<std::unique_ptr<Agent>>& agents, Keep keep) {
  Crew crew;
  for (const auto& a : agents) {
    if (keep(*a)) crew.push_back({a.get()});
  }
  return crew;
}
template <typename Keep>
Crew only(const Crew& crew, Keep keep) {
  Crew some;
  for (const auto& m : crew) {
    if (keep(m)) some.push_back(m);
  }
  return some;
}

// A step of the manifest: `agent` did `step`.
inline AgentStep named(AgentStep step, const Agent& agent, const char* name) {
  step.set_agent(agent.what());
  step.set_step(name);
  return step;
}

// Whether the experiment runs whole, as a checkpoint or a pause needs:
// not swapped out, no restore left half done.
inline Status runs_whole(const ExperimentState& state) {
  if (state.swapped_out()) {
    return failed_precondition(cat("the experiment is swapped out (checkpoint ", state.head(),
                                   "): restore a checkpoint first"));
  }
  if (!state.restoring().empty()) {
    return failed_precondition(
        cat("a restore of ", state.restoring(), " did not finish: restore a checkpoint first"));
  }
  return Status::ok();
}

// An error of `step` says so first: "save: vm host h1 did not answer in time".
inline Status in_step(std::string_view step, Status s) {
  if (s || step.empty()) return s;
  return s.with_context(cat(step, ": "));
}
template <typename T>
Result<T> in_step(std::string_view step, Result<T> r) {
  if (r || step.empty()) return r;
  return r.status().with_context(cat(step, ": "));
}
template <typename T>
T in_step(std::string_view, T value) {
  return value;
}

// One phase of a protocol: `call(member)` for every member of `crew` at
// once, one thread each. Result i is crew[i]'s, an error prefixed with
// `step` (none if empty).
template <typename Call>
auto on_each(std::string_view step, Crew& crew, Call call) {
  using R = std::invoke_result_t<Call&, Member&>;
  std::vector<std::optional<R>> done(crew.size());
  {
    std::vector<std::thread> threads;
    threads.reserve(crew.size());
    for (size_t i = 0; i < crew.size(); ++i) {
      threads.emplace_back([&, i] { done[i].emplace(call(crew[i])); });
    }
    for (auto& t : threads) t.join();
  }
  std::vector<R> results;
  results.reserve(done.size());
  for (auto& r : done) results.push_back(in_step(step, std::move(*r)));
  return results;
}

// Run-on (Topology.run_on) during a freeze phase: each VM host's report
// of its VMs' stops (guest clock, else QEMU's STOP event) goes to every
// delay node as soon as it comes, once every node has taken its freeze (a
// freeze with run-on replies at once). Every member's thread calls
// stopped() with its stop_at result; afterwards add_to() gives each node's
// freeze step what the nodes answered (ran_on_ns, how late it froze).
class RunOnReports {
 public:
  using Log = std::function<void(const std::string&)>;
  RunOnReports(const Crew& crew, bool enabled);
  // `clock` times how long after each VM's stop its report is passed on.
  void stopped(const Member& member, const Result<AgentStep>& result, const Log& log,
               const MasterClock& clock);
  void add_to(const Agent& agent, AgentStep& step) const;

 private:
  const Crew& crew_;
  const bool enabled_;
  mutable std::mutex mutex_;
  std::condition_variable nodes_done_;
  size_t nodes_left_ = 0;
  bool node_failed_ = false;
  std::map<const Agent*, AgentStep> answers_;
};

// Runs every task on its own thread and waits for all of them.
void run_parallel(const std::vector<std::function<void()>>& tasks);

inline const Status& status_of(const Status& s) {
  return s;
}
template <typename T>
const Status& status_of(const Result<T>& r) {
  return r.status();
}

// The first error of a parallel step, with how many agents failed.
template <typename R>
Status first_error(const std::vector<R>& results) {
  const Status* first = nullptr;
  size_t failed = 0;
  for (const R& r : results) {
    const Status& s = status_of(r);
    if (s.is_ok()) continue;
    if (first == nullptr) first = &s;
    ++failed;
  }
  if (first == nullptr) return Status::ok();
  if (failed == 1) return *first;
  return Status(first->code(), cat(first->message(), " (and ", failed - 1, " more agent",
                                   failed > 2 ? "s" : "", ")"));
}

// Sends a progress message to `progress` (if any): a step, what it does,
// and for saves and restores the bytes done of a total.
inline void report(const std::function<void(const Progress&)>& progress, const char* step,
                   std::string detail, uint64_t done = 0, uint64_t total = 0) {
  if (!progress) return;
  Progress p;
  p.set_step(step);
  p.set_detail(std::move(detail));
  p.set_done_bytes(done);
  p.set_total_bytes(total);
  progress(p);
}

// Runs `poll` every 250 ms on a thread until the object goes away.
class Poller {
 public:
  explicit Poller(std::function<void()> poll)
      : thread_([this, poll = std::move(poll)] {
          std::unique_lock lock(mutex_);
          while (!wake_.wait_for(lock, std::chrono::milliseconds(250), [&] { return done_; })) {
            lock.unlock();
            poll();
            lock.lock();
          }
        }) {}
  ~Poller() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace amber::controller
