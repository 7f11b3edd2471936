// Issue #17's fidelity requirement, measured through a real delay node on
// ring ports (no kernel in the path), one link, a Mahimahi delivery trace
// as the rate of each direction:
//
//  1. A constant 1 Gbit/s trace (250 opportunities of 1500 B per 3 ms,
//     written to a temporary file) with 80 ms delay, saturated: delivered
//     bytes per 10 ms window against what the trace prescribes in the same
//     window (target: within 1 %).
//  2. The recorded LTE traces (Verizon-LTE-short and ATT-LTE-driving-2016,
//     up and down) with 20 ms delay, saturated, for a stretch of each:
//     delivered bytes per second against what the trace prescribes.
//
//   lcore 0: source and sink. Paces 1514-byte frames (1500 B of IP packet,
//            one opportunity each) into port A above the trace's rate, with
//            a burst first so that the bottleneck queue never runs dry, and
//            reads what leaves port B: per frame its virtual departure and
//            arrival (the Frame the pipe wrote in the mbuf's private area)
//            and when the sink took it off the ring (the node's clock).
//   lcore 1: the delay node's worker, spinning (idle_sleep off).
//
// Alignment: the schedule starts on the link's first frame (schedule_start
// "first_frame"), at the instant S the node reports; an opportunity at
// trace time t serves a frame that departs at S + t + delay. Windows are
// laid on trace time from S and on departure time from S + delay, at whole
// milliseconds of the trace: every departure falls on a whole millisecond,
// so a frame the sink sees up to 1 ms late still counts in its window.
// The first window is left out: the opportunity at trace time 0 meets the
// first frame's own arrival (Mahimahi does not give it) and the queue fills.
//
//   trace_fidelity_bench [--gbit-seconds S] [--trace-seconds S] [--traces DIR]
//                        [--offered-gbit G] [--only gbit|traces]   (root: hugepages)
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_node.h"
#include "dataplane/delay_node.h"
#include "dataplane/mbuf_frame.h"
#include "link-emulator/schedule.h"

namespace {

using amber::bench::thread_cpu_ns;

using amber::dataplane::DirectionStats;
using amber::link::DeliveryTrace;

constexpr unsigned kRingSize = 65536;
constexpr uint16_t kFrameBytes = 1514;  // without the CRC: 1500 B of IP packet
constexpr uint32_t kHeaderBytes = 14;   // what an opportunity does not count
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000'000'000;

struct Port {
  std::string name;
  rte_ring* in;
  rte_ring* out;
};

Port make_port(const std::string& name) {
  Port p;
  p.name = "net_ring_" + name;
  p.in = rte_ring_create((name + "_in").c_str(), kRingSize, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.out = rte_ring_create((name + "_out").c_str(), kRingSize, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_eth_from_rings(name.c_str(), &p.in, 1, &p.out, 1, 0);
  return p;
}

void drain(Port& p) {
  void* m = nullptr;
  while (rte_ring_dequeue(p.in, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  while (rte_ring_dequeue(p.out, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
}

// The worker lcore's thread (EAL lcore threads live as long as the
// process), for the CPU time it got.
std::atomic<long> g_worker_tid{0};

// CPU time of every other task on the machine (/proc/*/task/*/schedstat),
// by task id, with its name: what took the two cores from the source, the
// sink and the worker while they spun.
struct OtherTasks {
  std::map<long, std::pair<std::string, int64_t>> ns;
};

OtherTasks other_tasks() {
  OtherTasks t;
  const std::string self = std::to_string(getpid());
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid == self || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    for (const auto& task : std::filesystem::directory_iterator(proc.path() / "task", ec)) {
      std::ifstream sched(task.path() / "schedstat"), comm(task.path() / "comm");
      int64_t ns = 0;
      std::string name;
      if (!(sched >> ns) || !std::getline(comm, name)) continue;
      t.ns[std::atol(task.path().filename().c_str())] = {name, ns};
    }
  }
  return t;
}

// "123.4 ms (largest: kdamond.0 80.1 ms)": what the other tasks ran
// between two snapshots.
std::string other_tasks_between(const OtherTasks& before, const OtherTasks& after) {
  std::map<std::string, int64_t> by_name;
  int64_t total = 0;
  for (const auto& [tid, entry] : after.ns) {
    auto it = before.ns.find(tid);
    const int64_t ran = entry.second - (it == before.ns.end() ? 0 : it->second.second);
    if (ran <= 0) continue;
    by_name[entry.first] += ran;
    total += ran;
  }
  std::string largest;
  int64_t most = 0;
  for (const auto& [name, ns] : by_name) {
    if (ns > most) most = ns, largest = name;
  }
  char text[160];
  std::snprintf(text, sizeof text, "%.1f ms (largest: %s %.1f ms)",
                static_cast<double>(total) / 1e6, largest.empty() ? "-" : largest.c_str(),
                static_cast<double>(most) / 1e6);
  return text;
}

// One frame as the sink saw it; times on the node's clock (virtual = real:
// nothing freezes here).
struct Delivery {
  int64_t departure_ns;  // the pipe's virtual departure
  int64_t arrival_ns;    // the pipe's virtual arrival
  int64_t received_ns;   // taken off port B's ring by the sink
  uint32_t bytes;        // counted against the opportunities (length - 14)
};

struct Run {
  std::string label;
  DeliveryTrace trace;
  int64_t delay_ns = 0;
  int64_t window_ns = 0;
  size_t first_window = 1, windows = 0;  // the stretch measured
  double offered_bps = 0;                // asked of the source
  uint32_t queue_frames = 0;
  // Results.
  bool ok = false;
  int64_t start_ns = 0;  // the schedule's start S
  std::vector<Delivery> deliveries;
  uint64_t offered = 0, ring_full = 0, pool_empty = 0;
  double offered_seconds = 0;
  std::vector<uint32_t> queue_samples;  // bottleneck queue, over the stretch
  DirectionStats stats{};               // a_to_b at the end
  std::string sizing;
  // Share of the run each spinning thread had its CPU: below ~99 % another
  // process took it (the machine is shared), and a frame met then is late.
  double worker_cpu = 0, sink_cpu = 0;
  std::string others;  // other_tasks_between() over the run
  // Passes of the source and sink's loop that came more than 1 ms after
  // the previous one: the lcore was taken away.
  uint64_t sink_gaps = 0;
  int64_t sink_gap_max_ns = 0, sink_gap_total_ns = 0;
};

const DirectionStats* a_to_b(const std::vector<DirectionStats>& all) {
  for (const DirectionStats& s : all) {
    if (s.direction == "a_to_b") return &s;
  }
  return nullptr;
}

// Source and sink on this lcore for one run; the node on lcore 1.
void measure(Run& run, const std::string& trace_path, rte_mempool* pool, unsigned index) {
  Port a = make_port("ta" + std::to_string(index)), b = make_port("tb" + std::to_string(index));
  char pipe[512];
  std::snprintf(pipe, sizeof pipe,
                "trace: \"%s\" delay: \"%lldms\" queue_frames: %u schedule_start: \"first_frame\"",
                trace_path.c_str(), static_cast<long long>(run.delay_ns / kMs), run.queue_frames);
  // The node's own pool is sized from its configuration: the trace at its
  // busiest millisecond, and the static rate that holds until the first
  // frame (unlimited: counted at sizing_unlimited_rate, 10 Gbit/s unless
  // told) times the delay.
  char options[64];
  std::snprintf(options, sizeof options, "sizing_unlimited_rate: \"%.0fMbit\"",
                run.offered_bps / 1e6);
  auto node = amber::bench::start_bench_node(a.name, b.name, pipe, "off", options);
  if (!node) return;
  run.sizing = node->sizing().describe();

  const double pps = run.offered_bps / (kFrameBytes * 8.0);
  // A burst of a queue's worth first, then the pace: the queue starts full.
  const uint64_t burst = run.queue_frames;
  const int64_t stretch_end = static_cast<int64_t>(run.first_window + run.windows) * run.window_ns;
  const int64_t t0 = node->now_ns();
  // Offer until past the stretch's last opportunity, receive until its
  // last departure has had time to leave (20 ms of lateness tolerated).
  const int64_t offer_end = t0 + stretch_end + 20 * kMs;
  const int64_t receive_end = t0 + stretch_end + run.delay_ns + 40 * kMs;
  const int64_t sample_every = 50 * kMs;
  int64_t next_sample = t0 + 20 * kMs;
  // Never more than is offered: no reallocation while the sink reads.
  run.deliveries.reserve(static_cast<size_t>(
      pps * static_cast<double>(stretch_end + 20 * kMs) / 1e9 + static_cast<double>(burst) + 64));
  rte_mbuf* out[64];
  void* in[64];
  int64_t last_offer = t0;
  const long sink_tid = rte_sys_gettid();
  const int64_t worker_cpu0 = thread_cpu_ns(g_worker_tid), sink_cpu0 = thread_cpu_ns(sink_tid);
  const OtherTasks others0 = other_tasks();
  int64_t previous_pass = t0;
  for (int64_t now = t0; now < receive_end; now = node->now_ns()) {
    if (now - previous_pass > kMs) {
      ++run.sink_gaps;
      run.sink_gap_total_ns += now - previous_pass;
      run.sink_gap_max_ns = std::max(run.sink_gap_max_ns, now - previous_pass);
    }
    previous_pass = now;
    if (now < offer_end) {
      const auto due = burst + static_cast<uint64_t>(static_cast<double>(now - t0) * pps / 1e9);
      const auto want = static_cast<unsigned>(std::min<uint64_t>(due - run.offered, 64));
      if (want > 0) {
        if (rte_pktmbuf_alloc_bulk(pool, out, want) != 0) {
          run.pool_empty += want;
          run.offered += want;  // counted as offered: the source could not make them
        } else {
          for (unsigned i = 0; i < want; ++i) rte_pktmbuf_append(out[i], kFrameBytes);
          const unsigned k =
              rte_ring_enqueue_burst(a.in, reinterpret_cast<void**>(out), want, nullptr);
          if (k < want) rte_pktmbuf_free_bulk(out + k, want - k);
          run.ring_full += want - k;
          run.offered += want;
        }
        last_offer = now;
      }
    }
    const unsigned n = rte_ring_dequeue_burst(b.out, in, 64, nullptr);
    if (n > 0) {
      const int64_t received = node->now_ns();
      for (unsigned i = 0; i < n; ++i) {
        auto* m = static_cast<rte_mbuf*>(in[i]);
        const amber::link::Frame* f = amber::dataplane::frame_of(m);
        run.deliveries.push_back({f->departure_ns, f->arrival_ns, received,
                                  m->pkt_len > kHeaderBytes ? m->pkt_len - kHeaderBytes : 0});
      }
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(in), n);
    }
    if (now >= next_sample) {
      next_sample += sample_every;
      auto stats = node->stats();
      if (stats.is_ok()) {
        if (const DirectionStats* s = a_to_b(*stats)) {
          if (run.start_ns == 0 && s->schedule.started) run.start_ns = s->schedule.start_ns;
          const int64_t trace_now = now - run.start_ns;
          if (run.start_ns != 0 &&
              trace_now >= static_cast<int64_t>(run.first_window) * run.window_ns &&
              trace_now < stretch_end) {
            run.queue_samples.push_back(s->queued_frames);
          }
        }
      }
    }
  }
  run.offered_seconds = static_cast<double>(last_offer - t0) / 1e9;
  const auto wall = static_cast<double>(node->now_ns() - t0);
  run.worker_cpu = static_cast<double>(thread_cpu_ns(g_worker_tid) - worker_cpu0) / wall;
  run.sink_cpu = static_cast<double>(thread_cpu_ns(sink_tid) - sink_cpu0) / wall;
  run.others = other_tasks_between(others0, other_tasks());
  if (auto stats = node->stats(); stats.is_ok()) {
    if (const DirectionStats* s = a_to_b(*stats)) {
      run.stats = *s;
      if (s->schedule.started) run.start_ns = s->schedule.start_ns;
      run.ok = run.start_ns != 0;
    }
  }
  node->stop();
  node->wait();
  node.reset();
  drain(a);
  drain(b);
  if (!run.ok)
    std::fprintf(stderr, "trace_fidelity_bench: %s: the schedule never started\n",
                 run.label.c_str());
}

struct Window {
  uint64_t prescribed = 0, by_departure = 0, by_reception = 0;
};

// Bytes per window of the stretch: what the trace prescribes (its
// opportunities in the window of trace time) and what left in the window of
// departure time, by the pipe's departure stamp and by the sink's clock.
std::vector<Window> bin(const Run& run) {
  std::vector<Window> w(run.first_window + run.windows);
  const int64_t end = static_cast<int64_t>(w.size()) * run.window_ns;
  const int64_t period = run.trace.period_ns();
  for (int64_t base = 0; base < end; base += period) {
    for (uint32_t ms : run.trace.ms) {
      const int64_t t = base + int64_t{ms} * kMs;
      if (t < end)
        w[static_cast<size_t>(t / run.window_ns)].prescribed += run.trace.opportunity_bytes;
    }
  }
  const int64_t origin = run.start_ns + run.delay_ns;
  for (const Delivery& d : run.deliveries) {
    if (int64_t t = d.departure_ns - origin; t >= 0 && t < end) {
      w[static_cast<size_t>(t / run.window_ns)].by_departure += d.bytes;
    }
    if (int64_t t = d.received_ns - origin; t >= 0 && t < end) {
      w[static_cast<size_t>(t / run.window_ns)].by_reception += d.bytes;
    }
  }
  w.erase(w.begin(), w.begin() + static_cast<ptrdiff_t>(run.first_window));
  return w;
}

double error_pct(uint64_t got, uint64_t want) {
  return want == 0 ? 0
                   : 100.0 * (static_cast<double>(got) - static_cast<double>(want)) /
                         static_cast<double>(want);
}

template <typename T>
T quantile(std::vector<T> v, double q) {
  if (v.empty()) return T{};
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

struct ErrorSummary {
  size_t windows = 0;        // with a prescription (> 0 bytes)
  size_t idle_mismatch = 0;  // nothing prescribed, something delivered
  double median = 0, p1 = 0, p99 = 0, max_abs = 0;
  size_t beyond_1pct = 0;
  uint64_t prescribed = 0, delivered = 0;
};

ErrorSummary summarize(const std::vector<Window>& windows, bool by_departure) {
  ErrorSummary s;
  std::vector<double> errors;
  for (const Window& w : windows) {
    const uint64_t got = by_departure ? w.by_departure : w.by_reception;
    s.prescribed += w.prescribed;
    s.delivered += got;
    if (w.prescribed == 0) {
      s.idle_mismatch += got != 0;
      continue;
    }
    const double e = error_pct(got, w.prescribed);
    errors.push_back(e);
    s.max_abs = std::max(s.max_abs, std::fabs(e));
    s.beyond_1pct += std::fabs(e) > 1.0;
  }
  s.windows = errors.size();
  s.median = quantile(errors, 0.5);
  s.p1 = quantile(errors, 0.01);
  s.p99 = quantile(errors, 0.99);
  return s;
}

// Frames whose departure is not on a whole millisecond of the trace (after
// S + delay): none if every frame left at its opportunity.
size_t off_grid(const Run& run) {
  size_t n = 0;
  for (const Delivery& d : run.deliveries) {
    n += (d.departure_ns - run.start_ns - run.delay_ns) % kMs != 0;
  }
  return n;
}

// Bucket bound of the node's tx-burst lateness histogram at quantile q.
std::string lateness_quantile(const DirectionStats& s, double q) {
  const auto& late = s.node.burst_lateness;
  uint64_t total = 0;
  for (uint64_t n : late) total += n;
  if (total == 0) return "-";
  const auto& bounds = amber::dataplane::kLatenessBoundsNs;
  uint64_t seen = 0;
  size_t i = 0;
  for (; i + 1 < late.size(); ++i) {
    seen += late[i];
    if (static_cast<double>(seen) >= q * static_cast<double>(total)) break;
  }
  const bool open = i + 1 == late.size();
  const int64_t bound = open ? bounds[i - 1] : bounds[i];
  char text[48];
  std::snprintf(text, sizeof text, "%s %lld %s", open ? ">=" : "<",
                static_cast<long long>(bound < 1000 ? bound : bound / 1000),
                bound < 1000 ? "ns" : "us");
  return text;
}

std::string drops(const DirectionStats& s) {
  std::string out;
  for (size_t c = 0; c < amber::link::kDropCauseCount; ++c) {
    if (s.pipe.frames_dropped[c] == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::string(amber::link::drop_cause_name(static_cast<amber::link::DropCause>(c))) + " " +
           std::to_string(s.pipe.frames_dropped[c]);
  }
  return out.empty() ? "none" : out;
}

// The sink's lateness: reception - departure, in microseconds.
std::string reception_lateness(const Run& run) {
  std::vector<int64_t> late;
  late.reserve(run.deliveries.size());
  for (const Delivery& d : run.deliveries) late.push_back(d.received_ns - d.departure_ns);
  if (late.empty()) return "-";
  char text[96];
  std::snprintf(text, sizeof text, "p50 %.1f us, p99 %.1f us, p99.99 %.1f us, max %.1f us",
                static_cast<double>(quantile(late, 0.5)) / 1e3,
                static_cast<double>(quantile(late, 0.99)) / 1e3,
                static_cast<double>(quantile(late, 0.9999)) / 1e3,
                static_cast<double>(*std::max_element(late.begin(), late.end())) / 1e3);
  return text;
}

std::string pct(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%+.3f %%", v);
  return text;
}

void print_gbit(const Run& run) {
  const std::vector<Window> w = bin(run);
  const ErrorSummary dep = summarize(w, true), rx = summarize(w, false);
  const double from = static_cast<double>(run.first_window * run.window_ns) / 1e9;
  const double to = static_cast<double>((run.first_window + run.windows) * run.window_ns) / 1e9;
  std::printf(
      "| per 10 ms window, trace time %.2f-%.2f s (%zu windows) | median error | p1 | p99 | "
      "max abs error | windows beyond 1 %% |\n",
      from, to, dep.windows);
  std::printf("|---|---|---|---|---|---|\n");
  for (auto [name, s] : {std::pair{"by departure stamp (the pipe's virtual departure)", dep},
                         std::pair{"by reception at the sink (node clock)", rx}}) {
    std::printf("| %s | %s | %s | %s | %.3f %% | %zu |\n", name, pct(s.median).c_str(),
                pct(s.p1).c_str(), pct(s.p99).c_str(), s.max_abs, s.beyond_1pct);
  }
  const double nominal = 1e9 / 8 * static_cast<double>(run.windows * run.window_ns) / 1e9;
  std::printf("\n| over the stretch (%.2f s) | bytes | vs the trace | vs 1 Gbit/s exactly |\n",
              to - from);
  std::printf("|---|---|---|---|\n");
  std::printf("| prescribed by the trace | %llu | - | %s |\n",
              static_cast<unsigned long long>(dep.prescribed),
              pct(100 * (static_cast<double>(dep.prescribed) - nominal) / nominal).c_str());
  for (auto [name, s] : {std::pair{"delivered, by departure stamp", dep},
                         std::pair{"delivered, by reception", rx}}) {
    std::printf("| %s | %llu | %s | %s |\n", name, static_cast<unsigned long long>(s.delivered),
                pct(error_pct(s.delivered, s.prescribed)).c_str(),
                pct(100 * (static_cast<double>(s.delivered) - nominal) / nominal).c_str());
  }
}

void print_counters(const Run& run) {
  const DirectionStats& s = run.stats;
  const double offered_gbps =
      run.offered_seconds > 0 ? static_cast<double>(run.offered - run.pool_empty - run.ring_full) *
                                    kFrameBytes * 8 / run.offered_seconds / 1e9
                              : 0;
  std::vector<uint32_t> q = run.queue_samples;
  const Delivery* first = run.deliveries.empty() ? nullptr : &run.deliveries.front();
  std::printf("\n| %s: counters | value |\n|---|---|\n", run.label.c_str());
  std::printf(
      "| offered by the source (1514-byte frames, burst of %u, then paced) | %llu frames over "
      "%.2f s: %.1f Mbit/s of frames, %.2f x the trace's mean %.1f Mbit/s |\n",
      run.queue_frames, static_cast<unsigned long long>(run.offered), run.offered_seconds,
      offered_gbps * 1e3,
      offered_gbps * 1e9 * (kFrameBytes - kHeaderBytes) / kFrameBytes /
          static_cast<double>(run.trace.mean_rate_bps()),
      static_cast<double>(run.trace.mean_rate_bps()) / 1e6);
  std::printf("| not offered: source pool empty / port A ring full | %llu / %llu |\n",
              static_cast<unsigned long long>(run.pool_empty),
              static_cast<unsigned long long>(run.ring_full));
  std::printf("| node: frames in / out / held at the end | %llu / %llu / %llu |\n",
              static_cast<unsigned long long>(s.pipe.frames_in),
              static_cast<unsigned long long>(s.pipe.frames_out),
              static_cast<unsigned long long>(s.held_frames));
  std::printf("| node: frames dropped by cause | %s |\n", drops(s).c_str());
  std::printf(
      "| node: no private area / oversize / tx retries / dup without mbuf | %llu / %llu / %llu / "
      "%llu |\n",
      static_cast<unsigned long long>(s.node.no_priv_area),
      static_cast<unsigned long long>(s.node.oversize),
      static_cast<unsigned long long>(s.node.tx_retries),
      static_cast<unsigned long long>(s.node.dup_no_mbuf));
  std::printf("| node: frames sent > 10 us after their departure | %llu of %llu |\n",
              static_cast<unsigned long long>(s.node.late_departures),
              static_cast<unsigned long long>(s.pipe.frames_out));
  std::printf("| node: tx burst lateness (its own view) | p50 %s, p99 %s, p99.99 %s |\n",
              lateness_quantile(s, 0.5).c_str(), lateness_quantile(s, 0.99).c_str(),
              lateness_quantile(s, 0.9999).c_str());
  std::printf("| sink: frames received / reception - departure | %zu / %s |\n",
              run.deliveries.size(), reception_lateness(run).c_str());
  std::printf("| bottleneck queue over the stretch (%zu samples, limit %u) | min %u, median %u |\n",
              q.size(), run.queue_frames, q.empty() ? 0 : *std::min_element(q.begin(), q.end()),
              quantile(q, 0.5));
  if (first != nullptr) {
    std::printf(
        "| first frame: departure - schedule start - delay / departure - arrival | %.3f ms / "
        "%.3f ms |\n",
        static_cast<double>(first->departure_ns - run.start_ns - run.delay_ns) / 1e6,
        static_cast<double>(first->departure_ns - first->arrival_ns) / 1e6);
  }
  std::printf("| departures off the trace's millisecond grid | %zu of %zu |\n", off_grid(run),
              run.deliveries.size());
  std::printf(
      "| CPU share over the run: node worker lcore / source and sink lcore | %.1f %% / %.1f %% "
      "|\n",
      100 * run.worker_cpu, 100 * run.sink_cpu);
  std::printf("| CPU time of the machine's other tasks over the run | %s |\n", run.others.c_str());
  uint64_t late_1ms = 0;
  for (size_t i = 0; i < s.node.burst_lateness.size(); ++i) {
    if (i > 0 && amber::dataplane::kLatenessBoundsNs[i - 1] >= kMs)
      late_1ms += s.node.burst_lateness[i];
  }
  std::printf(
      "| gaps > 1 ms: node tx bursts sent >= 1 ms late / source and sink loop | %llu / %llu "
      "(longest %.1f ms, %.1f ms in all) |\n",
      static_cast<unsigned long long>(late_1ms), static_cast<unsigned long long>(run.sink_gaps),
      static_cast<double>(run.sink_gap_max_ns) / 1e6,
      static_cast<double>(run.sink_gap_total_ns) / 1e6);
  std::printf("| node mempool | %s |\n", run.sizing.c_str());
}

// The constant trace: `per_period` opportunities spread over the whole
// milliseconds 1..period_ms as evenly as integers allow.
std::string constant_trace(uint32_t per_period, uint32_t period_ms) {
  std::string text;
  uint32_t given = 0;
  for (uint32_t ms = 1; ms <= period_ms; ++ms) {
    const uint32_t upto = static_cast<uint32_t>(uint64_t{per_period} * ms / period_ms);
    for (; given < upto; ++given) text += std::to_string(ms) + "\n";
  }
  return text;
}

struct Options {
  double gbit_seconds = 5;
  double trace_seconds = 25;
  double offered_gbit = 1.2;
  std::string traces = "/work/shared/traces";
  std::string only;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    if (std::strcmp(argv[i], "--gbit-seconds") == 0)
      o.gbit_seconds = std::atof(value), ++i;
    else if (std::strcmp(argv[i], "--trace-seconds") == 0)
      o.trace_seconds = std::atof(value), ++i;
    else if (std::strcmp(argv[i], "--offered-gbit") == 0)
      o.offered_gbit = std::atof(value), ++i;
    else if (std::strcmp(argv[i], "--traces") == 0)
      o.traces = value, ++i;
    else if (std::strcmp(argv[i], "--only") == 0)
      o.only = value, ++i;
  }
  return o;
}

void run_gbit(const Options& o, rte_mempool* pool) {
  char path[] = "/tmp/amber-gbit-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    std::perror("trace_fidelity_bench: mkstemp");
    return;
  }
  const std::string text = constant_trace(250, 3);
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  auto trace = amber::link::load_mahimahi_trace(path);
  Run run;
  run.label = "1 Gbit/s, 80 ms";
  run.delay_ns = 80 * kMs;
  run.window_ns = 10 * kMs;
  run.windows = static_cast<size_t>(o.gbit_seconds * 100 + 0.5);
  run.offered_bps = o.offered_gbit * 1e9;
  run.queue_frames = 2000;
  if (written && trace) {
    run.trace = *trace;
    std::printf(
        "== 1. constant 1 Gbit/s trace (250 opportunities of 1500 B per 3 ms: 83, 83, 84), "
        "80 ms delay, queue %u frames, ring ports, saturated ==\n"
        "windows on whole ms of trace time from the schedule's start S (the first frame's "
        "arrival), on departure time from S + 80 ms; the first window is left out\n\n",
        run.queue_frames);
    measure(run, path, pool, 0);
  } else {
    std::fprintf(stderr, "trace_fidelity_bench: cannot write or read %s\n", path);
  }
  std::remove(path);
  if (!run.ok) return;
  print_gbit(run);
  print_counters(run);
}

void run_traces(const Options& o, rte_mempool* pool) {
  const char* names[] = {"Verizon-LTE-short.up", "Verizon-LTE-short.down",
                         "ATT-LTE-driving-2016.up", "ATT-LTE-driving-2016.down"};
  std::vector<Run> runs;
  unsigned index = 1;
  std::printf(
      "\n== 2. recorded LTE traces, 20 ms delay, queue 1000 frames, saturated (%.0f Mbit/s "
      "offered), trace seconds 1-%.0f of each ==\n\n",
      o.offered_gbit * 1e3 / 12, 1 + o.trace_seconds);
  for (const char* name : names) {
    const std::string path = o.traces + "/" + name;
    auto trace = amber::link::load_mahimahi_trace(path);
    if (!trace) {
      std::fprintf(stderr, "trace_fidelity_bench: %s (skipped)\n",
                   trace.status().to_string().c_str());
      continue;
    }
    Run run;
    run.label = name;
    run.trace = *trace;
    run.delay_ns = 20 * kMs;
    run.window_ns = kSecond;
    run.windows = static_cast<size_t>(o.trace_seconds + 0.5);
    // Far above every trace's busiest 100 ms (51 Mbit/s at most here).
    run.offered_bps = o.offered_gbit * 1e9 / 12;
    run.queue_frames = 1000;
    measure(run, path, pool, index++);
    if (run.ok) runs.push_back(std::move(run));
  }
  if (runs.empty()) return;
  // Per second: delivered (by reception at the sink) / prescribed, kB.
  std::printf("| trace second | ");
  for (const Run& r : runs)
    std::printf("%s: delivered / prescribed kB (error) | ", r.label.c_str());
  std::printf("\n|---|");
  for (size_t i = 0; i < runs.size(); ++i) std::printf("---|");
  std::printf("\n");
  std::vector<std::vector<Window>> bins;
  for (const Run& r : runs) bins.push_back(bin(r));
  for (size_t k = 0; k < runs.front().windows; ++k) {
    std::printf("| %zu | ", runs.front().first_window + k);
    for (const auto& w : bins) {
      if (k >= w.size()) {
        std::printf("- | ");
        continue;
      }
      std::printf("%.1f / %.1f (%s) | ", static_cast<double>(w[k].by_reception) / 1e3,
                  static_cast<double>(w[k].prescribed) / 1e3,
                  w[k].prescribed ? pct(error_pct(w[k].by_reception, w[k].prescribed)).c_str()
                                  : (w[k].by_reception ? "delivered, none prescribed" : "idle"));
    }
    std::printf("\n");
  }
  std::printf(
      "\n| trace (stretch) | measured by | prescribed MB | delivered MB | total error | "
      "median per-second error | max abs per-second error | seconds beyond 1 %% | "
      "idle seconds with delivery |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    for (bool by_departure : {true, false}) {
      const ErrorSummary s = summarize(bins[i], by_departure);
      std::printf(
          "| %s (s %zu-%zu) | %s | %.3f | %.3f | %s | %s | %.3f %% | %zu | %zu |\n",
          runs[i].label.c_str(), runs[i].first_window, runs[i].first_window + runs[i].windows,
          by_departure ? "departure stamp" : "reception", static_cast<double>(s.prescribed) / 1e6,
          static_cast<double>(s.delivered) / 1e6, pct(error_pct(s.delivered, s.prescribed)).c_str(),
          pct(s.median).c_str(), s.max_abs, s.beyond_1pct, s.idle_mismatch);
    }
  }
  for (const Run& r : runs) print_counters(r);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  amber::bench::BenchEal eal("trace_fidelity_bench", "512");
  if (!eal.ok()) return 1;
  if (rte_lcore_count() < 2) {
    std::fprintf(stderr, "trace_fidelity_bench: needs 2 cores\n");
    return 1;
  }
  // The source's frames are the node's frames (the ring PMD hands the
  // mbufs over): room for 80 ms of 1 Gbit/s on the wire (6,720 frames at
  // the trace's busiest millisecond), the bottleneck queue (2,000), port
  // rings and bursts, and the sink's batch.
  rte_mempool* pool = rte_pktmbuf_pool_create(
      "fidelity_pool", 32767, 256, amber::dataplane::kMbufPrivSize, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  if (pool == nullptr) {
    std::fprintf(stderr, "trace_fidelity_bench: cannot create the source's pool\n");
    return 1;
  }
  rte_eal_remote_launch(
      [](void*) {
        g_worker_tid = rte_sys_gettid();
        return 0;
      },
      nullptr, 1);
  rte_eal_mp_wait_lcore();
  if (o.only.empty() || o.only == "gbit") run_gbit(o, pool);
  if (o.only.empty() || o.only == "traces") run_traces(o, pool);
  rte_mempool_free(pool);
  return 0;
}
