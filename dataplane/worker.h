// The per-lcore loop: for each of its directions, rx burst -> stamp with
// the virtual clock -> pipe -> tx burst of the frames that are due.
#pragma once

#include <rte_mempool.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/command.h"
#include "dataplane/direction.h"
#include "dataplane/tsc_clock.h"
#include "link-emulator/virtual_clock.h"

namespace amber::dataplane {

struct WorkerOptions {
  // The bound an idle sleep may delay a scheduled departure by, and the
  // longest sleep asked for; 0 spins.
  int64_t idle_sleep_ns = 10'000;
  uint32_t idle_polls_before_sleep = 64;
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
  // How much longer than asked a sleep has recently taken (a decaying
  // maximum): a sleep is only taken if even this overshoot keeps the next
  // departure within the bound.
  int64_t oversleep_ns_ = 0;
  // The freeze as this loop saw it: the first pass at or after the instant.
  bool was_frozen_ = false;
  int64_t freeze_seen_ns_ = -1;
};

}  // namespace amber::dataplane
