// Forwarding rate and delay accuracy of the delay node on ring ports (no
// kernel in the path), side by side with a testpmd-style io forwarder on
// the very same ports, in one process:
//
//   lcore 0: traffic source and sink. A fixed population of mbufs circulates:
//            whatever leaves port B goes back into port A. The source keeps
//            port A's ring filled to a backlog (8192 frames) and parks the
//            rest of the population in a reservoir, so the forwarder always
//            finds more than it takes, and a forwarder that holds frames (a
//            delay line holds rate x delay of them) is never starved by the
//            population. (Little's law: a closed loop of N frames through a
//            1 ms delay cannot exceed N / 1 ms.)
//   lcore 1: the forwarder under test: amber's worker (one pipe per
//            direction, 1 ms delay, unlimited rate), or an io forwarder doing
//            exactly what testpmd's "io" mode does (rx burst -> tx burst).
//
// io forward and amber alternate, --runs times, each on new ports; the
// medians and the spread over the runs in which the forwarder and the
// source had their CPU are printed at the end. --bounds adds reference
// loops that show what a delay node costs at the least (see README.md,
// "Delay node"): io forward that reads each frame's length, io forward that
// holds every burst 1 ms in a dense FIFO of pointers, both, and both with
// the lengths read a pass after the burst came in (what amber does).
//
// The accuracy run paces 1518-byte frames at 10 Gbit/s line rate
// (812,744 frames/s) through a 1 ms delay and reports the distribution of
// |actual - configured| one-way delay from TSC stamps written at injection
// and read at the sink; beside it the same path through io forward (what
// the ring hops and the sink's polling add), and the node's own count of
// how late its tx bursts left; then both lcores spin on the TSC to measure
// how often the machine itself takes them away (bench/machine_gaps.h).
//
//   forward_bench [--seconds S] [--size B] [--runs R] [--population N]
//                 [--backlog N] [--bounds] [--only NAME]
//                 [--no-accuracy | --accuracy-seconds S]      (root: hugepages)
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_node.h"
#include "bench/machine_gaps.h"
#include "dataplane/delay_node.h"
#include "dataplane/mbuf_frame.h"

namespace {

using amber::bench::thread_cpu_ns;

using amber::dataplane::DelayNode;

constexpr unsigned kRingSize = 65536;
// 1518-byte frames at 10 Gbit/s with preamble and inter-frame gap.
constexpr double kLinePps = 10e9 / ((1518 + 20) * 8.0);

struct Port {
  std::string name;
  rte_ring* in;
  rte_ring* out;
  uint16_t id;
};

Port make_port(const std::string& name) {
  Port p;
  p.name = "net_ring_" + name;
  p.in = rte_ring_create((name + "_in").c_str(), kRingSize, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.out = rte_ring_create((name + "_out").c_str(), kRingSize, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.id = static_cast<uint16_t>(rte_eth_from_rings(name.c_str(), &p.in, 1, &p.out, 1, 0));
  return p;
}

std::atomic<bool> g_stop{false};

struct Ports {
  uint16_t rx, tx;
};

// testpmd's io forwarding, reduced to its loop: rx burst, tx burst, free
// what the tx ring did not take.
int io_forward(void* arg) {
  auto* ports = static_cast<Ports*>(arg);
  rte_mbuf* burst[32];
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint16_t n = rte_eth_rx_burst(ports->rx, 0, burst, 32);
    if (n == 0) continue;
    uint16_t k = rte_eth_tx_burst(ports->tx, 0, burst, n);
    if (k < n) rte_pktmbuf_free_bulk(burst + k, n - k);
  }
  return 0;
}

// Reference loops for the bounds: io forward plus the least a delay node
// must do. kReadLength: read each frame's length (and the fields a node
// checks: segments, pool), as any emulator that counts bytes or shapes a
// rate must. kHold: hold each burst 1 ms in a dense FIFO of pointers (one
// TSC departure per burst) before sending it, touching no mbuf. kStaged
// (with kReadLength): read the lengths one pass after the burst came in,
// its headers prefetched meanwhile, as amber's worker does.
enum Touch : unsigned { kReadLength = 1, kHold = 2, kStaged = 4 };

template <unsigned kTouch>
int io_reference(void* arg) {
  auto* ports = static_cast<Ports*>(arg);
  const uint64_t hold = rte_get_tsc_hz() / 1000;
  // Enough for 2^19 frames held in bursts of any size.
  constexpr size_t kSlots = size_t{1} << 20, kBursts = size_t{1} << 19;
  std::vector<rte_mbuf*> slots(kTouch & kHold ? kSlots : 0);
  std::vector<std::pair<uint64_t, uint32_t>> bursts(kTouch & kHold ? kBursts : 0);  // due, count
  size_t slot_head = 0, slot_tail = 0, burst_head = 0, burst_tail = 0;
  uint64_t bytes = 0;
  rte_mbuf* buffers[2][32];
  rte_mbuf** burst = buffers[0];
  rte_mbuf** staged = buffers[1];
  uint16_t staged_n = 0;
  auto read_lengths = [&bytes](rte_mbuf* const* frames, uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) {
      const rte_mbuf* m = frames[i];
      bytes += m->pkt_len + (m->nb_segs != 1) + (m->pool == nullptr);
    }
  };
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint16_t n = rte_eth_rx_burst(ports->rx, 0, burst, 32);
    if constexpr (kTouch & kReadLength) {
      for (uint16_t i = 0; i < n; ++i) rte_prefetch0(burst[i]);
      if constexpr (kTouch & kStaged) {
        // The previous burst goes on; this one waits a pass.
        read_lengths(staged, staged_n);
        std::swap(burst, staged);
        std::swap(n, staged_n);
      } else {
        read_lengths(burst, n);
      }
    }
    if constexpr (!(kTouch & kHold)) {
      if (n == 0) continue;
      uint16_t k = rte_eth_tx_burst(ports->tx, 0, burst, n);
      if (k < n) rte_pktmbuf_free_bulk(burst + k, n - k);
    } else {
      const uint64_t now = rte_rdtsc();
      if (n > 0 && slot_tail - slot_head + n <= kSlots && burst_tail - burst_head < kBursts) {
        for (uint16_t i = 0; i < n; ++i) slots[(slot_tail + i) & (kSlots - 1)] = burst[i];
        slot_tail += n;
        bursts[burst_tail++ & (kBursts - 1)] = {now + hold, n};
      } else if (n > 0) {
        rte_pktmbuf_free_bulk(burst, n);
      }
      if (burst_head == burst_tail || bursts[burst_head & (kBursts - 1)].first > now) continue;
      const uint32_t due = bursts[burst_head++ & (kBursts - 1)].second;
      rte_mbuf* out[32];
      for (uint32_t i = 0; i < due; ++i) out[i] = slots[(slot_head + i) & (kSlots - 1)];
      slot_head += due;
      uint16_t k = rte_eth_tx_burst(ports->tx, 0, out, static_cast<uint16_t>(due));
      if (k < due) rte_pktmbuf_free_bulk(out + k, due - k);
    }
  }
  // Keep the reads.
  asm volatile("" : : "r"(bytes));
  // Frames still held go back to the pool.
  for (; slot_head != slot_tail; ++slot_head) rte_pktmbuf_free(slots[slot_head & (kSlots - 1)]);
  rte_pktmbuf_free_bulk(staged, staged_n);
  return 0;
}

void setup_port(uint16_t id, rte_mempool* pool) {
  rte_eth_conf conf{};
  rte_eth_dev_configure(id, 1, 1, &conf);
  rte_eth_rx_queue_setup(id, 0, 1024, 0, nullptr, pool);
  rte_eth_tx_queue_setup(id, 0, 1024, 0, nullptr);
  rte_eth_dev_start(id);
}

struct Options {
  double seconds = 1;
  uint16_t size = 60;  // a 64-byte frame without its CRC
  unsigned runs = 9;
  unsigned population = (1u << 19) - 1;
  unsigned backlog = 8192;
  bool bounds = false;
  bool accuracy = true;
  double accuracy_seconds = 3;
  std::string only;  // run only the forwarders whose name contains this (profiling)
};

struct Result {
  double mpps = 0;
  // Mean fill of port A's ring over the backlog: ~1 = the forwarder is the bottleneck.
  double backlog_fill = 0;
  double cpu_share = 0;         // of the forwarder's lcore thread, over the counted interval
  double source_cpu_share = 0;  // of the source and sink (this thread)
};

// The forwarding lcore's thread id (EAL lcore threads live as long as the
// process), for its CPU time in /proc.
std::atomic<long> g_forwarder_tid{0};

// Closed loop: whatever comes out of B goes back into A, which is kept
// filled to the backlog from a reservoir of the population.
Result circulate(Port& a, Port& b, rte_mempool* pool, const Options& o) {
  std::vector<rte_mbuf*> reservoir(o.population);
  if (rte_pktmbuf_alloc_bulk(pool, reservoir.data(), o.population) != 0) {
    std::fprintf(stderr, "forward_bench: cannot allocate %u mbufs\n", o.population);
    return {};
  }
  for (rte_mbuf* m : reservoir) {
    rte_pktmbuf_append(m, o.size);
    std::memset(rte_pktmbuf_mtod(m, void*), 0x5a, 14);
  }
  size_t held = reservoir.size();  // reservoir[0, held) are ours
  const uint64_t hz = rte_get_tsc_hz();
  // Warm up for 0.5 s, then count.
  uint64_t start = rte_rdtsc(), warm = start + hz / 2,
           end = warm + static_cast<uint64_t>(o.seconds * static_cast<double>(hz));
  uint64_t counted = 0, fill_sum = 0, fill_samples = 0;
  int64_t cpu_at_warm = -1, source_cpu_at_warm = 0;
  rte_mbuf* burst[64];
  for (uint64_t now = start; now < end; now = rte_rdtsc()) {
    unsigned n = rte_ring_dequeue_burst(b.out, reinterpret_cast<void**>(burst), 64, nullptr);
    if (now >= warm && cpu_at_warm < 0) {
      cpu_at_warm = thread_cpu_ns(g_forwarder_tid);
      source_cpu_at_warm = thread_cpu_ns(rte_sys_gettid());
    }
    if (now >= warm) counted += n;
    std::copy(burst, burst + n, reservoir.begin() + static_cast<ptrdiff_t>(held));
    held += n;
    const unsigned queued = rte_ring_count(a.in);
    if (now >= warm) {
      fill_sum += queued;
      ++fill_samples;
    }
    if (queued >= o.backlog || held == 0) continue;
    const unsigned give =
        std::min<unsigned>({64u, o.backlog - queued, static_cast<unsigned>(held)});
    held -= rte_ring_enqueue_burst(a.in, reinterpret_cast<void**>(&reservoir[held - give]), give,
                                   nullptr);
  }
  const double cpu_s = static_cast<double>(thread_cpu_ns(g_forwarder_tid) - cpu_at_warm) / 1e9;
  rte_pktmbuf_free_bulk(reservoir.data(), static_cast<unsigned>(held));
  Result r;
  r.mpps = static_cast<double>(counted) / o.seconds / 1e6;
  r.cpu_share = cpu_s / o.seconds;
  r.source_cpu_share =
      static_cast<double>(thread_cpu_ns(rte_sys_gettid()) - source_cpu_at_warm) / 1e9 / o.seconds;
  r.backlog_fill =
      fill_samples ? static_cast<double>(fill_sum) / static_cast<double>(fill_samples) / o.backlog
                   : 0;
  return r;
}

void drain(Port& p) {
  void* m = nullptr;
  while (rte_ring_dequeue(p.in, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  while (rte_ring_dequeue(p.out, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
}

// The node is told the rate its unlimited links carry here (64-byte frames
// at up to ~280 Mpps, 150 Gbit/s), as an operator would: it sizes its pool
// and the dense wire of each pipe from it (dataplane/sizing.h).
std::unique_ptr<DelayNode> start_node(Port& a, Port& b, const std::string& pipe) {
  return amber::bench::start_bench_node(a.name, b.name, pipe, "off",
                                        "sizing_unlimited_rate: \"200Gbit\"");
}

// One forwarder on lcore 1 for one measurement, on ports of its own.
Result measure_loop(lcore_function_t* loop, rte_mempool* pool, const Options& o, unsigned run) {
  Port a = make_port("fa" + std::to_string(run)), b = make_port("fb" + std::to_string(run));
  setup_port(a.id, pool);
  setup_port(b.id, pool);
  Ports fwd{a.id, b.id};
  g_stop = false;
  Result r;
  if (int rc = rte_eal_remote_launch(loop, &fwd, 1); rc != 0) {
    std::fprintf(stderr, "forward_bench: cannot launch the forwarder on lcore 1 (%d)\n", rc);
  } else {
    r = circulate(a, b, pool, o);
  }
  g_stop = true;
  rte_eal_mp_wait_lcore();
  drain(a);
  drain(b);
  for (uint16_t id : {a.id, b.id}) {
    rte_eth_dev_stop(id);
    rte_eth_dev_close(id);
  }
  return r;
}

Result measure_amber(const std::string& pipe, rte_mempool* pool, const Options& o, unsigned run) {
  Port a = make_port("fa" + std::to_string(run)), b = make_port("fb" + std::to_string(run));
  Result r;
  if (auto node = start_node(a, b, pipe)) {
    r = circulate(a, b, pool, o);
    if (auto stats = node->stats(); stats.is_ok() && !stats->empty()) {
      const auto& s = stats->front();
      std::fprintf(
          stderr, "  amber a_to_b: %.1f frames per rx burst, %llu tx retries\n",
          s.node.rx_bursts ? static_cast<double>(s.pipe.frames_in) / s.node.rx_bursts : 0.0,
          static_cast<unsigned long long>(s.node.tx_retries));
    }
    node->stop();
    node->wait();
  }
  drain(a);
  drain(b);
  return r;
}

// Nanoseconds since an arbitrary start, CLOCK_MONOTONIC: the pace of the
// system clock, which the node's TSC clock follows (dataplane/tsc_clock.h).
int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Paces 1518-byte frames at 10 Gbit/s line rate into A, TSC-stamped in
// their bytes, and returns the one-way time of each (ns) as the sink on the
// same lcore reads it from B. Ticks become nanoseconds at the TSC rate
// measured against the system clock over the run: DPDK's rate is rounded
// (2000 MHz for a 1996.25 MHz TSC here, 1876 ppm: 1.9 us on a 1 ms delay,
// which the node, disciplined to the system clock, does not make).
std::vector<int64_t> one_way_ns(Port& a, Port& b, rte_mempool* pool, double seconds) {
  const uint64_t hz = rte_get_tsc_hz();
  const uint16_t size = 1518 - 4;  // without the CRC the wire adds
  const uint64_t gap = static_cast<uint64_t>(static_cast<double>(hz) / kLinePps);
  std::vector<uint64_t> ticks;
  ticks.reserve(static_cast<size_t>(kLinePps * seconds) + 1024);
  const uint64_t tsc0 = rte_rdtsc();
  const int64_t ns0 = monotonic_ns();
  uint64_t next = rte_rdtsc(), warm = next + hz / 2,
           end = warm + static_cast<uint64_t>(seconds * static_cast<double>(hz));
  void* burst[64];
  while (true) {
    uint64_t now = rte_rdtsc();
    if (now >= end + hz / 100) break;
    if (now >= next && now < end) {
      rte_mbuf* m = rte_pktmbuf_alloc(pool);
      if (m) {
        rte_pktmbuf_append(m, size);
        std::memcpy(rte_pktmbuf_mtod_offset(m, char*, 14), &now, sizeof now);
        if (rte_ring_enqueue(a.in, m) != 0) rte_pktmbuf_free(m);
      }
      next += gap;
    }
    unsigned n = rte_ring_dequeue_burst(b.out, burst, 64, nullptr);
    if (n == 0) continue;
    uint64_t t = rte_rdtsc();
    for (unsigned i = 0; i < n; ++i) {
      auto* m = static_cast<rte_mbuf*>(burst[i]);
      uint64_t stamp;
      std::memcpy(&stamp, rte_pktmbuf_mtod_offset(m, char*, 14), sizeof stamp);
      if (stamp >= warm) ticks.push_back(t - stamp);
    }
    rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(burst), n);
  }
  const double ns_per_tick =
      static_cast<double>(monotonic_ns() - ns0) / static_cast<double>(rte_rdtsc() - tsc0);
  std::vector<int64_t> times;
  times.reserve(ticks.size());
  for (uint64_t t : ticks)
    times.push_back(static_cast<int64_t>(static_cast<double>(t) * ns_per_tick));
  return times;
}

constexpr int64_t kTargetP99Ns = 2000;

// The share of frames above the p99 target beside the quantiles: p99 under
// 2 us means under 1 % of frames beyond 2 us.
void print_distribution(const char* what, std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) {
    std::printf("| %s | no frames measured | | | | | |\n", what);
    return;
  }
  auto q = [&](double f) {
    return static_cast<long long>(v[static_cast<size_t>(f * static_cast<double>(v.size() - 1))]);
  };
  const auto beyond =
      static_cast<size_t>(v.end() - std::upper_bound(v.begin(), v.end(), kTargetP99Ns));
  std::printf("| %s | %zu | %lld ns | %lld ns | %lld ns | %lld ns | %.2f %% |\n", what, v.size(),
              q(0.5), q(0.99), q(0.999), static_cast<long long>(v.back()),
              100.0 * static_cast<double>(beyond) / static_cast<double>(v.size()));
}

// The machine under the measurement: both lcores spin on the TSC at once
// (bench/machine_gaps.h). A frame meets the forwarder's lcore once through
// io forward, twice through amber (its arrival is stamped when the lcore
// polls, and it departs when the lcore polls 1 ms later), and the sink's
// lcore once; whatever the forwarder does, a gap it falls into makes it late.
void machine_gaps(double seconds) {
  amber::bench::MachineGaps forwarder, sink;
  forwarder.seconds = seconds;
  if (rte_eal_remote_launch(amber::bench::spin_for_gaps_on_lcore, &forwarder, 1) != 0) return;
  sink = amber::bench::spin_for_gaps(seconds);
  rte_eal_mp_wait_lcore();
  auto describe = [](const char* who, const amber::bench::MachineGaps& g) {
    std::printf(
        "  %s lcore: %.0f gaps > 10 us a second (max %.0f us); %.2f %% of instants lie more than 2 "
        "us "
        "before a gap's end\n",
        who, static_cast<double>(g.over_10us) / g.seconds, g.max_gap_ns / 1000,
        100 * g.late_2us_share);
  };
  std::printf("\nthe machine, both lcores spinning on the TSC for %.0f s:\n", seconds);
  describe("the forwarder's", forwarder);
  describe("the source and sink's", sink);
  const double f = 100 * forwarder.late_2us_share, k = 100 * sink.late_2us_share;
  std::printf(
      "  frames more than 2 us late by the machine alone, if its gaps are independent: through io "
      "forward "
      "~%.2f %% (forwarder once, sink once), through amber ~%.2f %% (forwarder at arrival and at "
      "departure, sink once); a p99 under 2 us needs under 1 %%\n",
      f + k, 2 * f + k);
}

// The delay error at a 10 Gbit/s-equivalent load, and beside it the same
// path without a delay node: io forward on the same lcore, the same source
// and sink. What the sink measures includes two ring hops between the
// lcores and the sink's polling; the io-forward row shows how much.
void accuracy(rte_mempool* pool, double seconds) {
  std::printf(
      "| 1518 B at 10 Gbit/s line rate (%.0f frames/s) | frames | p50 | p99 | p99.9 | max | > 2 us "
      "|\n",
      kLinePps);
  std::printf("|---|---|---|---|---|---|---|\n");
  std::vector<int64_t> path;
  {
    Port a = make_port("ia"), b = make_port("ib");
    setup_port(a.id, pool);
    setup_port(b.id, pool);
    Ports fwd{a.id, b.id};
    g_stop = false;
    if (rte_eal_remote_launch(io_forward, &fwd, 1) == 0) {
      path = one_way_ns(a, b, pool, seconds);
      g_stop = true;
      rte_eal_mp_wait_lcore();
      print_distribution("one-way time through io forward (no delay): the path alone", path);
    }
    drain(a);
    drain(b);
  }
  Port a = make_port("aa"), b = make_port("ab");
  auto node = start_node(a, b, "delay: \"1ms\"");
  if (!node) return;
  std::vector<int64_t> times = one_way_ns(a, b, pool, seconds);
  auto stats = node->stats();
  node->stop();
  node->wait();
  node.reset();
  drain(a);
  drain(b);
  constexpr int64_t kDelayNs = 1'000'000;
  std::vector<int64_t> error;
  for (int64_t t : times) error.push_back(std::abs(t - kDelayNs));
  print_distribution("amber, 1 ms delay: |one-way time - 1 ms|", error);
  auto median_of = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  };
  std::printf(
      "\namber's median beyond the path: %lld ns (median one-way time - 1 ms - median through io "
      "forward)\n",
      static_cast<long long>(median_of(times) - kDelayNs - median_of(path)));
  // The node's own view of its departures: per tx burst, how long after
  // the virtual departure the pass that sent it read the clock.
  if (stats.is_ok() && !stats->empty()) {
    const auto& late = stats->front().node.burst_lateness;
    uint64_t total = 0;
    for (uint64_t n : late) total += n;
    const auto& bounds = amber::dataplane::kLatenessBoundsNs;
    auto bound = [&](double q) {
      uint64_t seen = 0;
      size_t i = 0;
      for (; i + 1 < late.size(); ++i) {
        seen += late[i];
        if (static_cast<double>(seen) >= q * static_cast<double>(total)) break;
      }
      char text[48];
      if (i + 1 < late.size()) {
        std::snprintf(text, sizeof text, "< %lld ns", static_cast<long long>(bounds[i]));
      } else {
        std::snprintf(text, sizeof text, ">= %lld ns", static_cast<long long>(bounds[i - 1]));
      }
      return std::string(text);
    };
    std::printf(
        "amber's departure lateness as the node sees it (%llu tx bursts): p50 %s, p99 %s, p99.9 "
        "%s\n",
        static_cast<unsigned long long>(total), bound(0.5).c_str(), bound(0.99).c_str(),
        bound(0.999).c_str());
  }
  machine_gaps(seconds);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// "median (min-max)"
std::string spread(const std::vector<double>& v) {
  if (v.empty()) return "-";
  char text[64];
  std::snprintf(text, sizeof text, "%.2f (%.2f-%.2f)", median(v),
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
  return text;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const char* value = i + 1 < argc ? argv[i + 1] : "0";
    if (std::strcmp(argv[i], "--seconds") == 0)
      o.seconds = std::atof(value), ++i;
    else if (std::strcmp(argv[i], "--size") == 0)
      o.size = static_cast<uint16_t>(std::atoi(value)), ++i;
    else if (std::strcmp(argv[i], "--runs") == 0)
      o.runs = static_cast<unsigned>(std::atoi(value)), ++i;
    else if (std::strcmp(argv[i], "--population") == 0)
      o.population = static_cast<unsigned>(std::atoi(value)), ++i;
    else if (std::strcmp(argv[i], "--backlog") == 0)
      o.backlog = static_cast<unsigned>(std::atoi(value)), ++i;
    else if (std::strcmp(argv[i], "--bounds") == 0)
      o.bounds = true;
    else if (std::strcmp(argv[i], "--no-accuracy") == 0)
      o.accuracy = false;
    else if (std::strcmp(argv[i], "--accuracy-seconds") == 0)
      o.accuracy_seconds = std::atof(value), ++i;
    else if (std::strcmp(argv[i], "--only") == 0)
      o.only = value, ++i;
  }
  o.backlog = std::min(o.backlog, kRingSize - 1);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  amber::bench::BenchEal eal("forward_bench", "1024");
  if (!eal.ok()) return 1;
  if (rte_lcore_count() < 2) {
    std::fprintf(stderr, "forward_bench: needs 2 cores\n");
    return 1;
  }
  // Data room for the frames measured, not 2 KiB each: the population is
  // large (see circulate) and only its pointers circulate.
  const uint16_t room = static_cast<uint16_t>(RTE_PKTMBUF_HEADROOM + RTE_ALIGN_CEIL(o.size, 64));
  rte_mempool* pool = rte_pktmbuf_pool_create("bench_pool", o.population + 4096, 256,
                                              amber::dataplane::kMbufPrivSize, room, 0);
  if (pool == nullptr) {
    std::fprintf(stderr, "forward_bench: cannot create a pool of %u mbufs\n", o.population);
    return 1;
  }
  rte_eal_remote_launch(
      [](void*) {
        g_forwarder_tid = rte_sys_gettid();
        return 0;
      },
      nullptr, 1);
  rte_eal_mp_wait_lcore();
  const char* env_pipe = std::getenv("AMBER_BENCH_PIPE");
  const std::string pipe = env_pipe ? env_pipe : "delay: \"1ms\"";

  struct Forwarder {
    std::string name;
    std::function<Result(unsigned run)> measure;
  };
  std::vector<Forwarder> forwarders = {
      {"io forward (testpmd's io mode)",
       [&](unsigned r) { return measure_loop(io_forward, pool, o, r); }},
      {"amber delay node, " + pipe, [&](unsigned r) { return measure_amber(pipe, pool, o, r); }},
  };
  if (o.bounds) {
    forwarders.push_back({"bound: io forward + read each frame's length", [&](unsigned r) {
                            return measure_loop(io_reference<kReadLength>, pool, o, r);
                          }});
    forwarders.push_back({"bound: io forward + hold 1 ms in a pointer FIFO", [&](unsigned r) {
                            return measure_loop(io_reference<kHold>, pool, o, r);
                          }});
    forwarders.push_back({"bound: io forward + read length + hold 1 ms", [&](unsigned r) {
                            return measure_loop(io_reference<kReadLength | kHold>, pool, o, r);
                          }});
    forwarders.push_back(
        {"bound: the same, length read a pass later (prefetched)", [&](unsigned r) {
           return measure_loop(io_reference<kReadLength | kStaged | kHold>, pool, o, r);
         }});
  }
  std::vector<std::vector<Result>> results(forwarders.size());
  unsigned port_run = 0;
  for (unsigned run = 0; run < o.runs; ++run) {
    for (size_t f = 0; f < forwarders.size(); ++f) {
      if (forwarders[f].name.find(o.only) == std::string::npos) {
        results[f].push_back({});
        continue;
      }
      results[f].push_back(forwarders[f].measure(port_run++));
      const Result& r = results[f].back();
      std::fprintf(stderr,
                   "run %u: %-50s %8.2f Mpps (forwarder on CPU %3.0f %%, source %3.0f %%, port A "
                   "ring %3.0f %% of backlog)\n",
                   run + 1, forwarders[f].name.c_str(), r.mpps, 100 * r.cpu_share,
                   100 * r.source_cpu_share, 100 * r.backlog_fill);
    }
  }

  // A run counts for a forwarder when it and the io forward of that run,
  // and the source beside each, had the CPU (>= 95 %): on this shared
  // machine other processes take it now and then. Ratios are taken within
  // a run, against its io forward, then the median over the runs that count.
  auto had_cpu = [](const Result& r) { return r.cpu_share >= 0.95 && r.source_cpu_share >= 0.95; };
  std::printf(
      "| forwarder (one lcore, net_ring ports, %u-byte frames, %u runs) | runs with the CPU | "
      "Mpps, median (min-max) | vs io-forward, median of runs (min-max) |\n",
      o.size + 4, o.runs);
  std::printf("|---|---|---|---|\n");
  for (size_t f = 0; f < forwarders.size(); ++f) {
    if (forwarders[f].name.find(o.only) == std::string::npos) continue;
    std::vector<double> mpps, ratio;
    for (unsigned run = 0; run < o.runs; ++run) {
      const Result& r = results[f][run];
      const Result& io = results[0][run];
      if (!had_cpu(r) || !had_cpu(io)) continue;
      mpps.push_back(r.mpps);
      if (io.mpps > 0) ratio.push_back(r.mpps / io.mpps);
    }
    std::printf("| %s | %zu | %s | %s |\n", forwarders[f].name.c_str(), mpps.size(),
                spread(mpps).c_str(), spread(ratio).c_str());
  }
  std::printf("\n");

  if (o.accuracy) {
    // Delay accuracy under a 10 Gbit/s-equivalent load, full-size frames.
    rte_mempool* large = rte_pktmbuf_pool_create(
        "bench_large", 16383, 256, amber::dataplane::kMbufPrivSize, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    if (large) accuracy(large, o.accuracy_seconds);
  }

  return 0;
}
