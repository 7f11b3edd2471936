// Checkpointing a running delay node: save its frozen pipes (every held
// frame's bytes from its mbuf) to an image, restore an image into mbufs of
// the node's pool, and queue surgery on frozen pipes. All of it runs with
// the node's workers parked (DelayNode::with_frozen_pipes): the caller's
// thread owns the pipes meanwhile, no worker polls.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "core-checkpoint/image.h"
#include "dataplane/delay_node.h"

namespace amber::checkpoint {

struct SaveResult {
  uint64_t frames = 0;
  uint64_t bytes = 0;        // frame bytes
  uint64_t image_bytes = 0;  // file size
  int64_t duration_ns = 0;   // with the workers parked
};

// Writes the frozen node to `path` (atomically). Refused unless frozen.
Result<SaveResult> save_node(dataplane::DelayNode& node, const std::string& path,
                             const WriterOptions& options = {});

// One nanosecond pcap per pipe of the frozen node in out_dir (created if
// missing), frames stamped with their virtual arrival; returns the files.
Result<std::vector<std::string>> export_node_pcap(dataplane::DelayNode& node,
                                                  const std::string& out_dir);

struct RestoreOptions {
  bool allow_other_node = false;  // accept an image of another node id
  bool verify_first = true;       // read the whole image once before touching the node
};

struct RestoreResult {
  uint64_t frames = 0;
  uint64_t bytes = 0;
  int64_t virtual_now_ns = 0;  // the node stands frozen here; thaw to continue
  int64_t duration_ns = 0;
};

// Replaces the node's pipes (configuration, state, frames) with the image's
// and leaves the node frozen at the image's virtual time. Refused, with the
// node untouched, when the image is damaged, of another node (unless
// allowed), of another link layout, or larger than the pool can hold.
Result<RestoreResult> restore_node(dataplane::DelayNode& node, const std::string& path,
                                   const RestoreOptions& options = {});

struct HeldFrameView {
  uint64_t index = 0;
  link::FrameStage stage = link::FrameStage::kBottleneck;
  uint32_t length = 0;
  int64_t arrival_ns = 0;
  int64_t departure_ns = 0;
  std::string summary;
  std::vector<uint8_t> bytes;  // only when asked for
};

struct FrameListing {
  uint64_t total = 0;
  int64_t virtual_now_ns = 0;
  std::vector<HeldFrameView> frames;
};

// Frames of one pipe, in order (bottleneck, then delay line, then express).
Result<FrameListing> list_frames(dataplane::DelayNode& node, const std::string& link,
                                 const std::string& direction, uint64_t offset, uint64_t limit,
                                 bool with_bytes);
Status drop_frame(dataplane::DelayNode& node, const std::string& link, const std::string& direction,
                  uint64_t index);
Status replace_frame(dataplane::DelayNode& node, const std::string& link,
                     const std::string& direction, uint64_t index, std::span<const uint8_t> bytes);
// Injects a frame departing with the frame now at before_index, or at the
// virtual time departure_ns (exactly one of them).
Status inject_frame(dataplane::DelayNode& node, const std::string& link,
                    const std::string& direction, std::span<const uint8_t> bytes,
                    std::optional<uint64_t> before_index, std::optional<int64_t> departure_ns);

}  // namespace amber::checkpoint
