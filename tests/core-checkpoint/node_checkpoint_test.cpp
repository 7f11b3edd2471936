// Checkpointing a running delay node on ring ports: exact replay across
// freeze -> save -> restore into a fresh node with other port names ->
// thaw, refusal of bad images with the node untouched, and queue surgery.
#include "core-checkpoint/node_checkpoint.h"

#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "../dataplane/eal_fixture.h"
#include "config/loader.h"
#include "dataplane/delay_node.h"
#include "dataplane/mbuf_frame.h"

namespace amber::checkpoint {
namespace {

using dataplane::DelayNode;
using dataplane::testing::RingPort;
constexpr int64_t kMs = 1'000'000;

// What left a port: the frame's bytes and its schedule relative to arrival.
struct Departed {
  std::vector<uint8_t> bytes;
  int64_t delay_ns;  // virtual departure - virtual arrival
  bool operator==(const Departed&) const = default;
};

class NodeCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int serial = 0;
    id_ = std::to_string(++serial);
    pool_ = rte_pktmbuf_pool_create(("amb_ck_src" + id_).c_str(), 8191, 0, dataplane::kMbufPrivSize,
                                    RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
    dir_ =
        std::filesystem::temp_directory_path() / ("amb-ck-" + std::to_string(getpid()) + "-" + id_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    node_.reset();
    for (RingPort& p : ports_) dataplane::testing::free_ring_port(p);
    rte_mempool_free(pool_);
    std::filesystem::remove_all(dir_);
  }

  RingPort& port(const std::string& name) {
    ports_.push_back(dataplane::testing::make_ring_port("amb_ck_" + name + id_));
    return ports_.back();
  }

  std::unique_ptr<DelayNode> make_node(RingPort& a, RingPort& b, const std::string& node_id,
                                       const char* pipe = kPipe) {
    std::string text = "node_id: \"" + node_id + "\" link { name: \"l\" port_a: \"" + a.name +
                       "\" port_b: \"" + b.name + "\" a_to_b { " + pipe + " } }";
    auto config = config::parse_node_config(text, "test.conf");
    EXPECT_TRUE(config.is_ok()) << config.status().to_string();
    auto node = DelayNode::create(*config);
    EXPECT_TRUE(node.is_ok()) << node.status().to_string();
    node.value()->start();
    return std::move(node).value();
  }

  void freeze_now(DelayNode& node) {
    Status s = node.freeze_at(node.now_ns() + 50 * kMs);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!node.freeze_latencies().is_ok()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the freeze never took effect";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // Margins of tens of ms: a loaded 2-core machine may take that long to
  // hand the command to the worker, which refuses an instant already past.
  // Returns the thaw instant.
  int64_t thaw_now(DelayNode& node) {
    const int64_t at = node.now_ns() + 50 * kMs;
    Status s = node.thaw_at(at);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return at;
  }

  // Every frame arrives while frozen (one virtual instant), then the node
  // runs: the same schedule in every run whatever the polling did.
  // Returns the thaw instant (0 on failure).
  int64_t start_traffic(DelayNode& node, RingPort& in) {
    freeze_now(node);
    inject(in, kFrames);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while ((*node.stats())[0].pipe.frames_in < kFrames) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the frames never arrived";
        return 0;
      }
    }
    return thaw_now(node);
  }

  // Frames with pseudo-random contents, the same in every run.
  void inject(RingPort& p, int count) {
    uint64_t x = 42;
    for (int i = 0; i < count; ++i) {
      rte_mbuf* m = rte_pktmbuf_alloc(pool_);
      ASSERT_NE(m, nullptr);
      const uint16_t len = static_cast<uint16_t>(64 + (i * 37) % 1400);
      auto* data = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, len));
      for (uint16_t k = 0; k < len; ++k) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        data[k] = static_cast<uint8_t>(x >> 56);
      }
      ASSERT_EQ(rte_ring_enqueue(p.in, m), 0);
    }
  }

  void collect(RingPort& p, std::vector<Departed>& out, size_t until,
               std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < until && std::chrono::steady_clock::now() < deadline) {
      void* item;
      if (rte_ring_dequeue(p.out, &item) != 0) continue;
      auto* m = static_cast<rte_mbuf*>(item);
      const link::Frame* f = dataplane::frame_of(m);
      const uint8_t* data = rte_pktmbuf_mtod(m, const uint8_t*);
      out.push_back(
          {std::vector<uint8_t>(data, data + m->pkt_len), f->departure_ns - f->arrival_ns});
      rte_pktmbuf_free(m);
    }
  }

  // Held long enough that a freeze 60 ms after the thaw finds frames in
  // every stage; every random decision of the model is in play.
  static constexpr const char* kPipe =
      "rate: \"20Mbit\" delay: \"50ms\" jitter: \"2ms\" jitter_distribution: \"normal\" "
      "queue_frames: 2000 gilbert_elliott { p: \"2%\" r: \"30%\" loss_bad: \"50%\" } "
      "reorder: \"2%\" corrupt: \"1%\" duplicate: \"1%\" seed: 99";
  static constexpr int kFrames = 300;

  std::string id_;
  rte_mempool* pool_ = nullptr;
  std::filesystem::path dir_;
  std::deque<RingPort> ports_;  // stable references
  std::unique_ptr<DelayNode> node_;
};

TEST_F(NodeCheckpointTest, RestoredNodeReplaysEveryFrameAtTheSameVirtualTime) {
  // Reference: all frames arrive while frozen (one virtual instant), then
  // the node runs untouched.
  std::vector<Departed> reference;
  {
    RingPort& a = port("ra");
    RingPort& b = port("rb");
    auto node = make_node(a, b, "n1");
    start_traffic(*node, a);
    collect(b, reference, kFrames * 2, std::chrono::milliseconds(1500));
    node->stop();
    node->wait();
  }
  ASSERT_GT(reference.size(), kFrames / 2u);

  // Checkpointed: the same, frozen again mid-flight, saved, restored into a
  // fresh node on other ports, thawed.
  std::vector<Departed> replay;
  const std::string image = (dir_ / "node.img").string();
  uint64_t held_at_save = 0;
  uint64_t saved_clock = 0;
  {
    RingPort& a = port("ca");
    RingPort& b = port("cb");
    auto node = make_node(a, b, "n1");
    const int64_t thawed = start_traffic(*node, a);
    // The second freeze is placed on the virtual timeline, not after the
    // test thread got to it: frames are then held in every stage however
    // loaded the machine is.
    // (After the thaw applied: one freeze at a time.)
    while (node->now_ns() < thawed + kMs) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(node->freeze_at(thawed + 80 * kMs).is_ok());
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!node->freeze_latencies().is_ok()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the freeze never took effect";
      collect(b, replay, kFrames * 2, std::chrono::milliseconds(1));
    }
    collect(b, replay, kFrames * 2, std::chrono::milliseconds(50));  // what left before T
    auto saved = save_node(*node, image);
    ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
    held_at_save = saved->frames;
    saved_clock = node->clock_id();
    node->stop();
    node->wait();
  }
  ASSERT_GT(held_at_save, 20u);
  {
    RingPort& c = port("xa");
    RingPort& d = port("xb");
    auto node = make_node(c, d, "n2");
    // A process started afresh follows a timeline of its own; restored, the
    // image's (what tells a controller a restart from a restore).
    EXPECT_NE(node->clock_id(), saved_clock);
    freeze_now(*node);
    auto refused = restore_node(*node, image);  // another node id
    EXPECT_EQ(refused.status().code(), ErrorCode::kFailedPrecondition);
    EXPECT_NE(refused.status().message().find("n1"), std::string::npos)
        << refused.status().message();
    RestoreOptions options;
    options.allow_other_node = true;
    auto restored = restore_node(*node, image, options);
    ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
    EXPECT_EQ(restored->frames, held_at_save);
    EXPECT_EQ(node->clock_id(), saved_clock);
    thaw_now(*node);
    collect(d, replay, reference.size(), std::chrono::milliseconds(1500));
    node->stop();
    node->wait();
  }
  ASSERT_EQ(replay.size(), reference.size());
  for (size_t i = 0; i < reference.size(); ++i) {
    ASSERT_EQ(replay[i].delay_ns, reference[i].delay_ns) << "frame " << i;
    ASSERT_EQ(replay[i].bytes, reference[i].bytes) << "frame " << i;
  }
}

// A direction aligned to its VM (DelayNode::shift) has a timeline of its
// own: the image records it (the pipe's virtual time) and a restore gives
// it back, so the frames in flight keep their alignment.
TEST_F(NodeCheckpointTest, AShiftedDirectionKeepsItsTimelineThroughSaveAndRestore) {
  const std::string image = (dir_ / "shifted.img").string();
  {
    RingPort& a = port("sa");
    RingPort& b = port("sb");
    auto node = make_node(a, b, "n1", "delay: \"200ms\"");
    const int64_t thawed = start_traffic(*node, a);
    while (node->now_ns() < thawed + kMs) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    auto shifted = node->shift("l", "a_to_b", 7 * kMs);
    ASSERT_TRUE(shifted.is_ok()) << shifted.status().to_string();
    freeze_now(*node);
    auto saved = save_node(*node, image);
    ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
    EXPECT_EQ(saved->frames, static_cast<uint64_t>(kFrames));
    node->stop();
    node->wait();
  }
  RingPort& c = port("ta");
  RingPort& d = port("tb");
  auto node = make_node(c, d, "n1", "delay: \"200ms\"");
  freeze_now(*node);
  auto restored = restore_node(*node, image);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  auto stats = node->stats();
  ASSERT_TRUE(stats.is_ok());
  for (const auto& s : *stats) {
    EXPECT_EQ(s.shift_ns, s.direction == "a_to_b" ? 7 * kMs : 0) << s.direction;
  }
  thaw_now(*node);
  std::vector<Departed> out;
  collect(d, out, kFrames, std::chrono::milliseconds(3000));
  ASSERT_EQ(out.size(), static_cast<size_t>(kFrames));
  for (const Departed& f : out) ASSERT_EQ(f.delay_ns, 200 * kMs);
  node->stop();
  node->wait();
}

// Issue #17: events still pending at a freeze are in the image; restored
// into a fresh node they fire at their virtual instants, once: frames
// arriving before the first get the old delay, after it the new one, after
// the second ("down") none leave and each is counted as link_down.
TEST_F(NodeCheckpointTest, AnEventPendingAtTheSaveFiresAfterTheRestoreAtItsVirtualInstant) {
  const std::string image = (dir_ / "events.img").string();
  constexpr const char* kLink = "rate: \"1Gbit\" queue_frames: 1000 delay: \"20ms\"";
  int64_t set_at = 0, down_at = 0;
  {
    RingPort& a = port("ea");
    RingPort& b = port("eb");
    auto node = make_node(a, b, "n1", kLink);
    auto now = node->virtual_at(node->now_ns());
    ASSERT_TRUE(now.is_ok()) << now.status().to_string();
    set_at = *now + 300 * kMs;
    down_at = set_at + 150 * kMs;
    Status s = node->schedule_events(
        "l", "a_to_b",
        {*link::parse_link_event(set_at, "delay=60ms"), *link::parse_link_event(down_at, "down")});
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    freeze_now(*node);  // 50 ms ahead: both events still pending
    auto saved = save_node(*node, image);
    ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
    node->stop();
    node->wait();
  }
  RingPort& c = port("fa");
  RingPort& d = port("fb");
  auto node = make_node(c, d, "n1", kLink);
  freeze_now(*node);
  auto restored = restore_node(*node, image);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  ASSERT_LT(restored->virtual_now_ns, set_at);
  auto stats = node->stats();
  ASSERT_TRUE(stats.is_ok());
  const dataplane::DirectionStats& s = (*stats)[0];
  ASSERT_EQ(s.direction, "a_to_b");
  ASSERT_EQ(s.pending_events, 2u);
  EXPECT_EQ(s.next_events[0].at_ns, set_at);
  EXPECT_EQ(s.next_events[1].at_ns, down_at);
  EXPECT_EQ(s.config.delay_ns, 20 * kMs);

  // A frame every 5 ms from the thaw, across both instants.
  thaw_now(*node);
  int sent = 0;
  const int64_t until = set_at - restored->virtual_now_ns + 300 * kMs;  // after the down
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::nanoseconds(until + 50 * kMs)) {
    inject(c, 1);
    ++sent;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<std::pair<int64_t, int64_t>> left;  // virtual arrival, departure
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < deadline) {
    void* item;
    if (rte_ring_dequeue(d.out, &item) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    auto* m = static_cast<rte_mbuf*>(item);
    const link::Frame* f = dataplane::frame_of(m);
    left.emplace_back(f->arrival_ns, f->departure_ns);
    rte_pktmbuf_free(m);
  }
  size_t before = 0, between = 0;
  for (const auto& [arrival, departure] : left) {
    ASSERT_LT(arrival, down_at) << "a frame arriving while down left";
    const int64_t delay = departure - arrival;  // the delay, plus 1.6 us of serialization
    if (arrival < set_at) {
      ++before;
      EXPECT_GE(delay, 20 * kMs);
      EXPECT_LT(delay, 20 * kMs + 100'000);
    } else {
      ++between;
      EXPECT_GE(delay, 60 * kMs);
      EXPECT_LT(delay, 60 * kMs + 100'000);
    }
  }
  EXPECT_GT(before, 10u);
  EXPECT_GT(between, 10u);
  stats = node->stats();
  ASSERT_TRUE(stats.is_ok());
  const dataplane::DirectionStats& after = (*stats)[0];
  EXPECT_EQ(after.pending_events, 0u);
  EXPECT_TRUE(after.config.down);
  EXPECT_EQ(after.config.delay_ns, 60 * kMs);
  const uint64_t link_down =
      after.pipe.frames_dropped[static_cast<size_t>(link::DropCause::kLinkDown)];
  EXPECT_GT(link_down, 10u);
  EXPECT_EQ(link_down + left.size(), static_cast<size_t>(sent));
  node->stop();
  node->wait();
}

// Frames the pipe let go but the port could not take yet (a stopped VM's
// ring is full) are in the image: a restore loses none of them.
TEST_F(NodeCheckpointTest, FramesWaitingForTheTxPortAreSavedAndRestored) {
  RingPort& a = port("pa");
  RingPort& b = port("pb");
  // The out ring has room for 10 frames: the rest wait in the node.
  std::vector<rte_mbuf*> filler;
  rte_mempool* filler_pool = rte_pktmbuf_pool_create(("amb_ck_fill" + id_).c_str(), 8191, 0,
                                                     dataplane::kMbufPrivSize, 128, 0);
  ASSERT_NE(filler_pool, nullptr);
  while (rte_ring_free_count(b.out) > 10) {
    rte_mbuf* m = rte_pktmbuf_alloc(filler_pool);
    ASSERT_NE(m, nullptr);
    ASSERT_EQ(rte_ring_enqueue(b.out, m), 0);
    filler.push_back(m);
  }
  constexpr int kSent = 200;
  uint64_t held = 0;
  const std::string image = (dir_ / "pending.img").string();
  {
    auto node = make_node(a, b, "n1", "delay: \"1ms\" seed: 7");
    freeze_now(*node);
    inject(a, kSent);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while ((*node->stats())[0].pipe.frames_in < kSent) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    }
    thaw_now(*node);
    // Every frame is due 1 ms after the thaw; wait until the node holds
    // frames for the port (it retries them) and the ring is full.
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (rte_ring_free_count(b.out) > 0 || (*node->stats())[0].tx_pending == 0) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "nothing waits for the port";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    freeze_now(*node);
    auto saved = save_node(*node, image);
    ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
    held = saved->frames;
    node->stop();
    node->wait();
  }
  EXPECT_EQ(held, static_cast<uint64_t>(kSent - 10));
  std::vector<Departed> first;
  for (rte_mbuf* m : filler) {
    void* item;
    ASSERT_EQ(rte_ring_dequeue(b.out, &item), 0);
    ASSERT_EQ(item, m);
    rte_pktmbuf_free(m);
  }
  rte_mempool_free(filler_pool);
  collect(b, first, 10, std::chrono::milliseconds(100));
  ASSERT_EQ(first.size(), 10u);
  std::vector<Departed> rest;
  link::PipeCounters counters;
  {
    RingPort& c = port("pc");
    RingPort& d = port("pd");
    auto node = make_node(c, d, "n1", "delay: \"1ms\" seed: 7");
    freeze_now(*node);
    auto restored = restore_node(*node, image);
    ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
    EXPECT_EQ(restored->frames, held);
    thaw_now(*node);
    collect(d, rest, kSent, std::chrono::milliseconds(1000));
    counters = (*node->stats())[0].pipe;
    node->stop();
    node->wait();
  }
  // Together, every frame sent, once, in order.
  ASSERT_EQ(first.size() + rest.size(), static_cast<size_t>(kSent));
  std::vector<Departed> reference;
  {
    RingPort& e = port("pe");
    RingPort& f = port("pf");
    auto plain = make_node(e, f, "n3", "delay: \"1ms\" seed: 7");
    start_traffic(*plain, e);
    collect(f, reference, kSent, std::chrono::milliseconds(1000));
    plain->stop();
    plain->wait();
  }
  ASSERT_EQ(reference.size(), static_cast<size_t>(kSent));
  for (size_t i = 0; i < reference.size(); ++i) {
    const Departed& got = i < first.size() ? first[i] : rest[i - first.size()];
    ASSERT_EQ(got.bytes, reference[i].bytes) << "frame " << i;
  }
  EXPECT_EQ(counters.frames_in, static_cast<uint64_t>(kSent));
  EXPECT_EQ(counters.frames_out, static_cast<uint64_t>(kSent)) << "a frame counted out twice";
}

TEST_F(NodeCheckpointTest, BadImagesAreRefusedAndTheNodeKeepsItsFrames) {
  RingPort& a = port("ba");
  RingPort& b = port("bb");
  node_ = make_node(a, b, "n1");
  freeze_now(*node_);
  inject(a, 50);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string image = (dir_ / "good.img").string();
  auto saved = save_node(*node_, image);
  ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
  // A truncated copy.
  const std::string cut = (dir_ / "cut.img").string();
  std::filesystem::copy_file(image, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(image) / 2);
  auto r = restore_node(*node_, cut);
  EXPECT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("cut.img"), std::string::npos) << r.status().message();
  auto stats = node_->stats();
  ASSERT_TRUE(stats.is_ok());
  EXPECT_EQ((*stats)[0].held_frames, saved->frames);  // untouched
  // Missing file, and a file that is not an image.
  EXPECT_FALSE(restore_node(*node_, (dir_ / "missing.img").string()).is_ok());
  std::ofstream((dir_ / "text.img").string()) << "not an image";
  EXPECT_FALSE(restore_node(*node_, (dir_ / "text.img").string()).is_ok());
  // The good image restores onto the same node.
  auto ok = restore_node(*node_, image);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->frames, saved->frames);
  thaw_now(*node_);
}

TEST_F(NodeCheckpointTest, SurgeryListsDropsReplacesAndInjectsOnlyWhileFrozen) {
  RingPort& a = port("sa");
  RingPort& b = port("sb");
  node_ = make_node(a, b, "n1");
  EXPECT_EQ(list_frames(*node_, "l", "a_to_b", 0, 0, false).status().code(),
            ErrorCode::kFailedPrecondition);  // not frozen
  freeze_now(*node_);
  inject(a, 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto listing = list_frames(*node_, "l", "a_to_b", 0, 0, true);
  ASSERT_TRUE(listing.is_ok()) << listing.status().to_string();
  size_t held = listing->total;
  ASSERT_GE(held, 8u);  // a few may be lost by the loss model
  EXPECT_FALSE(listing->frames[0].summary.empty());
  ASSERT_TRUE(drop_frame(*node_, "l", "a_to_b", 0).is_ok());
  std::vector<uint8_t> replacement(100, 0xab);
  ASSERT_TRUE(replace_frame(*node_, "l", "a_to_b", 0, replacement).is_ok());
  std::vector<uint8_t> injected(80, 0xcd);
  ASSERT_TRUE(inject_frame(*node_, "l", "a_to_b", injected, std::nullopt,
                           listing->virtual_now_ns + 500 * kMs)
                  .is_ok());
  EXPECT_EQ(inject_frame(*node_, "l", "a_to_b", injected, 0, 5).code(),
            ErrorCode::kInvalidArgument);  // both a position and a time
  EXPECT_EQ(drop_frame(*node_, "l", "a_to_b", 999).code(), ErrorCode::kOutOfRange);
  EXPECT_EQ(drop_frame(*node_, "nolink", "a_to_b", 0).code(), ErrorCode::kNotFound);
  auto after = list_frames(*node_, "l", "a_to_b", 0, 0, true);
  ASSERT_TRUE(after.is_ok());
  EXPECT_EQ(after->total, held);  // one dropped, one injected
  EXPECT_EQ(after->frames[0].bytes, replacement);
  EXPECT_EQ(after->frames.back().bytes, injected);
  thaw_now(*node_);
  std::vector<Departed> out;
  collect(b, out, held, std::chrono::milliseconds(2000));
  ASSERT_EQ(out.size(), held);
  EXPECT_EQ(out.back().bytes, injected);
  auto stats = node_->stats();
  ASSERT_TRUE(stats.is_ok());
  EXPECT_EQ((*stats)[0].pipe.frames_dropped[size_t(link::DropCause::kRemoved)], 1u);
}

}  // namespace
}  // namespace amber::checkpoint

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (geteuid() != 0) {
    std::fprintf(stderr, "SKIPPED: the EAL tests need root (hugepages)\n");
    return 77;
  }
  std::string prefix = "amb-ck-test-" + std::to_string(getpid());
  const char* eal[] = {"node_checkpoint_test",
                       "-l",
                       "0-1",
                       "--no-pci",
                       "--in-memory",
                       "--file-prefix",
                       prefix.c_str(),
                       "--log-level",
                       "lib.eal:error",
                       "-m",
                       "512"};
  if (rte_eal_init(static_cast<int>(sizeof eal / sizeof eal[0]), const_cast<char**>(eal)) < 0) {
    std::fprintf(stderr, "SKIPPED: EAL init failed (are hugepages reserved? scripts/setup.sh)\n");
    return 77;
  }
  int rc = RUN_ALL_TESTS();
  rte_eal_cleanup();
  std::filesystem::remove_all("/var/run/dpdk/" + prefix);
  return rc;
}
