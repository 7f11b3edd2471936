#include "image_fixture.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>

namespace amber::checkpoint::testing {

std::vector<uint8_t> make_frame_bytes(uint32_t length, uint64_t seed) {
  std::vector<uint8_t> b(length);
  static const uint8_t kHeader[] = {0x02, 0,    0,    0,    0, 0x02, 0x02, 0, 0,  0,
                                    0,    0x01, 0x08, 0x00,  // Ethernet
                                    0x45, 0,    0,    0,    0, 0,    0,    0, 64, 17,
                                    0,    0,    10,   0,    0, 1,    10,   0, 0,  2,  // IPv4 UDP
                                    0x13, 0x89, 0xa0, 0x00, 0, 0,    0,    0};  // UDP 5001 > 40960
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = i < sizeof(kHeader) ? kHeader[i] : static_cast<uint8_t>(seed * 131 + i * 7);
  }
  if (length >= 42) {
    const uint16_t ip_len = static_cast<uint16_t>(length - 14);
    b[16] = static_cast<uint8_t>(ip_len >> 8);
    b[17] = static_cast<uint8_t>(ip_len);
    b[38] = static_cast<uint8_t>((ip_len - 20) >> 8);
    b[39] = static_cast<uint8_t>(ip_len - 20);
    b[40] = static_cast<uint8_t>(seed >> 8);  // checksum field: frame identity
    b[41] = static_cast<uint8_t>(seed);
  }
  return b;
}

std::vector<PipeInfo> FrozenNode::infos() const {
  std::vector<PipeInfo> out;
  for (const auto& h : held) out.push_back(h.info);
  return out;
}

FrozenNode make_frozen_node(const NodeSpec& spec) {
  FrozenNode node;
  node.node.node_id = "delay-node-1";
  node.node.freeze_real_ns = 1'700'000'000'000'000'000;
  node.node.amber_version = "0.1.0-test";
  node.node.created_unix_ns = 1'700'000'000'500'000'000;
  const int64_t freeze_at = static_cast<int64_t>(spec.frames_per_pipe) * spec.gap_ns;
  node.node.virtual_now_ns = freeze_at;
  node.held.resize(spec.pipes);
  node.pipes.reserve(spec.pipes);
  for (size_t p = 0; p < spec.pipes; ++p) {
    link::PipeConfig c;
    c.rate_bps = 1'000'000'000;
    c.overhead_bytes = 24;
    c.delay_ns = 5'000'000;
    c.queue_limit_frames = 100'000;
    c.seed = 42 + p;
    if (!spec.plain) {
      c.jitter_ns = 200'000;
      c.loss = link::GilbertElliottLoss{0.01, 0.3, 0.5, 0.001};
      c.reorder = 0.05;
    }
    if (spec.scheduled) {
      link::Schedule schedule;
      link::DeliveryTrace trace;
      trace.ms = {0, 1, 1, 1, 2, 4, 4, 5};  // bursty, 5 ms period
      trace.source = "synthetic.trace";
      schedule.trace = trace;
      const int64_t third = std::max<int64_t>(freeze_at / 3, 1);
      // The freeze (at the last arrival) falls in the second segment.
      schedule.segments = {
          link::Segment{.duration_ns = third},
          link::Segment{.duration_ns = 2 * third, .delay_ns = 7'000'000, .jitter_ns = 0},
          link::Segment{.duration_ns = third, .delay_ns = 1'000'000}};
      c.schedule = link::ScheduleRef(std::move(schedule));
    }
    auto pipe = link::Pipe::create(c);
    node.pipes.push_back(std::move(pipe).value());
    link::Pipe& live = node.pipes.back();

    HeldPipe& h = node.held[p];
    node.storage.push_back(std::make_unique<link::Frame[]>(spec.frames_per_pipe));
    link::Frame* frames = node.storage.back().get();
    std::vector<std::vector<uint8_t>> all_bytes(spec.frames_per_pipe);
    std::map<const link::Frame*, size_t> index;
    for (size_t i = 0; i < spec.frames_per_pipe; ++i) {
      uint32_t len = spec.length != 0 ? spec.length : static_cast<uint32_t>(60 + (i * 97) % 1455);
      all_bytes[i] = make_frame_bytes(len, p * 100000 + i);
      frames[i].length = len;
      index[&frames[i]] = i;
      // Never dequeued: express frames (which leave right after
      // serialization) stay held too, as in a node that froze between polls.
      (void)live.enqueue(frames[i], static_cast<int64_t>(i) * spec.gap_ns);
    }
    // The held frames, in the pipe's order, as copies (the originals stay
    // linked in the live pipe).
    std::vector<link::Frame> copies;
    std::vector<std::vector<uint8_t>> bytes;
    live.for_each_frame([&](const link::Frame& f) {
      link::Frame copy;
      apply_record(record_of(f), &copy);
      copy.length = f.length;
      copies.push_back(copy);
      bytes.push_back(all_bytes[index.at(&f)]);
    });
    h.frames = std::move(copies);
    h.bytes = std::move(bytes);
    h.info = pipe_info_of(live, cat("link", p / 2), p % 2 == 0 ? "a_to_b" : "b_to_a",
                          cat("port", p), cat("port", p + 1));
    h.info.virtual_now_ns = freeze_at;
    h.info.ran_on_ns = static_cast<int64_t>(p) * 1'000'000;  // run-on, kept for the next shift
  }
  return node;
}

Status write_image(const FrozenNode& node, const std::string& path, const WriterOptions& options) {
  auto writer = ImageWriter::create(path, node.node, node.infos(), options);
  if (!writer) return writer.status();
  for (size_t p = 0; p < node.held.size(); ++p) {
    const HeldPipe& h = node.held[p];
    for (size_t i = 0; i < h.frames.size(); ++i) {
      FrameRecord r = record_of(h.frames[i]);
      r.bytes = h.bytes[i];
      AMBER_RETURN_IF_ERROR(writer->add_frame(p, r));
    }
  }
  return writer->finish();
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

}  // namespace amber::checkpoint::testing
