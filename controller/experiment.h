// One experiment under the controller: its agents, its store, and the
// synchronized checkpoint and restore protocols (controller/README.md).
// One operation runs at a time; periodic and triggered checkpoints skip
// their turn while another one runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "controller/agent.h"
#include "controller/master_clock.h"
#include "controller/store.h"
#include "controller/topology.h"
#include "proto/controller.pb.h"

namespace amber::controller {

using ProgressFn = std::function<void(const Progress&)>;

struct Member;
using Crew = std::vector<Member>;

class Experiment {
 public:
  // Connects to the agents (lazily: an agent down now is reported by
  // status and by the next checkpoint's prepare step) and opens the store.
  static Result<std::unique_ptr<Experiment>> create(Topology topology,
                                                    std::vector<std::string>* notes);
  // The same over given agents and clock (tests: fakes). The agents may
  // read the clock; partial checkpoints swept from the store are named in
  // `notes`, and so is the reconciliation with the agents (reconcile()).
  static Result<std::unique_ptr<Experiment>> create(Topology topology,
                                                    std::vector<std::unique_ptr<Agent>> agents,
                                                    std::unique_ptr<MasterClock> clock,
                                                    std::vector<std::string>* notes);
  ~Experiment();  // stops periodic checkpoints and trigger watches

  // Prepare, freeze at one instant, save, manifest, resume (or swap out);
  // on any failure every agent that stopped is resumed at a common instant
  // and the partial checkpoint removed.
  Result<Manifest> checkpoint(const CheckpointRequest& request, const std::string& reason,
                              const ProgressFn& progress);
  // Verify, load every piece on the agents the topology names, resume all
  // at one instant.
  Result<Manifest> restore(const RestoreRequest& request, const ProgressFn& progress);
  // Freeze and stop every agent at one instant, resume all duration_ns
  // later, save nothing (the returned manifest is not stored); a failure
  // rolls back as a checkpoint's does.
  Result<Manifest> pause(const PauseRequest& request, const ProgressFn& progress);

  StatusReply status();
  // A link event at an instant of experiment time (amberctl schedule), or
  // with `clear` the pending events of a link's direction(s) dropped.
  // Says what it did.
  Result<std::string> schedule(const ScheduleRequest& request);
  ListReply list() const;
  Result<Manifest> get(const std::string& id) const { return store_->manifest(id); }
  Result<uint64_t> remove(const std::string& id);

  // Keeps experiment time on every delay node (controller/README.md,
  // "Scheduled link events"), once at the start and then every 2 s, not
  // while swapped out: reads each node's clock at one master instant just
  // ahead. The first time, those readings become experiment time 0 (the
  // nodes' epochs, kept in the store) and the topology's events go out. A
  // node with no epoch yet, or whose clock id changed (its process started
  // afresh, not restored), gets an epoch from the experiment time of the
  // nodes that kept theirs, or else from the last reading when no node
  // froze since; its events still ahead go out, the past ones apply at
  // once. What it did goes to `notes`, the log and `amberctl status`.
  // (The background runs it; public for tests.)
  void tend_experiment_time(std::vector<std::string>* notes);

  // Periodic checkpoints and trigger watches, on their own threads.
  void start_background();

  // For logs: one line per event of the background threads.
  void set_log(std::function<void(const std::string&)> log) { log_ = std::move(log); }

 private:
  Experiment(Topology topology, std::unique_ptr<MasterClock> clock,
             std::vector<std::unique_ptr<Agent>> agents, std::unique_ptr<CheckpointStore> store);

  // A controller that starts asks every agent its state: frozen nodes and
  // paused VMs left by a controller that died mid-operation resume at one
  // common instant, unless the store says the experiment is swapped out
  // (then nothing is touched). What it found and did goes to `notes`.
  void reconcile(std::vector<std::string>* notes);
  // A restore that an earlier controller left half done (STATE's
  // restoring): done again, from the start.
  void finish_interrupted_restore(std::vector<std::string>* notes);
  void experiment_time_loop();
  // Experiment time now and each pending event's instant in it.
  void add_experiment_time(StatusReply& reply) const;
  // The lead time for an instant: measured round trips plus the margin.
  int64_t lead_ns() const;
  // Waits a little for the controller's own clock to become trustworthy.
  Status await_clock() const;
  // Every agent of `crew` asked to stop resumes at one instant, after
  // `not_before_ns`; returns `cause` saying so.
  Status rollback(Crew& crew, int64_t not_before_ns, const Status& cause,
                  const ProgressFn& progress, bool partial_checkpoint = true);
  // Stops `crew` at `at_ns` and saves it into `dir`: the freeze and save
  // steps, the pieces and the total in `manifest`.
  Status stop_and_save(Crew& crew, int64_t at_ns, int64_t lease_until_ns, int64_t ahead_ns,
                       const std::string& dir, uint64_t estimate, Manifest* manifest,
                       const ProgressFn& progress);
  // `crew` is about to freeze or load: if delay nodes are among it, the
  // last reading of experiment time stops holding (reading_).
  void count_network_stops(const Crew& crew);
  // Step 3 of a checkpoint or pause: every member of `crew` stops at
  // `at_ns` (asked), with run-on's reports passed on (RunOnReports).
  std::vector<Result<AgentStep>> stop_crew(Crew& crew, int64_t at_ns, int64_t lease_until_ns,
                                           int64_t ahead_ns);
  // Every agent of `crew` resumes at `at_ns`; the steps go to `manifest`.
  Status resume_all(int64_t at_ns, Crew& crew, Manifest* manifest, const ProgressFn& progress);
  // Then each delay node shifts the directions that deliver to a VM by how
  // much longer that VM's clock stood still than the network (Agent::align).
  // A node that fails to is a warning: the experiment runs either way.
  void align_network(const std::map<std::string, int64_t>& pause_excess_ns, Crew& crew,
                     Manifest* manifest, const ProgressFn& progress);
  // Runs one operation (checkpoint, restore, pause) while no other runs:
  // waits for the one running at most a save deadline, else refuses.
  Result<Manifest> exclusively(const char* activity,
                               const std::function<Result<Manifest>()>& operation);
  // The instant an operation stops everything at: `asked_ns`, or if 0 as
  // soon as every agent can act; an instant asked for too soon is refused
  // (`what` names the operation).
  Result<int64_t> first_instant(int64_t asked_ns, int64_t now_ns, const char* what) const;
  Result<Manifest> checkpoint_locked(const CheckpointRequest& request, const std::string& reason,
                                     const ProgressFn& progress);
  Result<Manifest> restore_locked(const RestoreRequest& request, const ProgressFn& progress);
  Result<Manifest> pause_locked(const PauseRequest& request, const ProgressFn& progress);
  void periodic_loop();
  // Agents a rollback or a resume could not reach: tried again until they
  // answer or their lease (which resumes them by itself) has ended.
  void straggler_loop();
  template <class Pending, class Pass>
  void drain(std::unique_lock<std::mutex>& lock, Pending& pending, Pass pass);
  // Between operations: every agent found stopped is resumed at one
  // instant (straggler_loop, for a lease's length after the start).
  void resume_left_stopped();
  void watch_loop(size_t trigger_index);
  void prune_periodic();
  void log(const std::string& line) const {
    if (log_) log_(line);
  }

  const Topology topology_;
  const std::unique_ptr<MasterClock> clock_;
  // In manifest order (the daemon's: delay nodes first). Declared after the
  // clock: they may read it, so they go first.
  const std::vector<std::unique_ptr<Agent>> agents_;
  const std::unique_ptr<CheckpointStore> store_;
  std::function<void(const std::string&)> log_;

  std::timed_mutex operation_;
  std::atomic<const char*> activity_{"idle"};
  std::atomic<int64_t> max_round_trip_ns_{5'000'000};

  std::mutex background_mutex_;
  std::condition_variable background_wake_;
  bool stopping_ = false;
  int64_t next_periodic_ns_ = 0;
  std::vector<std::thread> background_;
  std::vector<std::shared_ptr<TriggerStream>> watches_;  // to cancel on stop
  std::vector<std::string> trigger_state_;
  // Agent -> when its lease ends (master time): rolled back once it is back.
  std::map<Agent*, int64_t> stragglers_;
  // Agents a failed restore could not shut down: shut down when they
  // answer again, while the experiment is still swapped out.
  std::set<Agent*> to_shut_down_;
  // Experiment time at a master instant, read from a node that kept its
  // clock, and how many times the network had stopped then: valid while
  // no node froze since (network_stops_ unchanged). Under operation_.
  struct Reading {
    int64_t master_ns = 0;
    int64_t experiment_ns = 0;
    uint64_t network_stops = 0;
  };
  std::optional<Reading> reading_;
  uint64_t network_stops_ = 0;  // freezes and loads of delay nodes asked for
  // What was done about a node that joined late or started afresh
  // (AgentStatus.timeline); `mapped` false: its clock maps no experiment
  // time yet.
  struct Timeline {
    std::string text;
    bool mapped = false;
  };
  mutable std::mutex timeline_mutex_;
  std::map<std::string, Timeline> timelines_;
};

}  // namespace amber::controller
