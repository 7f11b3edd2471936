#include "dataplane/delay_node.h"

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_ring.h>
#include <time.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "common/strings.h"
#include "common/units.h"
#include "dataplane/mbuf_frame.h"

namespace amber::dataplane {
namespace {

std::string port_names() {
  std::string names;
  uint16_t id;
  RTE_ETH_FOREACH_DEV(id) {
    char name[RTE_ETH_NAME_MAX_LEN];
    if (rte_eth_dev_get_name_by_port(id, name) == 0) {
      if (!names.empty()) names += ", ";
      names += name;
    }
  }
  return names.empty() ? "none (give --vdev or a PCI device to the EAL)" : names;
}

// The MTU to ask of a port for frames of up to max_frame bytes. net_af_packet
// reports a fixed 1518-byte maximum yet carries whatever its ring slots
// (the framesz devarg) and the kernel interface's MTU allow, so it is left
// at its default; any other port that reports less than max_frame is
// refused here, by name, rather than by a bare EINVAL from configure.
Status jumbo_mtu(uint16_t port, const rte_eth_dev_info* info, uint32_t max_frame,
                 rte_eth_conf& conf) {
  if (info != nullptr && info->driver_name != nullptr &&
      std::string_view(info->driver_name) == "net_af_packet") {
    return Status::ok();
  }
  if (info != nullptr && info->max_rx_pktlen < max_frame) {
    char name[RTE_ETH_NAME_MAX_LEN] = "?";
    rte_eth_dev_get_name_by_port(port, name);
    return invalid_argument(cat("port ", name, ": max_frame_bytes ", max_frame,
                                " is more than the port carries (", info->max_rx_pktlen,
                                " bytes); lower max_frame_bytes or use a port that takes jumbo "
                                "frames"));
  }
  conf.rxmode.mtu = max_frame - 18;
  return Status::ok();
}

// A port's link went up or down (for net_vhost: a VM attached its rings or
// stopped them, as QEMU does on every stop and resume). Logged with the
// CLOCK_REALTIME instant, so a checkpoint's timeline shows when each VM's
// rings came back. Runs on DPDK's interrupt or vhost thread.
int log_link_change(uint16_t port, rte_eth_event_type, void*, void*) {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  rte_eth_link link{};
  rte_eth_link_get_nowait(port, &link);
  char name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(port, name);
  std::printf("port %s link %s at %lld.%09ld\n", name,
              link.link_status == RTE_ETH_LINK_UP ? "up" : "down",
              static_cast<long long>(now.tv_sec), now.tv_nsec);
  std::fflush(stdout);
  return 0;
}

// Free hugepage memory as the kernel reports it, for the sizing message.
uint64_t hugepages_free_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t free_pages = 0, page_kb = 0, value;
  std::string unit;
  while (in >> key >> value) {
    if (key == "HugePages_Free:") free_pages = value;
    if (key == "Hugepagesize:") {
      page_kb = value;
      in >> unit;
    }
  }
  return free_pages * page_kb * 1024;
}

// Never 0 (what an image from before clock ids carries).
uint64_t new_clock_id() {
  std::random_device random;
  const uint64_t id = (uint64_t{random()} << 32) | random();
  return id != 0 ? id : 1;
}

}  // namespace

DelayNode::DelayNode(const config::NodeConfig& config, const NodeOptions& options)
    : config_(config), options_(options), clock_id_(new_clock_id()) {
  // The TSC clock follows CLOCK_REALTIME for the node's whole life.
  clock_thread_ = std::thread([this] {
    std::unique_lock lock(clock_mutex_);
    while (!clock_wake_.wait_for(lock, std::chrono::milliseconds(100),
                                 [this] { return clock_stop_; })) {
      clock_.discipline();
    }
  });
}

Result<std::unique_ptr<DelayNode>> DelayNode::create(const config::NodeConfig& config,
                                                     const NodeOptions& options) {
  std::unique_ptr<DelayNode> node(new DelayNode(config, options));
  // Pipes first: they validate every parameter before anything is allocated.
  AMBER_RETURN_IF_ERROR(node->create_directions());
  AMBER_RETURN_IF_ERROR(node->create_pool());
  AMBER_RETURN_IF_ERROR(node->open_ports());
  AMBER_RETURN_IF_ERROR(node->create_workers());
  return node;
}

Status DelayNode::create_directions() {
  std::map<std::string, uint16_t> ids;
  for (const config::LinkConfig& link : config_.links) {
    for (const std::string* name : {&link.port_a, &link.port_b}) {
      uint16_t id;
      if (rte_eth_dev_get_port_by_name(name->c_str(), &id) != 0) {
        return not_found(cat(link.where, ": link '", link.name, "': no DPDK port named '", *name,
                             "' (ports: ", port_names(), ")"));
      }
      ids[*name] = id;
    }
    link_starts_.push_back(std::make_unique<std::atomic<int64_t>>(INT64_MIN));
    for (auto [dir, pipe_config, rx, tx] :
         {std::tuple{"a_to_b", &link.a_to_b, ids[link.port_a], ids[link.port_b]},
          std::tuple{"b_to_a", &link.b_to_a, ids[link.port_b], ids[link.port_a]}}) {
      auto pipe = link::Pipe::create(*pipe_config);
      if (!pipe) {
        return pipe.status().with_context(cat(link.where, ": link '", link.name, "' ", dir, ": "));
      }
      directions_.push_back(
          std::make_unique<Direction>(link.name, dir, rx, tx, std::move(pipe).value()));
      directions_.back()->link_start = link_starts_.back().get();
    }
  }
  reserve_wires();
  return Status::ok();
}

void reset_link_starts(std::span<Direction* const> directions) {
  for (Direction* d : directions) {
    if (d->link_start != nullptr) d->link_start->store(INT64_MIN);
  }
  for (Direction* d : directions) {
    const link::PipeConfig& c = d->pipe.config();
    const link::ScheduleState& s = d->pipe.schedule_state();
    if (d->link_start == nullptr || !c.schedule || !s.started ||
        c.schedule->start != link::ScheduleStart::kFirstFrame) {
      continue;
    }
    const int64_t at = s.start_ns + d->shift_ns;
    if (at > d->link_start->load()) d->link_start->store(at);
  }
}

void DelayNode::reserve_wires() {
  for (auto& d : directions_) {
    d->pipe.reserve(wire_frames(d->pipe.config(), config_.sizing_unlimited_rate_bps));
  }
}

Status DelayNode::create_pool() {
  const uint32_t data_room =
      std::max<uint32_t>(RTE_MBUF_DEFAULT_BUF_SIZE, config_.max_frame_bytes + RTE_PKTMBUF_HEADROOM);
  options_.rings.lcores = rte_lcore_count();
  sizing_ = size_pool(config_, options_.rings,
                      static_cast<uint32_t>(sizeof(rte_mbuf) + kMbufPrivSize + data_room));
  const uint32_t cache =
      std::min<uint32_t>(options_.rings.cache_per_lcore, RTE_MEMPOOL_CACHE_MAX_SIZE);
  pool_ = rte_pktmbuf_pool_create("amber_frames", static_cast<unsigned>(sizing_.mbufs), cache,
                                  kMbufPrivSize, static_cast<uint16_t>(data_room),
                                  static_cast<int>(rte_socket_id()));
  if (pool_ == nullptr) {
    return resource_exhausted(cat("cannot allocate the frame pool: the links need ",
                                  sizing_.describe(),
                                  "; hugepage memory free: ", format_bytes(hugepages_free_bytes()),
                                  " (", rte_strerror(rte_errno),
                                  "). Reserve more hugepages, or lower the links' rate x delay, "
                                  "or raise sizing_frame_bytes if your frames are large"));
  }
  return Status::ok();
}

Status DelayNode::open_ports() {
  std::map<uint16_t, bool> seen;
  for (const auto& d : directions_) {
    for (uint16_t port : {d->rx_port, d->tx_port}) {
      if (seen[port]) continue;
      seen[port] = true;
      rte_eth_conf conf{};
      rte_eth_dev_info info{};
      const bool have_info = rte_eth_dev_info_get(port, &info) == 0;
      if (config_.max_frame_bytes > 1518) {
        if (auto s = jumbo_mtu(port, have_info ? &info : nullptr, config_.max_frame_bytes, conf);
            !s) {
          return s;
        }
      }
      if (have_info && (*info.dev_flags & RTE_ETH_DEV_INTR_LSC)) {
        conf.intr_conf.lsc = 1;
        rte_eth_dev_callback_register(port, RTE_ETH_EVENT_INTR_LSC, log_link_change, nullptr);
      }
      int rc = rte_eth_dev_configure(port, 1, 1, &conf);
      if (rc < 0)
        return internal_error(cat("port ", port, ": configure failed: ", rte_strerror(-rc)));
      uint16_t rxd = static_cast<uint16_t>(options_.rings.rx_descriptors);
      uint16_t txd = static_cast<uint16_t>(options_.rings.tx_descriptors);
      rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
      int socket = rte_eth_dev_socket_id(port);
      if (socket < 0) socket = static_cast<int>(rte_socket_id());
      rc = rte_eth_rx_queue_setup(port, 0, rxd, static_cast<unsigned>(socket), nullptr, pool_);
      if (rc < 0) return internal_error(cat("port ", port, ": rx queue: ", rte_strerror(-rc)));
      rc = rte_eth_tx_queue_setup(port, 0, txd, static_cast<unsigned>(socket), nullptr);
      if (rc < 0) return internal_error(cat("port ", port, ": tx queue: ", rte_strerror(-rc)));
      rc = rte_eth_dev_start(port);
      if (rc < 0) return internal_error(cat("port ", port, ": start failed: ", rte_strerror(-rc)));
      ports_.push_back(port);
      rte_eth_promiscuous_enable(port);  // not every PMD supports it; harmless
    }
  }
  ring_drops_.attach(ports_);
  return Status::ok();
}

Status DelayNode::create_workers() {
  // Workers run on the worker lcores; with none, the main lcore runs all.
  std::vector<unsigned> lcores;
  unsigned id;
  RTE_LCORE_FOREACH_WORKER(id) lcores.push_back(id);
  if (lcores.empty()) lcores.push_back(rte_get_main_lcore());
  std::vector<std::vector<Direction*>> assigned(lcores.size());
  for (size_t i = 0; i < directions_.size(); ++i) {
    assigned[i % lcores.size()].push_back(directions_[i].get());
  }
  WorkerOptions options;
  options.idle_sleep_ns = config_.idle_sleep_ns;
  options.realtime_priority = config_.worker_priority;
  options.nice = config_.worker_nice;
  options.wait_on_ports = config_.wait_on_ports;
  for (size_t i = 0; i < lcores.size(); ++i) {
    if (assigned[i].empty()) continue;
    std::string name = cat("amber_cmd_", lcores[i]);
    rte_ring* ring = rte_ring_lookup(name.c_str());
    if (ring == nullptr) {
      ring = rte_ring_create(name.c_str(), 64, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
    }
    if (ring == nullptr) return internal_error(cat("command ring: ", rte_strerror(rte_errno)));
    auto worker =
        std::make_unique<Worker>(lcores[i], std::move(assigned[i]), pool_, ring, clock_, options);
    // It waits on its receive ports only if every one of them has sockets:
    // a port it could not wait on would be looked at only after a wait.
    std::vector<int> fds;
    bool every_port = true;
    for (const Direction* d : worker->directions()) {
      std::vector<int> port_fds = ring_drops_.fds(d->rx_port);
      every_port &= !port_fds.empty();
      fds.insert(fds.end(), port_fds.begin(), port_fds.end());
    }
    if (every_port) worker->wait_on(fds);
    workers_.push_back(std::move(worker));
  }
  return Status::ok();
}

void DelayNode::stop() {
  stop_.store(true, std::memory_order_relaxed);
  for (const auto& w : workers_) w->wake();
}

size_t DelayNode::workers_waiting_on_ports() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w->waits_on_ports();
  return n;
}

void DelayNode::start() {
  stop_.store(false);
  running_.store(true, std::memory_order_release);
  for (auto& w : workers_) {
    if (w->lcore() == rte_get_main_lcore()) continue;
    rte_eal_remote_launch(
        [](void* arg) -> int {
          auto* self = static_cast<std::pair<Worker*, DelayNode*>*>(arg);
          int rc = self->first->run(self->second->stop_);
          delete self;
          return rc;
        },
        new std::pair<Worker*, DelayNode*>(w.get(), this), w->lcore());
  }
}

void DelayNode::wait() {
  rte_eal_mp_wait_lcore();
  running_.store(false, std::memory_order_release);
}

void DelayNode::run() {
  start();
  Worker* on_main = nullptr;
  for (auto& w : workers_) {
    if (w->lcore() == rte_get_main_lcore()) on_main = w.get();
  }
  if (on_main) {
    on_main->run(stop_);
  } else {
    while (!stop_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  wait();
}

Status DelayNode::send(Worker& worker, const std::shared_ptr<Command>& command) {
  if (!running()) {
    // No loop is polling: nobody else touches the pipes, so apply directly.
    // (Only before run() or after it returned.)
    return failed_precondition("the delay node is not running");
  }
  auto* holder = new std::shared_ptr<Command>(command);
  if (rte_ring_enqueue(worker.commands(), holder) != 0) {
    delete holder;
    return unavailable(cat("worker on lcore ", worker.lcore(), " has a full command queue"));
  }
  worker.wake();
  const auto deadline = std::chrono::steady_clock::now() + options_.command_timeout;
  for (;;) {
    const CommandState state = command->state.load(std::memory_order_acquire);
    if (state == CommandState::kDone) return command->status;
    if (state == CommandState::kQueued && std::chrono::steady_clock::now() > deadline) {
      CommandState queued = CommandState::kQueued;
      if (command->state.compare_exchange_strong(queued, CommandState::kWithdrawn,
                                                 std::memory_order_acq_rel)) {
        const auto timeout =
            std::chrono::duration_cast<std::chrono::nanoseconds>(options_.command_timeout);
        return deadline_exceeded(cat("worker on lcore ", worker.lcore(), " did not answer within ",
                                     format_duration_ns(timeout.count()),
                                     " (the command was withdrawn, not applied)"));
      }
      continue;  // taken just now: it is being applied
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void fill_stats(const Direction& d, int64_t virtual_now_ns, DirectionStats& s) {
  s.config = d.pipe.config();
  s.pipe = d.pipe.counters();
  s.node = d.counters;
  s.held_frames = d.pipe.held_frames();
  s.held_bytes = d.pipe.held_bytes();
  s.queued_frames = d.pipe.queued_frames();
  s.queued_bytes = d.pipe.queued_bytes();
  s.tx_pending = d.pending_count;
  s.shift_ns = d.shift_ns;
  s.virtual_now_ns = virtual_now_ns;
  s.schedule = d.pipe.schedule_state();
  s.traced = d.pipe.traced();
  s.rate_now_bps =
      s.traced ? d.pipe.trace_rate_bps(virtual_now_ns, 100'000'000) : d.pipe.current().rate_bps;
  s.delay_now_ns = d.pipe.current().delay_ns;
  const auto& events = d.pipe.pending_events();
  s.pending_events = static_cast<uint32_t>(events.size());
  std::copy_n(events.begin(), std::min(events.size(), s.next_events.size()), s.next_events.begin());
}

const char* schedule_state_name(const DirectionStats& s) {
  if (!s.schedule.started) {
    return s.config.schedule ? link::schedule_waiting_for(s.config.schedule->start) : "waiting";
  }
  return s.schedule.ended ? "ended" : "running";
}

int64_t schedule_segment_elapsed_ns(const DirectionStats& s) {
  const int64_t elapsed = s.virtual_now_ns - s.schedule.segment_start_ns;
  return s.schedule.started && !s.schedule.ended && elapsed > 0 ? elapsed : 0;
}

DirectionStats snapshot(const Direction& d) {
  DirectionStats s;
  s.link = d.link_name;
  s.direction = d.direction;
  fill_stats(d, 0, s);
  return s;
}

Result<std::vector<DirectionStats>> DelayNode::stats() {
  std::vector<DirectionStats> all;
  if (!running()) {
    // No worker runs: the owner thread may read the pipes itself.
    for (auto& d : directions_) all.push_back(snapshot(*d));
    return all;
  }
  for (auto& w : workers_) {
    auto c = std::make_shared<Command>();
    c->type = CommandType::kStats;
    c->stats.resize(w->directions().size());
    Status s = send(*w, c);
    if (!s) return s;
    for (size_t i = 0; i < c->stats.size(); ++i) {
      c->stats[i].link = w->directions()[i]->link_name;
      c->stats[i].direction = w->directions()[i]->direction;
      all.push_back(std::move(c->stats[i]));
    }
  }
  return all;
}

Result<std::pair<Worker*, Direction*>> DelayNode::find(const std::string& link,
                                                       const std::string& direction) {
  for (auto& w : workers_) {
    for (Direction* d : w->directions()) {
      if (d->link_name == link && d->direction == direction) return std::pair{w.get(), d};
    }
  }
  return not_found(cat("no link '", link, "' with a direction '", direction,
                       "' (directions are a_to_b and b_to_a)"));
}

Status DelayNode::watch(const std::string& link, FrameWatch* watch) {
  bool found = false;
  for (auto& w : workers_) {
    for (Direction* d : w->directions()) {
      if (!link.empty() && d->link_name != link) continue;
      found = true;
      auto c = std::make_shared<Command>();
      c->type = CommandType::kAddWatch;
      c->target = d;
      c->watch = watch;
      Status s = send(*w, c);
      if (s && c->result_ns == 0) {
        s = resource_exhausted(cat(d->link_name, "/", d->direction, ": already ",
                                   kMaxWatchesPerDirection, " frame watches"));
      }
      if (!s) {
        (void)unwatch(watch);  // all or none
        return s;
      }
    }
  }
  if (!found) return not_found(cat("no link '", link, "' on this node"));
  return Status::ok();
}

Status DelayNode::unwatch(FrameWatch* watch) {
  Status first;
  for (auto& w : workers_) {
    auto c = std::make_shared<Command>();
    c->type = CommandType::kRemoveWatch;
    c->watch = watch;
    Status s = send(*w, c);
    if (!s && first) first = s;
  }
  return first;
}

Status DelayNode::set_pipe(const std::string& link, const std::string& direction,
                           const link::PipeConfig& pipe) {
  AMBER_RETURN_IF_ERROR(pipe.validate());
  auto target = find(link, direction);
  if (!target) return target.status();
  auto c = std::make_shared<Command>();
  c->type = CommandType::kSetPipe;
  c->target = target->second;
  c->pipe = pipe;
  return send(*target->first, c);
}

Result<int64_t> DelayNode::shift(const std::string& link, const std::string& direction,
                                 int64_t by_ns, int64_t* moved_ns) {
  constexpr int64_t kMaxShiftNs = 10'000'000'000;
  if (by_ns > kMaxShiftNs || by_ns < -kMaxShiftNs) {
    return invalid_argument(
        cat("shift of ", link, "/", direction, " by ", by_ns, " ns: at most 10 s either way"));
  }
  auto c = send_to(link, direction, CommandType::kShift, by_ns);
  if (!c) return c.status();
  if (moved_ns != nullptr) *moved_ns = (*c)->at_ns;
  return (*c)->result_ns;
}

Result<link::PipeConfig> DelayNode::pipe_config(const std::string& link,
                                                const std::string& direction) {
  auto target = find(link, direction);
  if (!target) return target.status();
  auto all = stats();
  if (!all) return all.status();
  for (const DirectionStats& s : *all) {
    if (s.link == link && s.direction == direction) return s.config;
  }
  return not_found("direction vanished");
}

Status DelayNode::send_all(CommandType type, int64_t at_ns) {
  for (auto& w : workers_) {
    auto c = std::make_shared<Command>();
    c->type = type;
    c->at_ns = at_ns;
    AMBER_RETURN_IF_ERROR(send(*w, c).with_context(cat("lcore ", w->lcore(), ": ")));
  }
  return Status::ok();
}

Status DelayNode::freeze_at(int64_t at_ns) {
  if (at_ns < now_ns()) {
    return failed_precondition(
        cat("freeze instant ", at_ns, " ns is ", now_ns() - at_ns, " ns in the past"));
  }
  Status s = send_all(CommandType::kFreeze, at_ns);
  if (!s) (void)send_all(CommandType::kCancelFreeze, 0);  // all or none
  return s;
}

Status DelayNode::thaw_at(int64_t at_ns) {
  if (at_ns < now_ns()) {
    return failed_precondition(
        cat("thaw instant ", at_ns, " ns is ", now_ns() - at_ns, " ns in the past"));
  }
  return send_all(CommandType::kThaw, at_ns);
}

Status DelayNode::cancel_freeze() {
  return send_all(CommandType::kCancelFreeze, 0);
}

Status DelayNode::run_on(const std::string& link, const std::string& direction, int64_t until_ns) {
  return send_to(link, direction, CommandType::kRunOn, until_ns)
      .status()
      .with_context(cat("run-on of ", link, "/", direction, ": "));
}

Result<int64_t> DelayNode::end_run_on(const std::string& link, const std::string& direction,
                                      int64_t stopped_ns) {
  auto c = send_to(link, direction, CommandType::kEndRunOn, stopped_ns);
  if (!c) return c.status();
  if ((*c)->result_ns < 0) {
    return failed_precondition(cat(link, "/", direction,
                                   " is not running on (not asked by the freeze, or ended by "
                                   "the thaw or a save)"));
  }
  return (*c)->result_ns;
}

Result<std::shared_ptr<Command>> DelayNode::send_to(const std::string& link,
                                                    const std::string& direction, CommandType type,
                                                    int64_t at_ns) {
  auto target = find(link, direction);
  if (!target) return target.status();
  auto c = std::make_shared<Command>();
  c->type = type;
  c->target = target->second;
  c->at_ns = at_ns;
  AMBER_RETURN_IF_ERROR(send(*target->first, c));
  return c;
}

Result<std::vector<int64_t>> DelayNode::freeze_latencies() {
  std::vector<int64_t> out;
  for (auto& w : workers_) {
    auto c = std::make_shared<Command>();
    c->type = CommandType::kFreezeReport;
    AMBER_RETURN_IF_ERROR(send(*w, c));
    if (c->at_ns == link::VirtualClock::kNone) return failed_precondition("no freeze is set");
    if (c->result_ns < 0) return unavailable("the freeze instant has not been reached yet");
    out.push_back(c->result_ns - c->at_ns);
  }
  return out;
}

Result<bool> DelayNode::frozen() {
  if (!running()) {
    return workers_.front()->virtual_clock().frozen(now_ns());
  }
  auto c = std::make_shared<Command>();
  c->type = CommandType::kFreezeReport;
  AMBER_RETURN_IF_ERROR(send(*workers_.front(), c));
  return c->at_ns != link::VirtualClock::kNone && now_ns() >= c->at_ns;
}

Status DelayNode::with_frozen_pipes(const std::function<Status(FrozenView&)>& body) {
  FrozenView view;
  for (auto& d : directions_) view.directions.push_back(d.get());
  view.pool = pool_;
  auto fill_clock = [&] {
    link::VirtualClock& clock = workers_.front()->virtual_clock();
    const int64_t real = now_ns();
    view.virtual_now_ns = clock.now(real);
    view.freeze_real_ns = clock.frozen(real) ? clock.freeze_at_ns() : real;
  };
  if (!running()) {  // nobody polls: the caller owns the pipes
    fill_clock();
    Status status = body(view);
    reserve_wires();
    return status;
  }
  auto unpark = std::make_shared<std::atomic<bool>>(false);
  Status status;
  for (auto& w : workers_) {
    auto c = std::make_shared<Command>();
    c->type = CommandType::kPark;
    c->unpark = unpark;
    status = send(*w, c);
    if (!status) break;
  }
  if (status) {
    for (auto& w : workers_) {
      if (!w->virtual_clock().frozen(now_ns())) {
        status = failed_precondition("the delay node is not frozen (freeze it first)");
        break;
      }
    }
  }
  if (status) {
    fill_clock();
    status = body(view);
    // A restore replaces pipes: give them their room again, while the
    // workers are parked (it allocates).
    reserve_wires();
  }
  // Workers that parked see this, even after this returned (the flag is
  // shared with them); a park that timed out was withdrawn, so no worker
  // parks late.
  unpark->store(true, std::memory_order_release);
  return status;
}

Result<int64_t> DelayNode::frozen_virtual_ns() {
  Result<int64_t> out = failed_precondition("the delay node is not frozen");
  Status s = with_frozen_pipes([&](FrozenView& view) {
    out = view.virtual_now_ns;
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

void DelayNode::restore_clocks(int64_t virtual_ns, uint64_t clock_id) {
  const int64_t real = now_ns();
  for (auto& w : workers_) w->virtual_clock().restore_frozen(virtual_ns, real);
  clock_id_.store(clock_id != 0 ? clock_id : new_clock_id(), std::memory_order_release);
}

std::vector<PortStats> DelayNode::port_stats() const {
  std::vector<PortStats> out;
  const std::map<uint16_t, uint64_t> ring_drops = ring_drops_.dropped();
  for (uint16_t port : ports_) {
    rte_eth_stats st{};
    if (rte_eth_stats_get(port, &st) != 0) continue;
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(port, name);
    out.push_back(PortStats{name, st.ipackets, st.opackets,
                            st.imissed + (ring_drops.contains(port) ? ring_drops.at(port) : 0),
                            st.ierrors, st.rx_nombuf, st.oerrors});
  }
  return out;
}

uint64_t DelayNode::idle_sleeps() const {
  uint64_t n = 0;
  for (const auto& w : workers_) n += w->sleeps();
  return n;
}

void release_frames(Direction& d) {
  // The pipe hands its frames over one by one; they go back 64 at a time.
  struct Batch {
    rte_mbuf* mbufs[64];
    unsigned count = 0;
    void add(rte_mbuf* m) {
      mbufs[count++] = m;
      if (count == 64) flush();
    }
    void flush() {
      rte_pktmbuf_free_bulk(mbufs, count);
      count = 0;
    }
  } batch;
  d.pipe.clear([&batch](link::Frame& f) { batch.add(mbuf_of(&f)); });
  batch.flush();
  rte_pktmbuf_free_bulk(d.pending, d.pending_count);
  d.pending_count = 0;
  rte_pktmbuf_free_bulk(d.staged, d.staged_count);
  d.staged_count = 0;
}

void DelayNode::release_frames() {
  for (auto& d : directions_) dataplane::release_frames(*d);
}

DelayNode::~DelayNode() {
  {
    std::lock_guard lock(clock_mutex_);
    clock_stop_ = true;
  }
  clock_wake_.notify_all();
  clock_thread_.join();
  stop();
  if (running()) rte_eal_mp_wait_lcore();
  ring_drops_.detach();  // stopping closes the sockets
  for (uint16_t port : ports_) {
    rte_eth_dev_callback_unregister(port, RTE_ETH_EVENT_INTR_LSC, log_link_change, nullptr);
    rte_eth_dev_stop(port);
  }
  release_frames();
  for (auto& w : workers_) {
    void* item;
    while (rte_ring_dequeue(w->commands(), &item) == 0) {
      delete static_cast<std::shared_ptr<Command>*>(item);
    }
    rte_ring_free(w->commands());
  }
  // Ports keep mbufs in their rings until closed.
  for (uint16_t port : ports_) rte_eth_dev_close(port);
  if (pool_) rte_mempool_free(pool_);
}

}  // namespace amber::dataplane
