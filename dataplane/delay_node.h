// The delay node: ports, the mempool sized for the links' bandwidth-delay
// products, one pipe per link direction, and worker lcores that run them.
// Created on an initialized EAL; control methods may be called from any
// non-worker thread while run() is in progress and reach the workers only
// through their command rings.
#pragma once

#include <rte_mempool.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/operation_lock.h"
#include "common/status.h"
#include "config/node_config.h"
#include "dataplane/direction.h"
#include "dataplane/sizing.h"
#include "dataplane/socket_ring_drops.h"
#include "dataplane/tsc_clock.h"
#include "dataplane/worker.h"

namespace amber::dataplane {

// One port's counters (rte_eth_stats): drops before a frame reaches a pipe
// (the NIC or socket ring overflowed, no mbuf) or after it left.
struct PortStats {
  std::string name;
  uint64_t rx_frames = 0, tx_frames = 0;
  uint64_t rx_missed = 0, rx_errors = 0, rx_no_mbuf = 0, tx_errors = 0;
};

struct NodeOptions {
  RingSizes rings;
  // How long a control call waits for a worker to take its command; then
  // the command is withdrawn.
  std::chrono::microseconds command_timeout = std::chrono::seconds(2);
};

class DelayNode {
 public:
  static Result<std::unique_ptr<DelayNode>> create(const config::NodeConfig& config,
                                                   const NodeOptions& options = {});
  ~DelayNode();
  DelayNode(const DelayNode&) = delete;
  DelayNode& operator=(const DelayNode&) = delete;

  // Runs the workers; returns after stop(). Call from the main lcore.
  void run();
  // The same in two halves, for a main lcore that has other work (tests):
  // start() launches the worker lcores and returns; wait() returns after
  // stop(). Directions assigned to the main lcore do not run this way.
  void start();
  void wait();
  // Safe from any thread and from a signal handler.
  void stop();
  bool running() const { return running_.load(std::memory_order_acquire); }

  // Counters of every direction, copied by the workers.
  Result<std::vector<DirectionStats>> stats();
  // Counters of every started port (a port that does not answer is left
  // out). From any thread.
  std::vector<PortStats> port_stats() const;
  // Changes one direction's parameters at the current instant; held frames
  // are neither lost nor reordered (see link::Pipe::reconfigure).
  Status set_pipe(const std::string& link, const std::string& direction,
                  const link::PipeConfig& pipe);
  Result<link::PipeConfig> pipe_config(const std::string& link, const std::string& direction);
  // Moves one direction's timeline by `by_ns` from now: > 0 later (it
  // stands still that long: nothing departs, arrivals are stamped with the
  // instant it stands at), < 0 earlier (what falls due in the jump leaves
  // at once). Held frames keep their order. Returns the direction's total
  // shift against the node's clock, which its images record (a pipe's
  // virtual time). For aligning a direction to the VM it delivers to.
  // A direction that ran on past the last freeze (run_on) moves by as
  // much more; `moved_ns` (if given) says by how much it moved in all.
  Result<int64_t> shift(const std::string& link, const std::string& direction, int64_t by_ns,
                        int64_t* moved_ns = nullptr);

  // Scheduled link events (link::Pipe::schedule_events) for one direction,
  // their instants on the node's virtual clock (virtual_at). The pipe keeps
  // them on the direction's own timeline (less its shift now), so a later
  // shift moves them with the frames. All or none refused (an instant
  // already past, a change the configuration cannot take). Cold
  // (delay_node_events.cpp).
  Status schedule_events(const std::string& link, const std::string& direction,
                         std::vector<link::LinkEvent> events);
  // Drops one direction's pending events; returns how many there were.
  Result<size_t> cancel_events(const std::string& link, const std::string& direction);
  // The node's virtual time at real instant real_ns (near now: the clock as
  // it is scheduled now). What the controller maps experiment time with.
  Result<int64_t> virtual_at(int64_t real_ns);

  // Arms `watch` on every direction of `link` (empty: of every link).
  // The caller keeps the watch alive until unwatch() returned.
  Status watch(const std::string& link, FrameWatch* watch);
  // Disarms it everywhere; after this no worker touches it.
  Status unwatch(FrameWatch* watch);

  // Freeze: every worker's virtual clock stops at the real (synchronized)
  // instant at_ns; refused for an instant already past, and then no worker
  // keeps a freeze. Thaw resumes them at at_ns.
  Status freeze_at(int64_t at_ns);
  Status thaw_at(int64_t at_ns);
  Status cancel_freeze();
  // Run-on (controller/README.md): after freeze_at, before its instant,
  // one direction keeps running past it until real instant until_ns at the
  // latest, so frames due before the VM it delivers to actually stops
  // still reach it. end_run_on: that VM stopped at stopped_ns; the
  // direction's timeline stands where it was then (never going back past
  // what it sent), and returns how far past the freeze it ran, which its
  // next shift adds back; kFailedPrecondition if it was not running on
  // (never asked, or ended by the thaw or a save). A save or the thaw
  // ends a run-on still going at that instant.
  Status run_on(const std::string& link, const std::string& direction, int64_t until_ns);
  Result<int64_t> end_run_on(const std::string& link, const std::string& direction,
                             int64_t stopped_ns);
  // How far after the freeze instant each worker's loop first ran frozen
  // (ns); kUnavailable before every worker has seen it.
  Result<std::vector<int64_t>> freeze_latencies();
  // Whether the freeze instant has been reached (and no thaw yet).
  Result<bool> frozen();
  // Real time now on the node's clock (CLOCK_REALTIME via the TSC).
  int64_t now_ns() const { return clock_.now_ns(); }
  const TscClock& clock() const { return clock_; }

  // What a body run by with_frozen_pipes() may use.
  struct FrozenView {
    std::vector<Direction*> directions;
    int64_t virtual_now_ns = 0;  // the virtual time the node stands at (a
                                 // direction's own: Direction::virtual_time)
    int64_t freeze_real_ns = 0;  // the real instant it froze
    rte_mempool* pool = nullptr;
  };
  // Exclusive access to the pipes for save, restore and surgery: parks every
  // worker (they stop polling), runs `body`, unparks. Refused unless the
  // node is frozen (or not running at all).
  Status with_frozen_pipes(const std::function<Status(FrozenView&)>& body);
  // The virtual time the frozen node stands at.
  Result<int64_t> frozen_virtual_ns();
  // After a restore: every worker stands frozen at virtual_ns; thaw_at()
  // continues the virtual timeline from there (each direction keeps the
  // shift the restore gave it), and the virtual clock carries on the
  // image's `clock_id` (0, an image from before ids: a fresh one). Only
  // inside with_frozen_pipes.
  void restore_clocks(int64_t virtual_ns, uint64_t clock_id);
  // Which virtual timeline the node's clock follows: a random id drawn
  // when the process starts and carried through save and restore. A
  // controller that finds it changed knows the node started afresh (its
  // virtual clock no longer maps experiment time) rather than restored.
  uint64_t clock_id() const { return clock_id_.load(std::memory_order_acquire); }

  // One state-changing operation at a time, whoever asks: the agent's
  // calls and a /amber/set on the telemetry socket take this, so a link
  // change cannot slip into a save or restore (#16 defect 8). The methods
  // above do not take it: a caller holds it across the calls that make
  // one operation.
  OperationLock& operations() { return operations_; }

  const config::NodeConfig& config() const { return config_; }
  const PoolSizing& sizing() const { return sizing_; }
  rte_mempool* pool() const { return pool_; }
  const std::vector<uint16_t>& ports() const { return ports_; }
  size_t worker_count() const { return workers_.size(); }
  uint64_t idle_sleeps() const;
  // Workers that wait on their ports' sockets when idle (the others sleep).
  size_t workers_waiting_on_ports() const;

 private:
  DelayNode(const config::NodeConfig& config, const NodeOptions& options);
  Status open_ports();
  Status create_pool();
  Status create_directions();
  Status create_workers();
  Status send(Worker& worker, const std::shared_ptr<Command>& command);
  Status send_all(CommandType type, int64_t at_ns);
  // A command of `type` with `at_ns` to the direction's worker, applied.
  Result<std::shared_ptr<Command>> send_to(const std::string& link, const std::string& direction,
                                           CommandType type, int64_t at_ns);
  Result<std::pair<Worker*, Direction*>> find(const std::string& link,
                                              const std::string& direction);
  void release_frames();
  // Room on every pipe's dense wire (link::Pipe::reserve); allocates, so
  // only while no worker polls.
  void reserve_wires();

  config::NodeConfig config_;
  NodeOptions options_;
  TscClock clock_;
  // Disciplines clock_ to CLOCK_REALTIME every 100 ms.
  std::mutex clock_mutex_;
  std::condition_variable clock_wake_;
  bool clock_stop_ = false;
  std::thread clock_thread_;
  PoolSizing sizing_;
  rte_mempool* pool_ = nullptr;
  std::vector<uint16_t> ports_;  // started ports, to stop at the end
  // What the kernel dropped at net_af_packet ports' socket rings (the PMD
  // does not report it): added to their rx_missed.
  mutable SocketRingDrops ring_drops_;
  std::vector<std::unique_ptr<Direction>> directions_;
  std::vector<std::unique_ptr<std::atomic<int64_t>>> link_starts_;  // Direction::link_start
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> clock_id_;
  OperationLock operations_;
};

}  // namespace amber::dataplane
