#include "dataplane/worker.h"

#include <pthread.h>
#include <rte_ethdev.h>
#include <rte_prefetch.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "dataplane/mbuf_frame.h"

namespace amber::dataplane {

namespace {
constexpr int64_t kLateNs = 10'000;
constexpr int64_t kSpinBeforeInstantNs = 1'000'000;
// The longest wait on the ports: the stop flag is looked at after it.
constexpr int64_t kLongestWaitNs = 10'000'000;
}  // namespace

Worker::Worker(unsigned lcore, std::vector<Direction*> directions, rte_mempool* pool,
               rte_ring* commands, const TscClock& clock, WorkerOptions options)
    : lcore_(lcore),
      directions_(std::move(directions)),
      pool_(pool),
      commands_(commands),
      clock_(clock),
      options_(options),
      virtual_clock_(0) {}

Worker::~Worker() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Worker::wait_on(const std::vector<int>& port_fds) {
  if (!options_.wait_on_ports || options_.idle_sleep_ns == 0 || port_fds.empty()) return;
  if (wake_fd_ < 0) wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return;  // it sleeps, as before
  wait_fds_.clear();
  for (int fd : port_fds) wait_fds_.push_back(pollfd{fd, POLLIN, 0});
  wait_fds_.push_back(pollfd{wake_fd_, POLLIN, 0});
  oversleep_.set_rule(OversleepEstimate::Rule::kPercentile90);
}

void Worker::wake() const {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

int Worker::run(const std::atomic<bool>& stop) {
  // Short sleeps must be short: the default 50 us timer slack would make
  // every idle sleep overshoot the departure bound.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  if (options_.realtime_priority > 0) {
    sched_param param{};
    param.sched_priority = options_.realtime_priority;
    if (int err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param); err != 0) {
      std::fprintf(stderr,
                   "amber-delaynode: warning: worker on lcore %u stays at its scheduling "
                   "policy: SCHED_FIFO %d refused (%s)\n",
                   lcore_, options_.realtime_priority, std::strerror(err));
    } else {
      std::printf("amber-delaynode: worker on lcore %u at SCHED_FIFO %d\n", lcore_,
                  options_.realtime_priority);
      std::fflush(stdout);
    }
  } else if (options_.nice != 0) {
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), options_.nice) != 0) {
      std::fprintf(stderr, "amber-delaynode: warning: worker on lcore %u: nice %d refused (%s)\n",
                   lcore_, options_.nice, std::strerror(errno));
    } else {
      std::printf("amber-delaynode: worker on lcore %u at nice %d\n", lcore_, options_.nice);
      std::fflush(stdout);
    }
  }
  while (!stop.load(std::memory_order_relaxed)) {
    if (rte_ring_count(commands_) != 0) {
      // A command sees every frame received so far in its pipe.
      for (Direction* d : directions_) take_staged(*d);
      if (handle_commands()) break;
    }
    // The clock is read after a burst comes in, never before it (a frame
    // stamped before it arrived would leave early), and otherwise once a
    // pass: the first direction always reads it, the others only when they
    // received something.
    int64_t real_now = 0, virtual_now = 0;
    bool frozen = false, busy = false;
    for (size_t i = 0; i < directions_.size(); ++i) {
      Direction& d = *directions_[i];
      rte_mbuf* burst[kBurst];
      const uint16_t n = rte_eth_rx_burst(d.rx_port, 0, burst, kBurst);
      if (i == 0 || n > 0) {
        real_now = clock_.now_ns();
        frozen = virtual_clock_.frozen(real_now);
        virtual_now = virtual_clock_.now(real_now);
        if (unlikely(frozen != was_frozen_)) {
          was_frozen_ = frozen;
          if (frozen) freeze_seen_ns_ = real_now;
        }
      }
      // A burst goes into the pipe one pass after it came in, with the
      // stamps of its arrival: its mbuf headers, cold since they last went
      // through one delay ago, are fetched meanwhile (a header read at
      // once would stall the pass on each of them). The previous pass's
      // burst goes in before what is due goes out, so a frame without
      // delay still leaves in the pass after its arrival. While frozen
      // nothing departs; frames already handed to the port (their virtual
      // departure is before the freeze) still go out.
      prefetch(d, burst, n);
      if (unlikely(d.pipe.awaits_first_frame())) follow_link_start(d, virtual_now);
      busy |= take_staged(d);
      // Thawed before its VM was reported stopped: it ran to the end.
      if (unlikely(d.runs_on(real_now)) && !frozen) d.end_run_on(d.run_on_until_ns, real_now);
      // Running on: its VM has not stopped yet, so it departs while frozen.
      const bool runs_on = frozen && unlikely(d.runs_on(real_now));
      const int64_t own_now = runs_on ? d.run_on_time(real_now) : d.virtual_time(virtual_now);
      busy |= transmit(d, frozen && !runs_on ? INT64_MIN : own_now) || n > 0;
      if (unlikely(runs_on && d.pending_count != 0)) follow_port_down(d, real_now);
      if (n > 0) {
        ++d.counters.rx_bursts;
        std::copy(burst, burst + n, d.staged);
        d.staged_count = n;
        d.staged_arrival = own_now;
        d.staged_real_arrival = real_now;
      }
    }
    if (busy) {
      idle_polls_ = 0;
    } else if (options_.idle_sleep_ns > 0 && ++idle_polls_ >= options_.idle_polls_before_sleep) {
      idle_sleep(real_now);
    }
  }
  // Into the pipes, which the node releases with everything they hold.
  for (Direction* d : directions_) take_staged(*d);
  return 0;
}

bool Worker::take_staged(Direction& d) {
  if (d.staged_count == 0) return false;
  const bool awaited = d.pipe.awaits_first_frame();
  receive(d, d.staged, d.staged_count, d.staged_arrival, d.staged_real_arrival);
  d.staged_count = 0;
  if (unlikely(awaited) && !d.pipe.awaits_first_frame() && d.link_start != nullptr) {
    // The link's first frame: the other direction starts at this instant.
    const int64_t at = d.pipe.schedule_state().start_ns + d.shift_ns;
    int64_t seen = d.link_start->load(std::memory_order_relaxed);
    while (seen < at && !d.link_start->compare_exchange_weak(seen, at, std::memory_order_release)) {
    }
  }
  return true;
}

void Worker::follow_link_start(Direction& d, int64_t virtual_now) {
  if (d.link_start == nullptr) return;
  const int64_t at = d.link_start->load(std::memory_order_acquire);
  if (at == INT64_MIN) return;
  d.pipe.start_schedule_at(at - d.shift_ns, d.virtual_time(virtual_now));
}

void Worker::prefetch(const Direction& d, rte_mbuf* const* burst, uint16_t n) {
  // The mbuf header is all a plain pipe touches (the Frame in the private
  // area stays cold: see link::DenseWire). A pipe with a rate writes the
  // Frame, so fetch that too.
  const bool writes_frames = d.pipe.current().rate_bps != 0 || d.pipe.traced();
  for (uint16_t i = 0; i < n; ++i) {
    rte_prefetch0(burst[i]);
    if (writes_frames) rte_prefetch0(rte_mbuf_to_priv(burst[i]));
  }
}

void Worker::receive(Direction& d, rte_mbuf* const* burst, uint16_t n, int64_t arrival,
                     int64_t real_arrival) {
  if (unlikely(d.watch_count != 0)) scan_watches(d, burst, n, real_arrival);
  link::Frame* frames[kBurst];
  uint32_t lengths[kBurst];
  unsigned k = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = burst[i];
    if (unlikely(m->nb_segs != 1)) {
      ++d.counters.oversize;
      rte_pktmbuf_free(m);
      continue;
    }
    // A PMD that hands over mbufs of another pool (the ring PMD does)
    // must leave room for the Frame in their private area; the last such
    // pool that did is remembered.
    if (unlikely(m->pool != pool_ && m->pool != roomy_pool_)) {
      if (rte_pktmbuf_priv_size(m->pool) < kMbufPrivSize) {
        ++d.counters.no_priv_area;
        rte_pktmbuf_free(m);
        continue;
      }
      roomy_pool_ = m->pool;
    }
    frames[k] = frame_of(m);
    lengths[k++] = m->pkt_len;
  }
  if (k == 0) return;
  if (d.pipe.plain()) {
    d.pipe.enqueue_burst(frames, lengths, k, arrival);
    return;
  }
  for (unsigned i = 0; i < k; ++i) {
    rte_mbuf* m = mbuf_of(frames[i]);
    link::Verdict v = d.pipe.enqueue(*frames[i], lengths[i], arrival);
    if (unlikely(v.corrupt_bit >= 0)) {
      uint8_t* bytes = rte_pktmbuf_mtod(m, uint8_t*);
      bytes[v.corrupt_bit >> 3] ^= static_cast<uint8_t>(1u << (v.corrupt_bit & 7));
    }
    if (unlikely(v.duplicate)) {
      rte_mbuf* copy = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
      if (copy == nullptr) {
        ++d.counters.dup_no_mbuf;
      } else {
        link::Frame* cf = frame_of(copy);
        cf->length = copy->pkt_len;
        if (!d.pipe.enqueue_duplicate(*cf, arrival).accepted) rte_pktmbuf_free(copy);
      }
    }
    // A corrupted frame's copy is made after the flip: netem corrupts
    // before it duplicates, too.
    if (!v.accepted) rte_pktmbuf_free(m);
  }
}

bool Worker::transmit(Direction& d, int64_t virtual_now) {
  bool sent = false;
  if (d.pending_count > 0) {
    uint16_t k = rte_eth_tx_burst(d.tx_port, 0, d.pending, d.pending_count);
    if (k < d.pending_count) {
      ++d.counters.tx_retries;
      std::copy(d.pending + k, d.pending + d.pending_count, d.pending);
      d.pending_count -= k;
      return k > 0;
    }
    d.pending_count = 0;
    sent = k > 0;
  }
  if (virtual_now == INT64_MIN) return sent;
  link::Frame* due[kBurst];
  int64_t departures[kBurst];
  int64_t arrivals[kBurst];
  const unsigned n = d.pipe.dequeue(virtual_now, due, departures, kBurst, arrivals);
  if (n == 0) return sent;
  size_t bucket = 0;
  while (virtual_now - departures[0] >= kLatenessBoundsNs[bucket]) ++bucket;
  ++d.counters.burst_lateness[bucket];
  rte_mbuf* out[kBurst];
  const int64_t late_before = virtual_now - kLateNs;
  for (unsigned i = 0; i < n; ++i) {
    out[i] = mbuf_of(due[i]);
    d.counters.late_departures += departures[i] < late_before;
  }
  uint16_t k = rte_eth_tx_burst(d.tx_port, 0, out, static_cast<uint16_t>(n));
  if (k < n) {
    ++d.counters.tx_retries;
    // Held until the port takes them: a checkpoint saves them, so their
    // Frames must hold their stamps (a plain pipe never wrote them).
    for (unsigned i = k; i < n; ++i) {
      link::Pipe::write_departed(*due[i], out[i]->pkt_len, departures[i], arrivals[i]);
    }
    std::copy(out + k, out + n, d.pending);
    d.pending_count = static_cast<uint16_t>(n - k);
  }
  return true;
}

void Worker::scan_watches(const Direction& d, rte_mbuf* const* burst, uint16_t n, int64_t real_ns) {
  for (uint16_t i = 0; i < n; ++i) {
    for (uint8_t w = 0; w < d.watch_count; ++w) d.watches[w]->scan(d, burst[i], real_ns);
  }
}

void Worker::follow_port_down(Direction& d, int64_t real_now) {
  // A VM's vhost-user back end goes down as QEMU stops it (after its
  // vCPUs): the port refuses frames and reports its link down. The
  // direction stops there; the VM host's report still says where its
  // timeline stands (end_run_on). A port that only has a full ring keeps
  // its link up and the run-on goes on.
  if (real_now >= d.run_on_until_ns) return;
  rte_eth_link link{};
  if (rte_eth_link_get_nowait(d.tx_port, &link) == 0 && link.link_status == RTE_ETH_LINK_DOWN) {
    d.run_on_until_ns = real_now;
    ++d.counters.run_on_port_down;
  }
}

void Worker::end_run_ons(int64_t stopped_ns, int64_t real_now) {
  for (Direction* d : directions_) d->end_run_on(stopped_ns, real_now);
}

void Worker::idle_sleep(int64_t real_now) {
  // A direction running on departs while the clock stands: spin (at most
  // the run-on's limit).
  for (const Direction* d : directions_) {
    if (d->has_run_on()) return;
  }
  const int64_t bound = options_.idle_sleep_ns;
  // Waiting on the ports, an arrival or a command ends the wait: only the
  // next departure, freeze or thaw bounds it.
  const bool on_ports = !wait_fds_.empty();
  int64_t sleep_ns = on_ports ? kLongestWaitNs : bound;
  // Spin through the last stretch before a freeze or thaw instant: a sleep
  // that overshoots would make the loop see the instant late (the virtual
  // clock is exact anyway, but the freeze latency reported would not be).
  for (int64_t instant : {virtual_clock_.freeze_at_ns(), virtual_clock_.thaw_at_ns()}) {
    if (instant != link::VirtualClock::kNone && instant > real_now) {
      if (instant - real_now < kSpinBeforeInstantNs + oversleep_.ns()) return;
      sleep_ns = std::min(sleep_ns, instant - real_now - kSpinBeforeInstantNs - oversleep_.ns());
    }
  }
  if (!virtual_clock_.frozen(real_now)) {
    // Virtual and real time run at the same pace while not frozen. Wake
    // up no later than the next departure plus the bound, counting the
    // overshoot sleeps have shown lately. (A direction standing still
    // after a shift wakes the loop early, never late.)
    const int64_t virtual_now = virtual_clock_.now(real_now);
    for (Direction* d : directions_) {
      if (d->pending_count) return;
      const int64_t next = d->pipe.next_event_ns();
      if (next == link::kNever) continue;
      const int64_t until = next - d->virtual_time(virtual_now);
      sleep_ns = std::min(sleep_ns, until + bound - oversleep_.ns());
    }
  }
  if (sleep_ns < 1'000) return;
  timespec ts{static_cast<time_t>(sleep_ns / 1'000'000'000),
              static_cast<long>(sleep_ns % 1'000'000'000)};
  ++sleeps_;
  if (on_ports) {
    const int ready = ppoll(wait_fds_.data(), wait_fds_.size(), &ts, nullptr);
    if (ready != 0) {
      // Woken early: no overshoot to learn from.
      if (ready > 0 && (wait_fds_.back().revents & POLLIN)) {
        uint64_t count;
        [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof count);
      }
      return;
    }
  } else {
    nanosleep(&ts, nullptr);
  }
  oversleep_.add(clock_.now_ns() - real_now - sleep_ns);
}

bool Worker::handle_commands() {
  void* item = nullptr;
  bool stop = false;
  while (rte_ring_dequeue(commands_, &item) == 0) {
    auto* holder = static_cast<std::shared_ptr<Command>*>(item);
    Command& c = **holder;
    CommandState queued = CommandState::kQueued;
    if (!c.state.compare_exchange_strong(queued, CommandState::kTaken, std::memory_order_acq_rel)) {
      delete holder;  // withdrawn: its sender timed out and reported it failed
      continue;
    }
    const int64_t real_now = clock_.now_ns();  // fresh: a park may have lasted seconds
    switch (c.type) {
      case CommandType::kStats: {
        size_t i = 0;
        for (Direction* d : directions_) {
          if (i >= c.stats.size()) break;
          // The names are filled by the sender: copying strings here
          // would allocate on the lcore.
          fill_stats(*d, d->virtual_time(virtual_clock_.now(real_now)), c.stats[i++]);
        }
        break;
      }
      case CommandType::kSetPipe:
        c.status = c.target->pipe.reconfigure(c.pipe,
                                              c.target->virtual_time(virtual_clock_.now(real_now)));
        break;
      case CommandType::kScheduleEvents: {
        // Instants of the node's clock onto the direction's own timeline.
        for (link::LinkEvent& e : c.events) e.at_ns -= c.target->shift_ns;
        c.status = c.target->pipe.schedule_events(
            std::move(c.events), c.target->virtual_time(virtual_clock_.now(real_now)));
        break;
      }
      case CommandType::kCancelEvents:
        c.result_ns = static_cast<int64_t>(c.target->pipe.cancel_events());
        break;
      case CommandType::kVirtualAt:
        c.result_ns = virtual_clock_.at(c.at_ns);
        break;
      case CommandType::kShift:
        // What it ran on past the last freeze comes back with the shift.
        c.at_ns += c.target->ran_on_ns;  // tells the sender
        c.target->shift(c.at_ns, virtual_clock_.now(real_now));
        c.target->ran_on_ns = 0;
        c.result_ns = c.target->shift_ns;
        break;
      case CommandType::kRunOn: {
        const int64_t freeze = virtual_clock_.freeze_at_ns();
        if (freeze == link::VirtualClock::kNone || real_now >= freeze) {
          c.status = failed_precondition("run-on needs a freeze instant not reached yet");
          break;
        }
        if (c.at_ns <= freeze) {
          c.status = invalid_argument("run-on must end after the freeze instant");
          break;
        }
        Direction& d = *c.target;
        d.run_on_from_ns = freeze;
        d.run_on_until_ns = c.at_ns;
        d.run_on_base_ns = d.virtual_time(virtual_clock_.at(freeze));
        break;
      }
      case CommandType::kEndRunOn:
        c.result_ns = c.target->has_run_on() ? c.target->end_run_on(c.at_ns, real_now) : -1;
        break;
      case CommandType::kStop:
        stop = true;
        break;
      case CommandType::kFreeze:
        c.status = virtual_clock_.schedule_freeze(c.at_ns, real_now);
        if (c.status) freeze_seen_ns_ = -1;
        break;
      case CommandType::kThaw:
        c.status = virtual_clock_.schedule_thaw(c.at_ns, real_now);
        if (c.status) {
          for (Direction* d : directions_) {
            if (d->has_run_on()) d->run_on_until_ns = std::min(d->run_on_until_ns, c.at_ns);
          }
        }
        break;
      case CommandType::kCancelFreeze:
        c.status = virtual_clock_.cancel_freeze(real_now);
        if (c.status) end_run_ons(INT64_MIN, real_now);  // none had begun: dropped
        break;
      case CommandType::kFreezeReport:
        c.at_ns = virtual_clock_.freeze_at_ns();
        c.result_ns = freeze_seen_ns_;
        break;
      case CommandType::kAddWatch:
        // result_ns 0: every watch slot of the direction is taken.
        c.result_ns = c.target->watch_count < kMaxWatchesPerDirection;
        if (c.result_ns) c.target->watches[c.target->watch_count++] = c.watch;
        break;
      case CommandType::kRemoveWatch:
        for (Direction* d : directions_) {
          auto* end = std::remove(d->watches, d->watches + d->watch_count, c.watch);
          d->watch_count = static_cast<uint8_t>(end - d->watches);
        }
        break;
      case CommandType::kPark: {
        // The sender may save the pipes: whatever still runs on stops now
        // (the node is frozen: every run-on has begun).
        end_run_ons(real_now, real_now);
        std::shared_ptr<std::atomic<bool>> unpark = c.unpark;
        c.state.store(CommandState::kDone, std::memory_order_release);
        delete holder;
        // The sender owns the pipes until it sets `unpark`.
        while (!unpark->load(std::memory_order_acquire)) {
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
        continue;
      }
    }
    c.state.store(CommandState::kDone, std::memory_order_release);
    delete holder;
  }
  return stop;
}

}  // namespace amber::dataplane
