// Forwarding rate and delay accuracy of the delay node on ring ports (no
// kernel in the path), side by side with a testpmd-style io forwarder on
// the very same ports, in one process:
//
//   lcore 0: traffic source and sink. A fixed population of mbufs circulates:
//            whatever leaves port B is fed back into port A, so the source
//            never allocates and always offers more than the forwarder takes.
//   lcore 1: the forwarder under test: amber's worker (one pipe per
//            direction, 1 ms delay, unlimited rate), or an io forwarder doing
//            exactly what testpmd's "io" mode does (rx burst -> tx burst).
//
// The accuracy run paces 1518-byte frames at 10 Gbit/s line rate
// (812,744 frames/s) through a 1 ms delay and reports the distribution of
// |actual - configured| one-way delay from TSC stamps written at injection
// and read at the sink.
//
//   forward_bench [--seconds S] [--size B]      (run as root: hugepages)
#include <rte_cycles.h>
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
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_node.h"
#include "dataplane/delay_node.h"
#include "dataplane/mbuf_frame.h"

namespace {

using amber::dataplane::DelayNode;

struct Port {
  std::string name;
  rte_ring* in;
  rte_ring* out;
  uint16_t id;
};

Port make_port(const std::string& name) {
  Port p;
  p.name = "net_ring_" + name;
  p.in = rte_ring_create((name + "_in").c_str(), 65536, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.out = rte_ring_create((name + "_out").c_str(), 65536, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.id = static_cast<uint16_t>(rte_eth_from_rings(name.c_str(), &p.in, 1, &p.out, 1, 0));
  return p;
}

std::atomic<bool> g_stop{false};

// testpmd's io forwarding, reduced to its loop: rx burst, tx burst, free
// what the tx ring did not take.
int io_forward(void* arg) {
  auto* ports = static_cast<std::pair<uint16_t, uint16_t>*>(arg);
  rte_mbuf* burst[32];
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint16_t n = rte_eth_rx_burst(ports->first, 0, burst, 32);
    if (n == 0) continue;
    uint16_t k = rte_eth_tx_burst(ports->second, 0, burst, n);
    if (k < n) rte_pktmbuf_free_bulk(burst + k, n - k);
  }
  return 0;
}

void setup_port(uint16_t id, rte_mempool* pool) {
  rte_eth_conf conf{};
  rte_eth_dev_configure(id, 1, 1, &conf);
  rte_eth_rx_queue_setup(id, 0, 1024, 0, nullptr, pool);
  rte_eth_tx_queue_setup(id, 0, 1024, 0, nullptr);
  rte_eth_dev_start(id);
}

struct Result {
  double mpps;
  uint64_t frames;
};

// Closed loop: feed everything that comes out of B back into A, counting.
Result circulate(Port& a, Port& b, rte_mempool* pool, unsigned population, uint16_t size,
                 double seconds) {
  std::vector<rte_mbuf*> seed(population);
  if (rte_pktmbuf_alloc_bulk(pool, seed.data(), population) != 0) {
    std::fprintf(stderr, "forward_bench: cannot allocate %u mbufs\n", population);
    return {0, 0};
  }
  for (rte_mbuf* m : seed) {
    rte_pktmbuf_append(m, size);
    std::memset(rte_pktmbuf_mtod(m, void*), 0x5a, 14);
  }
  unsigned queued = rte_ring_enqueue_burst(a.in, reinterpret_cast<void**>(seed.data()), population, nullptr);
  rte_pktmbuf_free_bulk(seed.data() + queued, population - queued);
  const uint64_t hz = rte_get_tsc_hz();
  // Warm up for 0.5 s, then count.
  uint64_t start = rte_rdtsc(), warm = start + hz / 2, end = warm + static_cast<uint64_t>(seconds * hz);
  uint64_t counted = 0;
  void* burst[64];
  for (uint64_t now = start; now < end; now = rte_rdtsc()) {
    unsigned n = rte_ring_dequeue_burst(b.out, burst, 64, nullptr);
    if (n == 0) continue;
    if (now >= warm) counted += n;
    unsigned k = rte_ring_enqueue_burst(a.in, burst, n, nullptr);
    if (k < n) rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(burst) + k, n - k);
  }
  return {static_cast<double>(counted) / seconds / 1e6, counted};
}

void drain(Port& p) {
  void* m = nullptr;
  while (rte_ring_dequeue(p.in, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  while (rte_ring_dequeue(p.out, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
}

std::unique_ptr<DelayNode> start_node(Port& a, Port& b, const char* pipe) {
  return amber::bench::start_bench_node(a.name, b.name, pipe, "off");
}

void accuracy(Port& a, Port& b, rte_mempool* pool, double seconds) {
  auto node = start_node(a, b, "delay: \"1ms\"");
  if (!node) return;
  const uint64_t hz = rte_get_tsc_hz();
  const uint16_t size = 1518 - 4;  // without the CRC the wire adds
  const double pps = 10e9 / ((1518 + 20) * 8.0);
  const uint64_t gap = static_cast<uint64_t>(hz / pps);
  const int64_t delay_ns = 1'000'000;
  std::vector<int64_t> errors;
  errors.reserve(static_cast<size_t>(pps * seconds) + 1024);
  uint64_t next = rte_rdtsc(), warm = next + hz / 2, end = warm + static_cast<uint64_t>(seconds * hz);
  uint64_t sent = 0;
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
        ++sent;
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
      if (stamp >= warm) {
        int64_t actual = static_cast<int64_t>(static_cast<double>(t - stamp) * 1e9 / static_cast<double>(hz));
        errors.push_back(std::abs(actual - delay_ns));
      }
    }
    rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(burst), n);
  }
  node->stop();
  node->wait();
  auto stats = node->stats();
  node.reset();
  drain(a);
  drain(b);
  std::sort(errors.begin(), errors.end());
  if (errors.empty()) {
    std::printf("accuracy: no frames measured\n");
    return;
  }
  auto q = [&](double f) { return errors[static_cast<size_t>(f * static_cast<double>(errors.size() - 1))]; };
  std::printf("| delay error, 1518 B at 10 Gbit/s line rate (%.0f frames/s), 1 ms delay | %zu frames | p50 %lld ns | p99 %lld ns | p99.9 %lld ns | max %lld ns |\n",
              pps, errors.size(), static_cast<long long>(q(0.5)), static_cast<long long>(q(0.99)),
              static_cast<long long>(q(0.999)), static_cast<long long>(errors.back()));
  (void)stats;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  uint16_t size = 60;  // a 64-byte frame without its CRC
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atof(argv[i + 1]);
    if (std::strcmp(argv[i], "--size") == 0) size = static_cast<uint16_t>(std::atoi(argv[i + 1]));
  }
  std::string prefix = "amb-fwd-bench-" + std::to_string(getpid());
  const char* eal[] = {"forward_bench", "-l", "0-1", "--no-pci", "--in-memory", "--file-prefix",
                       prefix.c_str(), "--log-level", "lib.eal:error", "-m", "1024"};
  if (rte_eal_init(static_cast<int>(sizeof eal / sizeof eal[0]), const_cast<char**>(eal)) < 0) {
    std::fprintf(stderr, "forward_bench: EAL init failed (root and hugepages needed)\n");
    return 1;
  }
  if (rte_lcore_count() < 2) {
    std::fprintf(stderr, "forward_bench: needs 2 cores\n");
    return 1;
  }
  rte_mempool* pool = rte_pktmbuf_pool_create("bench_pool", 131071, 256,
                                              amber::dataplane::kMbufPrivSize,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  Port a = make_port("fa"), b = make_port("fb");
  const unsigned population = 32768;

  // 1. testpmd-style io forwarding a -> b on lcore 1.
  setup_port(a.id, pool);
  setup_port(b.id, pool);
  std::pair<uint16_t, uint16_t> fwd{a.id, b.id};
  g_stop = false;
  rte_eal_remote_launch(io_forward, &fwd, 1);
  Result io = circulate(a, b, pool, population, size, seconds);
  g_stop = true;
  rte_eal_mp_wait_lcore();
  drain(a);
  drain(b);
  rte_eth_dev_stop(a.id);
  rte_eth_dev_stop(b.id);

  // 2. amber: the delay node's worker on lcore 1, 1 ms delay, unlimited rate.
  Result amber{0, 0};
  const char* pipe = std::getenv("AMBER_BENCH_PIPE") ? std::getenv("AMBER_BENCH_PIPE") : "delay: \"1ms\"";
  if (auto node = start_node(a, b, pipe)) {
    amber = circulate(a, b, pool, population, size, seconds);
    node->stop();
    node->wait();
    node.reset();
  }
  drain(a);
  drain(b);

  std::printf("| forwarder (one lcore, net_ring ports, %u-byte frames) | Mpps | vs io-forward |\n", size + 4);
  std::printf("|---|---|---|\n");
  std::printf("| io forward (testpmd's io mode) | %.2f | 1.00 |\n", io.mpps);
  std::printf("| amber delay node, 1 ms delay, unlimited rate | %.2f | %.2f |\n", amber.mpps,
              io.mpps > 0 ? amber.mpps / io.mpps : 0.0);
  std::printf("\n");

  // 3. Delay accuracy under a 10 Gbit/s-equivalent load. The ports were
  // closed by the node: make them again.
  Port c = make_port("fc"), d = make_port("fd");
  accuracy(c, d, pool, seconds);

  rte_eal_cleanup();
  std::filesystem::remove_all("/var/run/dpdk/" + prefix);
  return 0;
}
