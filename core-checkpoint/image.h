// The checkpoint image of a delay node: writer, reader and verification.
//
// An image is a stream of checksummed chunks (format in README.md and
// proto/image.proto): a header listing the node and every pipe with its
// configuration, state and frame/byte counts, then the held frames in
// batches, then a trailer with totals and a whole-file digest. Writer and
// reader hold one chunk (a few MiB) at a time, whatever the image's size.
//
// Use:
//   auto writer = ImageWriter::create(path, node, pipes);   // pipes[i].frames/bytes set
//   for each pipe i, for each held frame f in FIFO order: writer->add_frame(i, record(f));
//   writer->finish();                                        // trailer, fsync, rename
//
//   auto reader = ImageReader::open(path, my_node_id);       // header checked
//   check reader->pipes()[i].frames/bytes against the mempool, then
//   while (*(ok = reader->next_frame(&i, &record))) { copy record.bytes into an mbuf }
//
// A damaged image is refused with a Status naming the file, the chunk and
// its byte offset, and what was expected. Nothing here touches a pipe: the
// caller changes its node only after the header (capacity) and, for a
// restore that must be all-or-nothing, verify_image() have passed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "link-emulator/frame.h"
#include "link-emulator/pipe.h"
#include "link-emulator/pipe_config.h"

namespace amber::checkpoint {

// The format version this build writes and reads.
inline constexpr uint32_t kFormatVersion = 1;
// Largest frame an image holds (jumbo frames and GRO aggregates fit).
inline constexpr uint32_t kMaxFrameBytes = 1u << 20;
// Largest chunk the reader accepts: a length beyond it is damage.
inline constexpr uint32_t kMaxChunkBytes = 64u << 20;

struct NodeInfo {
  std::string node_id;          // refused on restore if it does not match
  int64_t freeze_real_ns = 0;   // the real (synchronized) instant the node froze
  int64_t virtual_now_ns = 0;   // the node's virtual clock at the freeze
  int64_t created_unix_ns = 0;  // when the image was written
  std::string amber_version;
  uint64_t clock_id = 0;  // the virtual timeline (DelayNode::clock_id); 0: unknown
  bool operator==(const NodeInfo&) const = default;
};

struct PipeInfo {
  std::string link;               // link name from the configuration
  std::string direction;          // "a_to_b" / "b_to_a"
  std::string port_in, port_out;  // informational (a restore may map them)
  link::PipeConfig config;
  link::PipeState state;       // rng, loss state, shaper state, counters
  int64_t virtual_now_ns = 0;  // the pipe's virtual clock at the freeze
  int64_t ran_on_ns = 0;       // run past the freeze, not yet shifted back
  uint64_t frames = 0;         // frames held; the writer checks what it is given
  uint64_t bytes = 0;          // sum of their lengths
  bool operator==(const PipeInfo&) const = default;
};

// A held frame, in its FIFO order within the pipe (Pipe::for_each_frame).
struct FrameRecord {
  link::FrameStage stage = link::FrameStage::kBottleneck;
  bool express = false;
  int64_t arrival_ns = 0;
  int64_t extra_delay_ns = 0;
  int64_t ready_ns = 0;
  int64_t departure_ns = 0;
  std::span<const uint8_t> bytes;  // the frame's length is bytes.size()
};

// The frame's timestamps as a record (bytes left empty), and back.
FrameRecord record_of(const link::Frame& frame);
void apply_record(const FrameRecord& record, link::Frame* frame);

// A frozen pipe's entry for the image header: configuration, state and
// what it holds.
PipeInfo pipe_info_of(const link::Pipe& pipe, std::string link, std::string direction,
                      std::string port_in = {}, std::string port_out = {});
// A pipe rebuilt from an image header entry, state set, still empty: give it
// its frames with Pipe::restore_frame() in image order.
Result<link::Pipe> restore_pipe(const PipeInfo& info);

struct WriterOptions {
  // fsync the file and its directory in finish(). Off only for benchmarks
  // and tests that measure or exercise the page cache.
  bool sync = true;
  // Frame batches are closed when they reach this size.
  uint32_t chunk_bytes = 4u << 20;
  // Largest frame the writer accepts, recorded in the header so a restore
  // checks its mbuf data room before reading any frame.
  uint32_t max_frame_bytes = kMaxFrameBytes;
};

// Writes <path>.tmp and renames it to <path> in finish(), after fsync: a
// crash or an error never leaves a partial image under the final name. The
// destructor removes the temporary file if finish() did not succeed.
// After any error the writer refuses further calls.
class ImageWriter {
 public:
  static Result<ImageWriter> create(const std::string& path, const NodeInfo& node,
                                    const std::vector<PipeInfo>& pipes,
                                    const WriterOptions& options = {});

  ImageWriter(ImageWriter&&) noexcept;
  ImageWriter& operator=(ImageWriter&&) noexcept;
  ~ImageWriter();

  // Pipes in order (indexes into the vector given to create()); frames of a
  // pipe in FIFO order. Refused beyond the pipe's declared frame count.
  Status add_frame(size_t pipe_index, const FrameRecord& frame);
  // The same for a frame held in pieces (a chained mbuf), without
  // linearizing it first: frame.bytes is ignored, the frame's bytes are the
  // segments one after the other.
  Status add_frame(size_t pipe_index, const FrameRecord& frame,
                   std::span<const std::span<const uint8_t>> segments);
  // Trailer, fsync, rename. Refused when a pipe got fewer frames or other
  // bytes than its PipeInfo declared.
  Status finish();

  uint64_t bytes_written() const;

 private:
  struct State;
  explicit ImageWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Reads an image one chunk at a time. open() checks the file header and the
// image header (version, node, every pipe's configuration); next_frame()
// checks each chunk as it comes and the trailer at the end.
class ImageReader {
 public:
  // expected_node_id: refuse an image of another node (nullopt: any node).
  static Result<ImageReader> open(const std::string& path,
                                  std::optional<std::string> expected_node_id);
  // Reads from an open descriptor (a memfd in the fuzz target), taking
  // ownership; name is used in messages.
  static Result<ImageReader> open_fd(int fd, const std::string& name,
                                     std::optional<std::string> expected_node_id);

  ImageReader(ImageReader&&) noexcept;
  ImageReader& operator=(ImageReader&&) noexcept;
  ~ImageReader();

  const NodeInfo& node() const;
  const std::vector<PipeInfo>& pipes() const;
  uint64_t total_frames() const;
  uint64_t total_bytes() const;
  uint32_t max_frame_bytes() const;

  // The next frame and its pipe. false at the end, after the trailer has
  // been verified. frame->bytes stays valid until the next call.
  Result<bool> next_frame(size_t* pipe_index, FrameRecord* frame);

 private:
  struct State;
  explicit ImageReader(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Reads the whole image and checks every chunk and the trailer.
Status verify_image(const std::string& path);

// Whether a node can take the image before anything is changed: free_buffers
// mbufs of buffer_bytes data room each. A frame longer than a buffer needs a
// chain; the header has no per-frame sizes, so for such images the count is
// an upper bound (frames + bytes / buffer_bytes). Refused (resource
// exhausted) naming what is needed and what is there.
Status check_capacity(const ImageReader& reader, uint64_t free_buffers, uint32_t buffer_bytes);

}  // namespace amber::checkpoint
