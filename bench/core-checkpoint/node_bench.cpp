// A running delay node's checkpoint costs, on ring ports:
//  1. how long after the instant T each freeze takes effect (100 freezes),
//     with the idle loop sleeping (default) and spinning;
//  2. save and restore of a node holding 1 Gbit/s x 500 ms per direction
//     (2 x 41,667 frames of 1500 B, 125 MB), from and into mbufs, to a file
//     in the page cache, median and range of --rounds rounds (default 7).
//
//   node_bench [--freezes N] [--frames-per-pipe N] [--small-frames-per-pipe N]
//              [--dir DIR] [--rounds N] [--dirty-mb N]   (root: hugepages)
//   --dirty-mb N writes N MB of other data to DIR (no fsync) before the
//   rounds: saves then compete with the kernel's writeback.
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
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_node.h"
#include "bench/machine_gaps.h"
#include "core-checkpoint/node_checkpoint.h"
#include "dataplane/delay_node.h"
#include "dataplane/mbuf_frame.h"

namespace {

using amber::dataplane::DelayNode;

struct Ports {
  std::string a, b;
  rte_ring* a_in;
};

Ports make_ports(const std::string& tag, unsigned ring_size) {
  Ports p;
  rte_ring* r[4];
  for (int i = 0; i < 4; ++i) {
    r[i] = rte_ring_create(("nb_" + tag + std::to_string(i)).c_str(), ring_size, 0,
                           RING_F_SP_ENQ | RING_F_SC_DEQ);
  }
  rte_eth_from_rings(("nb_a" + tag).c_str(), &r[0], 1, &r[1], 1, 0);
  rte_eth_from_rings(("nb_b" + tag).c_str(), &r[2], 1, &r[3], 1, 0);
  p.a = "net_ring_nb_a" + tag;
  p.b = "net_ring_nb_b" + tag;
  p.a_in = r[0];
  return p;
}

std::unique_ptr<DelayNode> start_node(const Ports& p, const std::string& pipe,
                                      const std::string& idle) {
  return amber::bench::start_bench_node(p.a, p.b, pipe, idle);
}

// How often the machine itself takes the worker lcore away (see
// bench/machine_gaps.h): a freeze instant inside a gap longer than 10 us
// misses the 10 us target whatever the node does.
void machine_noise() {
  const unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  amber::bench::MachineGaps gaps;
  gaps.seconds = 1;
  if (lcore >= RTE_MAX_LCORE ||
      rte_eal_remote_launch(amber::bench::spin_for_gaps_on_lcore, &gaps, lcore) != 0) {
    return;
  }
  rte_eal_wait_lcore(lcore);
  std::printf(
      "| the machine: TSC gaps on the worker lcore, 1 s spin | %llu gaps > 1 us, %llu > 10 us | "
      "%.4f %% of the time more than 10 us from a gap's end | | max %.0f ns |\n",
      static_cast<unsigned long long>(gaps.over_1us),
      static_cast<unsigned long long>(gaps.over_10us), 100 * gaps.late_10us_share, gaps.max_gap_ns);
}

void freeze_latency(const char* idle, int freezes) {
  Ports p = make_ports(std::string("f") + idle, 1024);
  auto node = start_node(p, "delay: \"1ms\"", idle);
  if (!node) return;
  std::vector<int64_t> lat;
  for (int i = 0; i < freezes; ++i) {
    const int64_t t = node->now_ns() + 5'000'000;
    if (!node->freeze_at(t).is_ok()) continue;
    std::this_thread::sleep_for(std::chrono::milliseconds(7));
    auto l = node->freeze_latencies();
    if (l) lat.insert(lat.end(), l->begin(), l->end());
    (void)node->thaw_at(node->now_ns() + 1'000'000);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  node->stop();
  node->wait();
  std::sort(lat.begin(), lat.end());
  if (lat.empty()) return;
  auto q = [&](double f) {
    return lat[static_cast<size_t>(f * static_cast<double>(lat.size() - 1))];
  };
  std::printf(
      "| freeze takes effect after T, idle_sleep %-4s | %zu freezes | p50 %lld ns | p99 %lld ns | "
      "max %lld ns |\n",
      idle, lat.size(), static_cast<long long>(q(0.5)), static_cast<long long>(q(0.99)),
      static_cast<long long>(lat.back()));
}

void save_restore(unsigned frames_per_pipe, uint16_t frame_bytes, const std::string& dir,
                  int rounds, unsigned dirty_mb) {
  // (not "s" + to_string(): GCC 12 sees a false -Wrestrict overlap in it)
  std::string tag = std::to_string(frame_bytes);
  tag.insert(tag.begin(), 's');
  Ports p = make_ports(tag, 1u << 17);
  // The frames sit in the bottleneck queue: a save does not care where.
  auto node = start_node(p, "rate: \"1Gbit\" delay: \"500ms\" queue_frames: 200000", "10us");
  if (!node) return;
  rte_mempool* src =
      rte_pktmbuf_pool_create("nb_src", 2 * frames_per_pipe + 1024, 256,
                              amber::dataplane::kMbufPrivSize, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  if (!src) {
    std::fprintf(stderr, "node_bench: no memory for %u source mbufs\n", 2 * frames_per_pipe);
    return;
  }
  (void)node->freeze_at(node->now_ns() + 2'000'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // Both directions: inject into a's rx for a_to_b; b's rx ring is the
  // third ring created for the port pair.
  rte_ring* b_in = rte_ring_lookup(("nb_" + tag + "2").c_str());
  for (rte_ring* in : {p.a_in, b_in}) {
    for (unsigned i = 0; i < frames_per_pipe; ++i) {
      rte_mbuf* m = rte_pktmbuf_alloc(src);
      char* d = rte_pktmbuf_append(m, frame_bytes);
      std::memset(d, static_cast<int>(i), std::min<uint16_t>(64, frame_bytes));
      while (rte_ring_enqueue(in, m) != 0) std::this_thread::yield();
    }
  }
  for (int waited = 0; waited < 5000; ++waited) {
    auto s = node->stats();
    if (s && (*s)[0].held_frames + (*s)[1].held_frames >= 2ULL * frames_per_pipe) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const std::string image = dir + "/node_bench.img";
  amber::checkpoint::WriterOptions options;
  options.sync = false;  // page cache, as the target says
  amber::checkpoint::RestoreOptions no_verify;
  no_verify.verify_first = false;
  // Each round saves to a new file (the page cache allocates it afresh) and
  // restores it twice; the rounds show how much the page cache varies.
  std::vector<int64_t> save_ns, restore_ns, restore_fast_ns;
  uint64_t frames = 0, bytes = 0;
  // Other data waiting for writeback, as after a VM save: the page cache
  // then throttles every writer.
  const std::string dirty = dir + "/node_bench.dirty";
  if (dirty_mb > 0) {
    std::vector<char> block(1 << 20, 1);
    FILE* f = std::fopen(dirty.c_str(), "wb");
    for (unsigned i = 0; f && i < dirty_mb; ++i) std::fwrite(block.data(), 1, block.size(), f);
    if (f) std::fclose(f);
  }
  for (int round = 0; round < rounds; ++round) {
    std::filesystem::remove(image);
    auto saved = amber::checkpoint::save_node(*node, image, options);
    if (!saved) {
      std::fprintf(stderr, "save: %s\n", saved.status().to_string().c_str());
      return;
    }
    auto restored = amber::checkpoint::restore_node(*node, image);
    if (!restored) {
      std::fprintf(stderr, "restore: %s\n", restored.status().to_string().c_str());
      return;
    }
    auto restored_fast = amber::checkpoint::restore_node(*node, image, no_verify);
    if (!restored_fast) {
      std::fprintf(stderr, "restore: %s\n", restored_fast.status().to_string().c_str());
      return;
    }
    frames = saved->frames;
    bytes = saved->bytes;
    save_ns.push_back(saved->duration_ns);
    restore_ns.push_back(restored->duration_ns);
    restore_fast_ns.push_back(restored_fast->duration_ns);
  }
  auto line = [&](const char* what, std::vector<int64_t> ns) {
    std::sort(ns.begin(), ns.end());
    const double median = static_cast<double>(ns[ns.size() / 2]);
    auto mbs = [&](double t) { return static_cast<double>(bytes) / 1e6 / (t / 1e9); };
    std::printf(
        "| %u B: %-34s | %llu frames | %.1f MB | %.1f ms | %.0f MB/s | %.0f-%.0f MB/s | %.2f "
        "Mframes/s |\n",
        frame_bytes, what, static_cast<unsigned long long>(frames),
        static_cast<double>(bytes) / 1e6, median / 1e6, mbs(median),
        mbs(static_cast<double>(ns.back())), mbs(static_cast<double>(ns.front())),
        static_cast<double>(frames) / 1e6 / (median / 1e9));
  };
  if (dirty_mb > 0) std::filesystem::remove(dirty);
  line("save from mbufs", save_ns);
  line("restore into mbufs (verify first)", restore_ns);
  line("restore into mbufs (no verify pass)", restore_fast_ns);
  std::filesystem::remove(image);
  node->stop();
  node->wait();
  node.reset();
  rte_mempool_free(src);
}

}  // namespace

int main(int argc, char** argv) {
  int freezes = 100;
  int rounds = 7;
  unsigned dirty_mb = 0;
  unsigned frames = 41'667;         // 62.5 MB of 1500 B frames per pipe
  unsigned small_frames = 150'000;  // of 64 B: as many as the hugepages hold
  std::string dir = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--freezes")) freezes = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--frames-per-pipe"))
      frames = static_cast<unsigned>(std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--small-frames-per-pipe"))
      small_frames = static_cast<unsigned>(std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--dirty-mb"))
      dirty_mb = static_cast<unsigned>(std::atoi(argv[i + 1]));
  }
  amber::bench::BenchEal eal("node_bench", "1536");
  if (!eal.ok()) return 1;
  std::printf("| measure | n | p50 | p99 | max |\n|---|---|---|---|---|\n");
  if (freezes > 0) {
    machine_noise();
    freeze_latency("10us", freezes);
    freeze_latency("off", freezes);
  }
  std::printf(
      "\n| operation (2 pipes), median of %d rounds | frames | frame bytes | time | MB/s | range "
      "over rounds | Mframes/s |\n|---|---|---|---|---|---|---|\n",
      rounds);
  save_restore(frames, 1500, dir, rounds, dirty_mb);
  if (small_frames > 0) save_restore(small_frames, 64, dir, rounds, dirty_mb);
  return 0;
}
