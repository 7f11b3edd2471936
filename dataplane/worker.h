// The per-lcore loop: for each of its directions, rx burst -> stamp with
// the virtual clock -> pipe -> tx burst of the frames that are due.
#pragma once

#include <poll.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/command.h"
#include "dataplane/direction.h"
#include "dataplane/oversleep.h"
#include "dataplane/tsc_clock.h"
#include "link-emulator/virtual_clock.h"

namespace amber::dataplane {

struct WorkerOptions {
  // The bound an idle sleep may delay a scheduled departure by, and the
  // longest sleep asked for; 0 spins.
  int64_t idle_sleep_ns = 10'000;
  uint32_t idle_polls_before_sleep = 64;
  // An idle worker given its ports' descriptors (Worker::wait_on) waits on
  // them instead of looking every idle_sleep_ns: a frame's arrival or a
  // command wakes it, and otherwise it sleeps to the next departure, freeze
  // or thaw (at most 10 ms). On a host shared with guests that leaves them
  // the core a polling worker would take; a frame that finds it asleep is
  // stamped when the kernel has woken it (tens of microseconds in a VM).
  bool wait_on_ports = false;
  // SCHED_FIFO priority of the worker's thread (1..99); 0 leaves it as the
  // EAL made it. On a host that also runs the guests, the scheduler's
  // fairness otherwise hands the node's core to vCPUs that catch up after a
  // resume, and frames leave late; the idle sleeps give the core back.
  int realtime_priority = 0;
  // Or, at SCHED_OTHER, this nice value (-20..19; 0 leaves it): a heavier
  // share of a core the guests also want, without taking it whole.
  int nice = 0;
};

class Worker {
 public:
  Worker(unsigned lcore, std::vector<Direction*> directions, rte_mempool* pool, rte_ring* commands,
         const TscClock& clock, WorkerOptions options);

  // The loop; returns when a kStop command arrives or `stop` is set.
  int run(const std::atomic<bool>& stop);

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  // Descriptors that turn readable when a frame waits on each of the
  // worker's receive ports (a net_af_packet port's sockets): with one for
  // every receive port, an idle worker waits on them rather than looking
  // every idle_sleep_ns (WorkerOptions::wait_on_ports). Call before run().
  void wait_on(const std::vector<int>& port_fds);
  bool waits_on_ports() const { return !wait_fds_.empty(); }
  // Wakes the worker from a wait on its ports: after a command is queued,
  // or to stop. Async-signal-safe.
  void wake() const;

  unsigned lcore() const { return lcore_; }
  rte_ring* commands() const { return commands_; }
  const std::vector<Direction*>& directions() const { return directions_; }
  uint64_t sleeps() const { return sleeps_; }
  // Safe only while the worker is parked or not running.
  link::VirtualClock& virtual_clock() { return virtual_clock_; }

 private:
  // A received burst into d's pipe, stamped with its arrival; prefetch()
  // first, some work before.
  static void prefetch(const Direction& d, rte_mbuf* const* burst, uint16_t n);
  void receive(Direction& d, rte_mbuf* const* burst, uint16_t n, int64_t arrival,
               int64_t real_arrival);
  // virtual_now INT64_MIN: frozen, only frames already dequeued leave.
  bool transmit(Direction& d, int64_t virtual_now);
  // The burst staged in the previous pass into d's pipe; false if none.
  bool take_staged(Direction& d);
  // The other direction's first frame started the link's schedule.
  void follow_link_start(Direction& d, int64_t virtual_now);
  [[gnu::cold]] bool handle_commands();
  [[gnu::noinline]] void scan_watches(const Direction& d, rte_mbuf* const* burst, uint16_t n,
                                      int64_t real_ns);
  void idle_sleep(int64_t real_now);
  // A running-on direction whose port went down (its VM stopped) stops
  // departing now.
  [[gnu::cold]] void follow_port_down(Direction& d, int64_t real_now);
  // Ends every run-on (Direction::end_run_on): a park, a cancelled freeze.
  void end_run_ons(int64_t stopped_ns, int64_t real_now);

  unsigned lcore_;
  std::vector<Direction*> directions_;
  rte_mempool* pool_;
  const rte_mempool* roomy_pool_ = nullptr;  // another pool with room for the Frame
  rte_ring* commands_;
  const TscClock& clock_;  // the node's, disciplined by its control thread
  WorkerOptions options_;
  link::VirtualClock virtual_clock_;
  uint32_t idle_polls_ = 0;
  uint64_t sleeps_ = 0;
  // The ports' descriptors and, last, wake_fd_ (empty: sleeps instead).
  std::vector<pollfd> wait_fds_;
  int wake_fd_ = -1;  // an eventfd
  // How much longer than asked a sleep takes: a decaying maximum while
  // polling, the 90th percentile while waiting on the ports (oversleep.h).
  OversleepEstimate oversleep_{OversleepEstimate::Rule::kDecayingMaximum};
  // The freeze as this loop saw it: the first pass at or after the instant.
  bool was_frozen_ = false;
  int64_t freeze_seen_ns_ = -1;
};

}  // namespace amber::dataplane
