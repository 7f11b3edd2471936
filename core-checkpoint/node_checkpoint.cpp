#include "core-checkpoint/node_checkpoint.h"

#include <rte_mbuf.h>
#include <time.h>

#include <chrono>
#include <cstring>
#include <map>

#include "common/strings.h"
#include "core-checkpoint/frame_summary.h"
#include "core-checkpoint/pcap_export.h"
#include "dataplane/mbuf_frame.h"

namespace amber::checkpoint {
namespace {

using dataplane::DelayNode;
using dataplane::Direction;

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

int64_t elapsed_ns(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              since)
      .count();
}

std::span<const uint8_t> bytes_of(const link::Frame& f) {
  const rte_mbuf* m = dataplane::mbuf_of(&f);
  return {rte_pktmbuf_mtod(m, const uint8_t*), f.length};
}

std::string key(const std::string& link, const std::string& direction) {
  return cat(link, "/", direction);
}

Result<Direction*> find(DelayNode::FrozenView& view, const std::string& link,
                        const std::string& direction) {
  for (Direction* d : view.directions) {
    if (d->link_name == link && d->direction == direction) return d;
  }
  return not_found(cat("no link '", link, "' with a direction '", direction, "'"));
}

// The held frame at `index` in for_each_frame order.
Result<link::Frame*> frame_at(Direction& d, uint64_t index) {
  link::Frame* found = nullptr;
  uint64_t i = 0;
  d.pipe.for_each_frame([&](const link::Frame& f) {
    if (i++ == index) found = const_cast<link::Frame*>(&f);
  });
  if (!found) {
    return out_of_range(cat("frame ", index, " does not exist (the pipe holds ", i, ")"));
  }
  return found;
}

// Copies bytes into m (a fresh mbuf); frees m if they do not fit.
Result<rte_mbuf*> fill_mbuf(rte_mbuf* m, std::span<const uint8_t> bytes) {
  char* data = bytes.size() > UINT16_MAX
                   ? nullptr
                   : rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size()));
  if (data == nullptr) {
    const uint16_t room = rte_pktmbuf_tailroom(m);
    rte_pktmbuf_free(m);
    return invalid_argument(
        cat("a frame of ", bytes.size(), " bytes does not fit an mbuf of ", room, " bytes"));
  }
  std::memcpy(data, bytes.data(), bytes.size());
  return m;
}

Result<rte_mbuf*> mbuf_with(rte_mempool* pool, std::span<const uint8_t> bytes) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (m == nullptr) return resource_exhausted("the frame pool is empty");
  return fill_mbuf(m, bytes);
}

// Fresh mbufs for a restore, taken from the pool a batch at a time (one
// at a time once the pool runs low); what is left goes back at the end.
class MbufSupply {
 public:
  explicit MbufSupply(rte_mempool* pool) : pool_(pool) {}
  ~MbufSupply() { rte_pktmbuf_free_bulk(mbufs_ + next_, count_ - next_); }
  MbufSupply(const MbufSupply&) = delete;
  MbufSupply& operator=(const MbufSupply&) = delete;

  Result<rte_mbuf*> with(std::span<const uint8_t> bytes) {
    if (next_ == count_) {
      next_ = count_ = 0;
      if (rte_pktmbuf_alloc_bulk(pool_, mbufs_, kBatch) == 0) {
        count_ = kBatch;
      } else if ((mbufs_[0] = rte_pktmbuf_alloc(pool_)) != nullptr) {
        count_ = 1;
      } else {
        return resource_exhausted("the frame pool is empty");
      }
    }
    return fill_mbuf(mbufs_[next_++], bytes);
  }

 private:
  static constexpr unsigned kBatch = 64;
  rte_mempool* pool_;
  rte_mbuf* mbufs_[kBatch];
  unsigned next_ = 0, count_ = 0;
};

// The image header of a frozen node: its identity and every pipe with its
// configuration, state and what it holds. Inside with_frozen_pipes.
std::pair<NodeInfo, std::vector<PipeInfo>> describe_node(DelayNode& node,
                                                         const DelayNode::FrozenView& view) {
  NodeInfo info;
  info.node_id = node.config().node_id;
  info.freeze_real_ns = view.freeze_real_ns;
  info.virtual_now_ns = view.virtual_now_ns;
  info.created_unix_ns = realtime_ns();
  info.amber_version = "0.1.0";
  info.clock_id = node.clock_id();
  std::map<std::string, std::pair<std::string, std::string>> ports;
  for (const auto& l : node.config().links) {
    ports[key(l.name, "a_to_b")] = {l.port_a, l.port_b};
    ports[key(l.name, "b_to_a")] = {l.port_b, l.port_a};
  }
  std::vector<PipeInfo> pipes;
  for (Direction* d : view.directions) {
    PipeInfo p;
    p.link = d->link_name;
    p.direction = d->direction;
    std::tie(p.port_in, p.port_out) = ports[key(d->link_name, d->direction)];
    p.config = d->pipe.config();
    p.state = d->pipe.state();
    // A direction aligned to its VM (DelayNode::shift) has a timeline of
    // its own: the image records where it stands.
    p.virtual_now_ns = d->virtual_time(view.virtual_now_ns);
    p.ran_on_ns = d->ran_on_ns;
    p.frames = d->pipe.held_frames();
    p.bytes = d->pipe.held_bytes();
    // Frames the pipe let go whose port has not taken them yet (a stopped
    // VM's ring is full) have not left the node: they are in the image, at
    // the head of the delay line, and not counted as out.
    for (uint16_t k = 0; k < d->pending_count; ++k) {
      const uint32_t length = dataplane::frame_of(d->pending[k])->length;
      ++p.frames;
      p.bytes += length;
      --p.state.counters.frames_out;
      p.state.counters.bytes_out -= length;
    }
    pipes.push_back(std::move(p));
  }
  return {std::move(info), std::move(pipes)};
}

// Hands every held frame, pipe by pipe in FIFO order, to `add`: first the
// frames waiting for the port (they depart before any the pipe holds), as
// delay-line frames, then the pipe's own.
template <typename Add>
Status for_each_held(const DelayNode::FrozenView& view, Add&& add) {
  for (size_t i = 0; i < view.directions.size(); ++i) {
    const Direction& d = *view.directions[i];
    for (uint16_t k = 0; k < d.pending_count; ++k) {
      const link::Frame& f = *dataplane::frame_of(d.pending[k]);
      FrameRecord r = record_of(f);
      r.stage = link::FrameStage::kDelayLine;
      r.express = false;
      r.bytes = bytes_of(f);
      AMBER_RETURN_IF_ERROR(add(i, r));
    }
    Status first;
    view.directions[i]->pipe.for_each_frame([&](const link::Frame& f) {
      if (!first) return;
      FrameRecord r = record_of(f);
      r.bytes = bytes_of(f);
      first = add(i, r);
    });
    AMBER_RETURN_IF_ERROR(first);
  }
  return Status::ok();
}

}  // namespace

Result<SaveResult> save_node(DelayNode& node, const std::string& path,
                             const WriterOptions& options) {
  SaveResult result;
  Status s = node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto start = std::chrono::steady_clock::now();
    // The largest frame the pool's mbufs hold: a restore checks its own.
    WriterOptions writer_options = options;
    writer_options.max_frame_bytes = std::min<uint32_t>(
        options.max_frame_bytes, rte_pktmbuf_data_room_size(view.pool) - RTE_PKTMBUF_HEADROOM);
    auto [info, pipes] = describe_node(node, view);
    for (const PipeInfo& p : pipes) {
      result.frames += p.frames;
      result.bytes += p.bytes;
    }
    auto writer = ImageWriter::create(path, info, pipes, writer_options);
    if (!writer) return writer.status();
    AMBER_RETURN_IF_ERROR(for_each_held(
        view, [&](size_t i, const FrameRecord& r) { return writer->add_frame(i, r); }));
    AMBER_RETURN_IF_ERROR(writer->finish());
    result.image_bytes = writer->bytes_written();
    result.duration_ns = elapsed_ns(start);
    return Status::ok();
  });
  if (!s) return s;
  return result;
}

Result<std::vector<std::string>> export_node_pcap(DelayNode& node, const std::string& out_dir) {
  std::vector<std::string> files;
  Status s = node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto exporter = PcapExporter::create(out_dir, describe_node(node, view).second);
    if (!exporter) return exporter.status();
    AMBER_RETURN_IF_ERROR(for_each_held(
        view, [&](size_t i, const FrameRecord& r) { return exporter->add_frame(i, r); }));
    return exporter->finish(&files);
  });
  if (!s) return s;
  return files;
}

Result<RestoreResult> restore_node(DelayNode& node, const std::string& path,
                                   const RestoreOptions& options) {
  auto start = std::chrono::steady_clock::now();
  std::optional<std::string> expected;
  if (!options.allow_other_node) expected = node.config().node_id;
  auto reader = ImageReader::open(path, expected);
  if (!reader) return reader.status();
  // The image must describe exactly this node's link directions.
  std::map<std::string, size_t> image_pipes;
  for (size_t i = 0; i < reader->pipes().size(); ++i) {
    const PipeInfo& p = reader->pipes()[i];
    image_pipes[key(p.link, p.direction)] = i;
  }
  size_t node_pipes = 0;
  for (const auto& l : node.config().links) {
    for (const char* dir : {"a_to_b", "b_to_a"}) {
      ++node_pipes;
      if (!image_pipes.count(key(l.name, dir))) {
        return failed_precondition(cat(path, ": the image has no pipe for link '", l.name, "' ",
                                       dir, ": it was written for another link layout"));
      }
    }
  }
  if (image_pipes.size() != node_pipes) {
    return failed_precondition(cat(path, ": the image has ", image_pipes.size(),
                                   " pipes, this node ", node_pipes, ": another link layout"));
  }
  if (options.verify_first) AMBER_RETURN_IF_ERROR(verify_image(path));

  RestoreResult result;
  Status s = node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    // Capacity: what the pool has free plus what the pipes give back.
    uint64_t held = 0;
    for (Direction* d : view.directions) held += d->pipe.held_frames() + d->pending_count;
    const uint32_t room = rte_pktmbuf_data_room_size(view.pool) - RTE_PKTMBUF_HEADROOM;
    AMBER_RETURN_IF_ERROR(check_capacity(*reader, rte_mempool_avail_count(view.pool) + held, room));
    if (reader->max_frame_bytes() > room) {
      // The header bounds frame sizes; single-segment mbufs are the rule here.
      return failed_precondition(cat(path, ": frames of up to ", reader->max_frame_bytes(),
                                     " bytes do not fit mbufs of ", room, " bytes"));
    }
    std::vector<Direction*> by_index(reader->pipes().size());
    for (Direction* d : view.directions) {
      const size_t i = image_pipes[key(d->link_name, d->direction)];
      by_index[i] = d;
      auto pipe = link::Pipe::create(reader->pipes()[i].config);
      if (!pipe) return pipe.status().with_context(cat(path, ": pipe ", i, ": "));
      dataplane::release_frames(*d);
      pipe->take_wire(d->pipe);
      d->pipe = std::move(pipe).value();
      d->pipe.set_state(reader->pipes()[i].state);
      // Its timeline stands where the image's did against the node's.
      d->shift_ns = reader->node().virtual_now_ns - reader->pipes()[i].virtual_now_ns;
      d->shift_floor_ns = INT64_MIN;
      d->ran_on_ns = reader->pipes()[i].ran_on_ns;
    }
    dataplane::reset_link_starts(view.directions);
    size_t index;
    FrameRecord record;
    MbufSupply supply(view.pool);
    while (true) {
      Result<bool> more = reader->next_frame(&index, &record);
      if (!more) return more.status();
      if (!*more) break;
      auto m = supply.with(record.bytes);
      if (!m) return m.status();
      link::Frame* f = dataplane::frame_of(*m);
      apply_record(record, f);
      f->length = static_cast<uint32_t>(record.bytes.size());
      Status restored = by_index[index]->pipe.restore_frame(*f);
      if (!restored) {
        rte_pktmbuf_free(*m);
        return restored.with_context(cat(path, ": pipe ", index, ": "));
      }
      ++result.frames;
      result.bytes += f->length;
    }
    result.virtual_now_ns = reader->node().virtual_now_ns;
    node.restore_clocks(result.virtual_now_ns, reader->node().clock_id);
    return Status::ok();
  });
  if (!s) return s;
  result.duration_ns = elapsed_ns(start);
  return result;
}

Result<FrameListing> list_frames(DelayNode& node, const std::string& link,
                                 const std::string& direction, uint64_t offset, uint64_t limit,
                                 bool with_bytes) {
  FrameListing listing;
  Status s = node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto d = find(view, link, direction);
    if (!d) return d.status();
    listing.virtual_now_ns = (*d)->virtual_time(view.virtual_now_ns);
    uint64_t i = 0;
    (*d)->pipe.for_each_frame([&](const link::Frame& f) {
      const uint64_t index = i++;
      if (index < offset || (limit && index >= offset + limit)) return;
      HeldFrameView v;
      v.index = index;
      v.stage = f.stage;
      v.length = f.length;
      v.arrival_ns = f.arrival_ns;
      v.departure_ns = f.stage == link::FrameStage::kBottleneck ? 0 : f.departure_ns;
      auto bytes = bytes_of(f);
      v.summary = summarize_frame(bytes);
      if (with_bytes) v.bytes.assign(bytes.begin(), bytes.end());
      listing.frames.push_back(std::move(v));
    });
    listing.total = i;
    return Status::ok();
  });
  if (!s) return s;
  return listing;
}

Status drop_frame(DelayNode& node, const std::string& link, const std::string& direction,
                  uint64_t index) {
  return node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto d = find(view, link, direction);
    if (!d) return d.status();
    auto f = frame_at(**d, index);
    if (!f) return f.status();
    AMBER_RETURN_IF_ERROR((*d)->pipe.remove_frame(**f));
    rte_pktmbuf_free(dataplane::mbuf_of(*f));
    return Status::ok();
  });
}

Status replace_frame(DelayNode& node, const std::string& link, const std::string& direction,
                     uint64_t index, std::span<const uint8_t> bytes) {
  if (bytes.size() < 14)
    return invalid_argument("a frame needs at least an Ethernet header (14 bytes)");
  return node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto d = find(view, link, direction);
    if (!d) return d.status();
    auto f = frame_at(**d, index);
    if (!f) return f.status();
    rte_mbuf* m = dataplane::mbuf_of(*f);
    const size_t room = rte_pktmbuf_data_len(m) + rte_pktmbuf_tailroom(m);
    if (bytes.size() > room) {
      return invalid_argument(
          cat("a frame of ", bytes.size(), " bytes does not fit its mbuf (", room, " bytes)"));
    }
    m->data_len = static_cast<uint16_t>(bytes.size());
    m->pkt_len = static_cast<uint32_t>(bytes.size());
    std::memcpy(rte_pktmbuf_mtod(m, uint8_t*), bytes.data(), bytes.size());
    (*d)->pipe.resize_frame(**f, static_cast<uint32_t>(bytes.size()));
    return Status::ok();
  });
}

Status inject_frame(DelayNode& node, const std::string& link, const std::string& direction,
                    std::span<const uint8_t> bytes, std::optional<uint64_t> before_index,
                    std::optional<int64_t> departure_ns) {
  if (before_index.has_value() == departure_ns.has_value()) {
    return invalid_argument("give exactly one of a position (before_index) or a departure time");
  }
  if (bytes.size() < 14)
    return invalid_argument("a frame needs at least an Ethernet header (14 bytes)");
  return node.with_frozen_pipes([&](DelayNode::FrozenView& view) -> Status {
    auto d = find(view, link, direction);
    if (!d) return d.status();
    int64_t departure = departure_ns.value_or(0);
    if (before_index) {
      auto f = frame_at(**d, *before_index);
      if (!f) return f.status();
      if ((*f)->stage != link::FrameStage::kDelayLine) {
        return failed_precondition(
            cat("frame ", *before_index, " is not on the wire yet: inject at a time instead"));
      }
      departure = (*f)->departure_ns;
    }
    auto m = mbuf_with(view.pool, bytes);
    if (!m) return m.status();
    link::Frame* f = dataplane::frame_of(*m);
    f->length = static_cast<uint32_t>(bytes.size());
    // Departs before the frame now at before_index: just ahead of its time.
    Status s = (*d)->pipe.inject_frame(*f, before_index ? departure - 1 : departure,
                                       (*d)->virtual_time(view.virtual_now_ns));
    if (!s) rte_pktmbuf_free(*m);
    return s;
  });
}

}  // namespace amber::checkpoint
