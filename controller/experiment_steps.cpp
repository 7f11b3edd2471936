#include "controller/experiment_steps.h"

#include <algorithm>
#include <chrono>

#include "common/units.h"

namespace amber::controller {

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

RunOnReports::RunOnReports(const Crew& crew, bool enabled) : crew_(crew), enabled_(enabled) {
  for (const Member& m : crew) nodes_left_ += m.agent->moves_network();
}

void RunOnReports::stopped(const Member& member, const Result<AgentStep>& result, const Log& log,
                           const MasterClock& clock) {
  if (!enabled_) return;
  if (member.agent->moves_network()) {
    std::lock_guard lock(mutex_);
    --nodes_left_;
    node_failed_ = node_failed_ || !result;
    nodes_done_.notify_all();
    return;
  }
  if (!result) return;
  {
    // The nodes' freezes reply at once: this waits for their round trips.
    std::unique_lock lock(mutex_);
    nodes_done_.wait(lock, [&] { return nodes_left_ == 0; });
    if (node_failed_) return;  // the checkpoint rolls back
  }
  std::map<std::string, int64_t> stops;
  for (const auto& [vm, event] : result->vm_event_ns()) {
    auto clock = result->vm_clock_ns().find(vm);
    stops[vm] = clock != result->vm_clock_ns().end() ? clock->second : event;
  }
  if (auto now = clock.now_ns()) {
    std::string late;
    for (const auto& [vm, at] : stops) {
      late += cat(late.empty() ? "" : ", ", vm, " +", format_duration_ns(*now - at));
    }
    log(cat("run-on: ", member.agent->what(), "'s stops passed on after the VMs stopped: ", late));
  }
  for (const Member& node : crew_) {
    if (!node.agent->moves_network()) continue;
    auto answer = node.agent->vm_stopped(stops);
    std::lock_guard lock(mutex_);
    if (!answer) {
      // Its directions run on to the limit, or to the save.
      log(cat("run-on: ", answer.status().message()));
      continue;
    }
    AgentStep& mine = answers_[node.agent];
    for (const auto& [pipe, ns] : answer->ran_on_ns()) (*mine.mutable_ran_on_ns())[pipe] = ns;
    mine.set_lateness_ns(std::max(mine.lateness_ns(), answer->lateness_ns()));
  }
}

void RunOnReports::add_to(const Agent& agent, AgentStep& step) const {
  std::lock_guard lock(mutex_);
  auto a = answers_.find(&agent);
  if (a == answers_.end()) return;
  for (const auto& [pipe, ns] : a->second.ran_on_ns()) (*step.mutable_ran_on_ns())[pipe] = ns;
  step.set_lateness_ns(std::max(step.lateness_ns(), a->second.lateness_ns()));
}

void run_parallel(const std::vector<std::function<void()>>& tasks) {
  std::vector<std::thread> threads;
  threads.reserve(tasks.size());
  for (const auto& task : tasks) threads.emplace_back(task);
  for (auto& t : threads) t.join();
}

}  // namespace amber::controller
