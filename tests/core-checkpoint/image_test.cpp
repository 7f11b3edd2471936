#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "core-checkpoint/checkpoint.h"
#include "core-checkpoint/convert.h"
#include "core-checkpoint/crc32c.h"
#include "image_fixture.h"
#include "proto/image.pb.h"

namespace amber::checkpoint {
namespace {

using testing::FrozenNode;
using testing::NodeSpec;
using testing::TempDir;

struct ReadBack {
  std::vector<std::vector<FrameRecord>> records;
  std::vector<std::vector<std::vector<uint8_t>>> bytes;
};

ReadBack read_all(ImageReader& reader) {
  ReadBack out;
  out.records.resize(reader.pipes().size());
  out.bytes.resize(reader.pipes().size());
  size_t pipe;
  FrameRecord r;
  while (true) {
    auto more = reader.next_frame(&pipe, &r);
    EXPECT_TRUE(more.is_ok()) << more.status().to_string();
    if (!more || !*more) break;
    out.records[pipe].push_back(r);
    out.bytes[pipe].emplace_back(r.bytes.begin(), r.bytes.end());
  }
  return out;
}

void expect_same_frame(const link::Frame& want, const FrameRecord& got) {
  EXPECT_EQ(got.stage, want.stage);
  EXPECT_EQ(got.express, want.express);
  EXPECT_EQ(got.arrival_ns, want.arrival_ns);
  EXPECT_EQ(got.extra_delay_ns, want.extra_delay_ns);
  EXPECT_EQ(got.ready_ns, want.ready_ns);
  EXPECT_EQ(got.departure_ns, want.departure_ns);
  EXPECT_EQ(got.bytes.size(), want.length);
}

TEST(Image, RoundTripKeepsNodePipesStateAndEveryFrame) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node();
  const std::string path = dir.file("node.img");
  ASSERT_TRUE(write_image(node, path).is_ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto reader = ImageReader::open(path, "delay-node-1");
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  EXPECT_EQ(reader->node(), node.node);
  ASSERT_EQ(reader->pipes().size(), node.held.size());
  for (size_t p = 0; p < node.held.size(); ++p) EXPECT_EQ(reader->pipes()[p], node.held[p].info);

  ReadBack back = read_all(*reader);
  std::map<link::FrameStage, int> stages;
  for (size_t p = 0; p < node.held.size(); ++p) {
    ASSERT_EQ(back.records[p].size(), node.held[p].frames.size());
    for (size_t i = 0; i < back.records[p].size(); ++i) {
      expect_same_frame(node.held[p].frames[i], back.records[p][i]);
      EXPECT_EQ(back.bytes[p][i], node.held[p].bytes[i]) << "pipe " << p << " frame " << i;
      ++stages[back.records[p][i].stage];
    }
  }
  // The fixture's node holds frames in every stage, so all are exercised.
  EXPECT_GT(stages[link::FrameStage::kBottleneck], 0);
  EXPECT_GT(stages[link::FrameStage::kDelayLine], 0);
  EXPECT_GT(stages[link::FrameStage::kExpress], 0);
  EXPECT_TRUE(verify_image(path).is_ok());
}

// #16 defect 6: an image holds the experiment's frames: its owner's only,
// whatever the umask.
TEST(Image, FileIsReadableByItsOwnerOnly) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node();
  const std::string path = dir.file("node.img");
  const mode_t umask_was = ::umask(0);
  Status written = write_image(node, path);
  ::umask(umask_was);
  ASSERT_TRUE(written.is_ok()) << written.to_string();
  EXPECT_EQ(std::filesystem::status(path).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(Image, SmallChunksSpanManyBatchesAndStillRoundTrip) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 300, .pipes = 3});
  const std::string path = dir.file("small-chunks.img");
  ASSERT_TRUE(write_image(node, path, {.sync = false, .chunk_bytes = 4096}).is_ok());
  EXPECT_GT(std::filesystem::file_size(path), 40u * 4096);
  auto reader = ImageReader::open(path, std::nullopt);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  ReadBack back = read_all(*reader);
  for (size_t p = 0; p < node.held.size(); ++p) {
    ASSERT_EQ(back.bytes[p].size(), node.held[p].bytes.size());
    EXPECT_EQ(back.bytes[p], node.held[p].bytes);
  }
}

void expect_restored_pipes_depart_at_the_same_virtual_time(const NodeSpec& spec,
                                                           int64_t run_ns = 50'000'000) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node(spec);
  const std::string path = dir.file("restore.img");
  ASSERT_TRUE(write_image(node, path).is_ok());

  auto reader = ImageReader::open(path, "delay-node-1");
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  std::vector<link::Pipe> restored;
  for (const PipeInfo& info : reader->pipes()) {
    auto pipe = restore_pipe(info);
    ASSERT_TRUE(pipe.is_ok()) << pipe.status().to_string();
    restored.push_back(std::move(pipe).value());
  }
  // Restored frames with their bytes, as the dataplane's mbufs would be.
  std::vector<std::vector<link::Frame>> frames(restored.size());
  std::vector<std::vector<std::vector<uint8_t>>> bytes(restored.size());
  for (size_t p = 0; p < restored.size(); ++p) {
    frames[p].resize(reader->pipes()[p].frames);
    bytes[p].resize(reader->pipes()[p].frames);
  }
  std::vector<size_t> next(restored.size(), 0);
  size_t pipe;
  FrameRecord r;
  while (true) {
    auto more = reader->next_frame(&pipe, &r);
    ASSERT_TRUE(more.is_ok()) << more.status().to_string();
    if (!*more) break;
    link::Frame& f = frames[pipe][next[pipe]];
    apply_record(r, &f);
    bytes[pipe][next[pipe]].assign(r.bytes.begin(), r.bytes.end());
    ++next[pipe];
    ASSERT_TRUE(restored[pipe].restore_frame(f).is_ok());
  }

  // Both the original and the restored pipes now see the same future: new
  // arrivals after the freeze, and time running until they are empty.
  const int64_t freeze = node.node.virtual_now_ns;
  for (size_t p = 0; p < restored.size(); ++p) {
    EXPECT_EQ(restored[p].state(), node.pipes[p].state());
    EXPECT_EQ(restored[p].held_frames(), node.pipes[p].held_frames());
    std::vector<link::Frame> later_a(100), later_b(100);
    struct Departure {
      int64_t at;
      uint32_t length;
      bool operator==(const Departure&) const = default;
    };
    std::vector<Departure> out_a, out_b;
    link::Frame* burst[32];
    for (int64_t t = freeze, k = 0; t < freeze + run_ns; t += 1'000) {
      if (k < 100 && t >= freeze + k * 3'000) {
        later_a[k].length = later_b[k].length = static_cast<uint32_t>(64 + k * 13);
        auto va = node.pipes[p].enqueue(later_a[k], t);
        auto vb = restored[p].enqueue(later_b[k], t);
        EXPECT_EQ(va.accepted, vb.accepted);
        ++k;
      }
      for (unsigned n; (n = node.pipes[p].dequeue(t, burst, 32)) > 0;) {
        for (unsigned i = 0; i < n; ++i)
          out_a.push_back({burst[i]->departure_ns, burst[i]->length});
      }
      for (unsigned n; (n = restored[p].dequeue(t, burst, 32)) > 0;) {
        for (unsigned i = 0; i < n; ++i)
          out_b.push_back({burst[i]->departure_ns, burst[i]->length});
      }
    }
    EXPECT_GT(out_a.size(), node.held[p].frames.size());
    EXPECT_TRUE(out_a == out_b) << "pipe " << p << ": departures differ after restore";
    EXPECT_EQ(restored[p].state(), node.pipes[p].state());
  }
}

TEST(Image, RestoredPipesDepartEveryFrameAtTheSameVirtualTime) {
  expect_restored_pipes_depart_at_the_same_virtual_time({.frames_per_pipe = 400});
}

TEST(Image, ScheduledPipesRestoreWithTheirPositionAndTheSameFuture) {
  // The trace allows 19.2 Mbit/s: 300 ms to send what the pipes hold.
  expect_restored_pipes_depart_at_the_same_virtual_time({.frames_per_pipe = 400, .scheduled = true},
                                                        300'000'000);
}

TEST(Image, ScheduleAndPositionRoundTrip) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 300, .scheduled = true});
  const std::string path = dir.file("scheduled.img");
  ASSERT_TRUE(write_image(node, path).is_ok());
  auto reader = ImageReader::open(path, std::nullopt);
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  for (size_t p = 0; p < node.held.size(); ++p) {
    const PipeInfo& info = reader->pipes()[p];
    EXPECT_EQ(info, node.held[p].info);
    ASSERT_TRUE(info.config.schedule);
    EXPECT_EQ(info.config.schedule->trace->ms.size(), 8u);
    // Frozen in the second segment, part-way through the trace.
    EXPECT_EQ(info.state.schedule.segment, 1u);
    EXPECT_TRUE(info.state.schedule.started);
    EXPECT_GT(info.state.schedule.trace_index + info.state.schedule.trace_loops, 0u);
  }
}

TEST(Image, HandEncodedBatchesAreProtobufWireFormat) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 50, .pipes = 1});
  const std::string path = dir.file("wire.img");
  ASSERT_TRUE(write_image(node, path).is_ok());
  std::vector<uint8_t> file = testing::read_file(path);
  size_t at = 16;
  std::vector<image::Chunk> chunks;
  while (at + 8 <= file.size()) {
    uint32_t len = file[at] | file[at + 1] << 8 | file[at + 2] << 16 | uint32_t{file[at + 3]} << 24;
    image::Chunk c;
    ASSERT_TRUE(c.ParseFromArray(file.data() + at + 8, static_cast<int>(len)));
    chunks.push_back(c);
    at += 8 + len;
  }
  EXPECT_EQ(at, file.size());
  ASSERT_EQ(chunks.size(), 3u);
  ASSERT_TRUE(chunks[0].has_header());
  ASSERT_TRUE(chunks[1].has_frames());
  ASSERT_TRUE(chunks[2].has_trailer());
  const image::FrameBatch& batch = chunks[1].frames();
  ASSERT_EQ(static_cast<size_t>(batch.frames_size()), node.held[0].frames.size());
  for (int i = 0; i < batch.frames_size(); ++i) {
    const image::Frame& f = batch.frames(i);
    const link::Frame& want = node.held[0].frames[i];
    EXPECT_EQ(f.stage(), static_cast<int>(want.stage));
    EXPECT_EQ(f.arrival_ns(), want.arrival_ns);
    EXPECT_EQ(f.extra_delay_ns(), want.extra_delay_ns);
    EXPECT_EQ(f.departure_ns(), want.departure_ns);
    EXPECT_EQ(std::vector<uint8_t>(f.data().begin(), f.data().end()), node.held[0].bytes[i]);
  }
  EXPECT_EQ(chunks[2].trailer().total_frames(), node.held[0].frames.size());
}

TEST(Image, FramesGivenInSegmentsReadBackWhole) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 30, .pipes = 1});
  const std::string path = dir.file("segments.img");
  auto writer = ImageWriter::create(path, node.node, node.infos());
  ASSERT_TRUE(writer.is_ok());
  for (size_t i = 0; i < node.held[0].frames.size(); ++i) {
    const std::vector<uint8_t>& b = node.held[0].bytes[i];
    // Three pieces, the middle one empty, as an mbuf chain may have.
    const size_t cut = b.size() / 3;
    const std::span<const uint8_t> pieces[] = {
        std::span(b).first(cut), {}, std::span(b).subspan(cut)};
    ASSERT_TRUE(writer->add_frame(0, record_of(node.held[0].frames[i]), pieces).is_ok());
  }
  ASSERT_TRUE(writer->finish().is_ok());
  auto reader = ImageReader::open(path, std::nullopt);
  ASSERT_TRUE(reader.is_ok());
  ReadBack back = read_all(*reader);
  EXPECT_EQ(back.bytes[0], node.held[0].bytes);
}

TEST(Image, NodeWithoutFramesOrPipesRoundTrips) {
  TempDir dir;
  NodeInfo n{"empty-node", 1, 2, 3, "v"};
  for (size_t pipes : {0, 2}) {
    std::vector<PipeInfo> infos(pipes);
    for (auto& i : infos) i.state.rng = {1, 2, 3, 4};
    const std::string path = dir.file(cat("empty", pipes, ".img"));
    auto writer = ImageWriter::create(path, n, infos);
    ASSERT_TRUE(writer.is_ok()) << writer.status().to_string();
    ASSERT_TRUE(writer->finish().is_ok());
    auto reader = ImageReader::open(path, "empty-node");
    ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
    EXPECT_EQ(reader->pipes().size(), pipes);
    size_t p;
    FrameRecord r;
    auto more = reader->next_frame(&p, &r);
    ASSERT_TRUE(more.is_ok()) << more.status().to_string();
    EXPECT_FALSE(*more);
  }
}

TEST(ImageWriter, RefusesFramesBeyondTheDeclaredCountsAndLeavesNoFile) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 20});
  const std::string path = dir.file("refused.img");
  {
    auto infos = node.infos();
    infos[0].frames -= 1;
    auto writer = ImageWriter::create(path, node.node, infos);
    ASSERT_TRUE(writer.is_ok());
    Status last;
    for (size_t i = 0; i < node.held[0].frames.size() && last.is_ok(); ++i) {
      FrameRecord r = record_of(node.held[0].frames[i]);
      r.bytes = node.held[0].bytes[i];
      last = writer->add_frame(0, r);
    }
    EXPECT_EQ(last.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(last.message().find("declared"), std::string::npos) << last.message();
    EXPECT_FALSE(writer->finish().is_ok());  // the writer stays failed
    EXPECT_TRUE(std::filesystem::exists(path + ".tmp"));
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp")) << "the destructor removes the tmp file";
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(ImageWriter, FinishRefusesMissingFramesAndKeepsThePreviousImage) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 20});
  const std::string path = dir.file("keep.img");
  testing::write_file(path, {'o', 'l', 'd'});
  {
    auto writer = ImageWriter::create(path, node.node, node.infos());
    ASSERT_TRUE(writer.is_ok());
    FrameRecord r = record_of(node.held[0].frames[0]);
    r.bytes = node.held[0].bytes[0];
    ASSERT_TRUE(writer->add_frame(0, r).is_ok());
    Status s = writer->finish();
    EXPECT_EQ(s.code(), ErrorCode::kFailedPrecondition);
    EXPECT_NE(s.message().find("pipe 0 (link0 a_to_b) declared"), std::string::npos) << s.message();
  }
  EXPECT_EQ(testing::read_file(path), (std::vector<uint8_t>{'o', 'l', 'd'}));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(ImageWriter, RefusesPipesOutOfOrderAndOversizedFrames) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 20});
  {
    auto writer = ImageWriter::create(dir.file("order.img"), node.node, node.infos());
    ASSERT_TRUE(writer.is_ok());
    FrameRecord r = record_of(node.held[1].frames[0]);
    r.bytes = node.held[1].bytes[0];
    ASSERT_TRUE(writer->add_frame(1, r).is_ok());
    Status s = writer->add_frame(0, r);
    EXPECT_NE(s.message().find("pipes must come in order"), std::string::npos) << s.message();
  }
  {
    auto writer = ImageWriter::create(dir.file("big.img"), node.node, node.infos(),
                                      {.max_frame_bytes = 1000});
    ASSERT_TRUE(writer.is_ok());
    std::vector<uint8_t> big(1001);
    FrameRecord r;
    r.bytes = big;
    Status s = writer->add_frame(0, r);
    EXPECT_NE(s.message().find("beyond max_frame_bytes 1000"), std::string::npos) << s.message();
  }
  auto bad = ImageWriter::create(dir.file("x/y/z.img"), node.node, node.infos());
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("x/y/z.img.tmp"), std::string::npos);
}

TEST(ImageWriter, ACrashDuringSaveLeavesNoImageUnderTheFinalName) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 100});
  const std::string path = dir.file("crash.img");
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child dies mid-save: no destructor, no finish().
    auto writer = ImageWriter::create(path, node.node, node.infos(), {.chunk_bytes = 4096});
    for (size_t i = 0; writer.is_ok() && i < node.held[0].frames.size(); ++i) {
      FrameRecord r = record_of(node.held[0].frames[i]);
      r.bytes = node.held[0].bytes[i];
      if (!writer->add_frame(0, r)) break;
    }
    ::_exit(writer.is_ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_TRUE(std::filesystem::exists(path + ".tmp"));
  Status s = verify_image(path + ".tmp");
  EXPECT_EQ(s.code(), ErrorCode::kDataLoss) << s.to_string();
  // The next save replaces the leftover.
  ASSERT_TRUE(testing::write_image(node, path).is_ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_TRUE(verify_image(path).is_ok());
}

TEST(Image, CapacityIsCheckedFromTheHeaderAlone) {
  TempDir dir;
  FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 50});
  const std::string path = dir.file("capacity.img");
  ASSERT_TRUE(write_image(node, path, {.max_frame_bytes = 2048}).is_ok());
  auto reader = ImageReader::open(path, std::nullopt);
  ASSERT_TRUE(reader.is_ok());
  const uint64_t frames = reader->total_frames();
  EXPECT_EQ(reader->max_frame_bytes(), 2048u);
  EXPECT_TRUE(check_capacity(*reader, frames, 2048).is_ok());
  Status short_of_one = check_capacity(*reader, frames - 1, 2048);
  EXPECT_EQ(short_of_one.code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(short_of_one.message().find(cat("only ", frames - 1, " are free")), std::string::npos)
      << short_of_one.message();
  // Buffers smaller than the largest frame: chains, counted conservatively.
  EXPECT_FALSE(check_capacity(*reader, frames, 1024).is_ok());
}

TEST(Convert, PipeConfigRoundTripsEveryLossModelAndLimit) {
  std::vector<link::PipeConfig> configs(5);
  configs[1].loss = link::RandomLoss{0.25};
  configs[1].queue_limit_frames.reset();
  configs[1].rate_bps = 0;
  configs[2].loss = link::GilbertElliottLoss{0.1, 0.2, 0.3, 0.4};
  configs[2].rate_bps = 10'000'000'000;
  configs[2].queue_limit_bytes = 1 << 20;
  configs[2].jitter_ns = 7;
  configs[2].jitter_distribution = link::JitterDistribution::kNormal;
  configs[3].loss = link::MarkovLoss{0.1, 0.2, 0.3, 0.4, 0.5};
  configs[3].duplicate = 0.01;
  configs[3].corrupt = 0.02;
  configs[3].reorder = 0.03;
  configs[3].seed = 99;
  configs[4].rate_bps = 100'000'000;
  configs[4].overhead_bytes = 24;
  configs[4].delay_ns = 100'000'000;
  for (const auto& c : configs) {
    ASSERT_TRUE(c.validate().is_ok()) << link::describe(c);
    image::PipeConfig m;
    to_proto(c, &m);
    auto back = from_proto(m);
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    EXPECT_EQ(*back, c) << link::describe(c);
  }
}

TEST(Convert, InvalidMessagesAreRefusedNamingTheField) {
  image::PipeConfig m;
  m.set_delay_ns(-5);
  auto c = from_proto(m);
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("delay_ns"), std::string::npos);

  image::PipeState s;
  s.add_rng(1);
  auto st = from_proto(s);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.status().message().find("state.rng: expected 4 words, found 1"), std::string::npos)
      << st.status().message();
}

TEST(Convert, SchedulesRoundTripAndBadPositionsAreRefused) {
  link::PipeConfig c;
  link::Schedule schedule;
  link::DeliveryTrace trace;
  trace.ms = {0, 0, 3, 7, 7, 100000};
  trace.opportunity_bytes = 1514;
  trace.header_bytes = 0;
  trace.source = "x.trace";
  schedule.trace = trace;
  schedule.segments = {
      link::Segment{
          .duration_ns = 5, .delay_ns = 1, .loss = link::MarkovLoss{0.1, 0.2, 0.3, 0.4, 0.5}},
      link::Segment{.duration_ns = 6, .loss = link::NoLoss{}, .queue_limit_bytes = 9000},
      link::Segment{.duration_ns = 7, .jitter_ns = 2, .queue_limit_frames = 3}};
  schedule.at_end = link::ScheduleEnd::kHoldLast;
  schedule.start = link::ScheduleStart::kFirstFrame;
  c.schedule = link::ScheduleRef(schedule);
  ASSERT_TRUE(c.validate().is_ok()) << c.validate().to_string();
  image::PipeConfig m;
  to_proto(c, &m);
  auto back = from_proto(m);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(*back, c);
  EXPECT_EQ(back->schedule->segments[1].loss, link::LossConfig{link::NoLoss{}});
  EXPECT_FALSE(back->schedule->segments[2].loss.has_value());
  EXPECT_EQ(back->schedule->start, link::ScheduleStart::kFirstFrame);
  m.mutable_schedule()->set_start(static_cast<image::ScheduleStart>(7));
  EXPECT_NE(from_proto(m).status().message().find("schedule.start: unknown value 7"),
            std::string::npos);

  PipeInfo info;
  info.config = c;
  info.state.rng = {1, 2, 3, 4};
  info.state.schedule = {.started = true, .segment = 2, .trace_index = 5, .surplus_bytes = 1514};
  image::Pipe pm;
  to_proto(info, &pm);
  auto ok = from_proto(pm);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->state.schedule, info.state.schedule);
  info.state.schedule.segment = 3;
  to_proto(info, &pm);
  EXPECT_NE(from_proto(pm).status().message().find("state.schedule.segment: 3 of 3 segments"),
            std::string::npos);
  info.state.schedule.segment = 0;
  info.state.schedule.trace_index = 6;
  to_proto(info, &pm);
  EXPECT_NE(from_proto(pm).status().message().find("trace_index: 6 of 6"), std::string::npos);
}

TEST(Convert, PipeStateRoundTrips) {
  link::PipeState s;
  s.rng = {1, 2, 0xffffffffffffffffull, 4};
  s.loss_state = 3;
  s.link_free_ns = 123;
  s.serialization_carry = 7;
  s.counters.frames_in = 10;
  s.counters.frames_dropped = {1, 2, 3};
  s.counters.bytes_dropped = {4, 5, 6};
  s.counters.reordered = 9;
  s.schedule = {true, false, 11, 2, 13, 14, 15, 16, 17, 18};
  image::PipeState m;
  to_proto(s, &m);
  auto back = from_proto(m);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(*back, s);
}

TEST(Convert, PendingEventsAndALinkDownRoundTripAndBadOnesAreRefused) {
  PipeInfo info;
  info.config.delay_ns = 5;
  info.config.down = true;
  info.state.rng = {1, 2, 3, 4};
  info.state.counters.frames_dropped[static_cast<size_t>(link::DropCause::kLinkDown)] = 7;
  auto up = link::parse_link_event(100, "up");
  auto set = link::parse_link_event(200, "delay=30ms loss=2% queue_bytes=64KiB");
  ASSERT_TRUE(up.is_ok() && set.is_ok());
  info.state.events = {*up, *set, *set};
  image::Pipe pm;
  to_proto(info, &pm);
  auto back = from_proto(pm);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_TRUE(back->config.down);
  EXPECT_EQ(back->state, info.state);

  // Out of order; an unknown kind; an event the configuration cannot take.
  pm.mutable_state()->mutable_events(0)->set_at_ns(300);
  EXPECT_NE(from_proto(pm).status().message().find(
                "state.events[1]: at 200 ns, before the one above (300 ns)"),
            std::string::npos);
  pm.mutable_state()->mutable_events(0)->set_at_ns(100);
  pm.mutable_state()->mutable_events(0)->set_kind(static_cast<image::LinkEventKind>(9));
  EXPECT_NE(from_proto(pm).status().message().find("state.events[0].kind: unknown value 9"),
            std::string::npos);
  info.config.queue_limit_frames.reset();
  info.state.events = {*link::parse_link_event(100, "rate=1Mbit")};
  to_proto(info, &pm);
  EXPECT_NE(from_proto(pm).status().message().find("state.events: event at 100 ns"),
            std::string::npos)
      << from_proto(pm).status().message();
  // A start keeps its kind; without a schedule to start it is refused.
  info.state.events = {*link::parse_link_event(100, "start")};
  to_proto(info, &pm);
  EXPECT_NE(from_proto(pm).status().message().find("no schedule to start"), std::string::npos)
      << from_proto(pm).status().message();
  link::Schedule schedule;
  schedule.segments = {link::Segment{.duration_ns = 10, .delay_ns = 20}};
  schedule.start = link::ScheduleStart::kOnEvent;
  info.config.schedule = link::ScheduleRef(schedule);
  to_proto(info, &pm);
  auto started = from_proto(pm);
  ASSERT_TRUE(started.is_ok()) << started.status().to_string();
  EXPECT_EQ(started->state.events, info.state.events);
  EXPECT_EQ(started->config.schedule->start, link::ScheduleStart::kOnEvent);
}

TEST(Crc32c, MatchesTheStandardCheckValueAndContinues) {
  const char* text = "123456789";
  EXPECT_EQ(crc32c(text, 9), 0xe3069283u);
  EXPECT_EQ(crc32c(text + 4, 5, crc32c(text, 4)), 0xe3069283u);
}

TEST(Crc32c, LargeBuffersTakeTheParallelPathWithTheSameResult) {
  std::vector<uint8_t> data(300'001);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7919 >> 3);
  for (size_t size : {size_t{65'536}, size_t{65'543}, size_t{100'000}, size_t{300'001}}) {
    // Byte-at-a-time pieces below the parallel threshold as the reference.
    uint32_t want = 0;
    for (size_t at = 0; at < size; at += 1000) {
      want = crc32c(data.data() + at, std::min<size_t>(1000, size - at), want);
    }
    EXPECT_EQ(crc32c(data.data(), size), want) << size;
    EXPECT_EQ(crc32c(data.data(), size, 0x12345678),
              crc32c(data.data() + 10, size - 10, crc32c(data.data(), 10, 0x12345678)))
        << size;
  }
}

}  // namespace
}  // namespace amber::checkpoint
