#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/strings.h"
#include "core-checkpoint/convert.h"
#include "core-checkpoint/crc32c.h"
#include "core-checkpoint/frame_codec.h"
#include "core-checkpoint/image.h"
#include "core-checkpoint/image_format.h"
#include "proto/image.pb.h"

namespace amber::checkpoint {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

Status write_all(int fd, const uint8_t* data, size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return unavailable(cat("writing ", path, ": ", errno_text()));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::ok();
}

}  // namespace

FrameRecord record_of(const link::Frame& f) {
  FrameRecord r;
  r.stage = f.stage;
  r.express = f.express;
  r.arrival_ns = f.arrival_ns;
  r.extra_delay_ns = f.extra_delay_ns;
  r.ready_ns = f.ready_ns;
  r.departure_ns = f.departure_ns;
  return r;
}

void apply_record(const FrameRecord& r, link::Frame* f) {
  f->length = static_cast<uint32_t>(r.bytes.size());
  f->stage = r.stage;
  f->express = r.express;
  f->arrival_ns = r.arrival_ns;
  f->extra_delay_ns = r.extra_delay_ns;
  f->ready_ns = r.ready_ns;
  f->departure_ns = r.departure_ns;
}

PipeInfo pipe_info_of(const link::Pipe& pipe, std::string link, std::string direction,
                      std::string port_in, std::string port_out) {
  PipeInfo info;
  info.link = std::move(link);
  info.direction = std::move(direction);
  info.port_in = std::move(port_in);
  info.port_out = std::move(port_out);
  info.config = pipe.config();
  info.state = pipe.state();
  info.frames = pipe.held_frames();
  info.bytes = pipe.held_bytes();
  return info;
}

Result<link::Pipe> restore_pipe(const PipeInfo& info) {
  auto pipe = link::Pipe::create(info.config);
  if (!pipe) return pipe.status().with_context(cat(info.link, " ", info.direction, ": "));
  pipe->set_state(info.state);
  return pipe;
}

struct ImageWriter::State {
  std::string path;
  std::string tmp_path;
  WriterOptions options;
  int fd = -1;
  bool finished = false;
  Status failed;  // first error; the writer refuses everything after it
  std::vector<PipeInfo> pipes;
  std::vector<uint64_t> frames_seen, bytes_seen;
  // The chunk being built: prefix, then payload.
  std::unique_ptr<uint8_t[]> buffer;
  size_t capacity = 0;
  uint8_t* batch_start = nullptr;  // open frame batch, or nullptr
  uint8_t* cursor = nullptr;
  size_t batch_pipe = 0;
  uint64_t chunks = 0;
  uint32_t digest = 0;
  uint64_t bytes_written = 0;

  ~State() {
    if (fd >= 0) ::close(fd);
    if (!finished && !tmp_path.empty()) ::unlink(tmp_path.c_str());
  }

  Status fail(Status status) {
    if (failed.is_ok()) failed = status;
    return status;
  }

  void ensure_capacity(size_t needed) {
    if (needed <= capacity) return;
    buffer.reset(new uint8_t[needed]);
    capacity = needed;
  }

  // Writes the chunk whose payload is buffer[8, end).
  Status write_chunk(const uint8_t* end) {
    uint8_t* start = buffer.get();
    const size_t payload = static_cast<size_t>(end - start) - format::kChunkPrefixBytes;
    format::put_u32(start, static_cast<uint32_t>(payload));
    format::put_u32(start + 4, crc32c(start + format::kChunkPrefixBytes, payload));
    digest = crc32c(start, format::kChunkPrefixBytes, digest);
    ++chunks;
    bytes_written += payload + format::kChunkPrefixBytes;
    return write_all(fd, start, payload + format::kChunkPrefixBytes, tmp_path);
  }

  Status write_message(const image::Chunk& chunk) {
    const size_t size = chunk.ByteSizeLong();
    if (size > kMaxChunkBytes) {
      return resource_exhausted(cat(path, ": the image header is ", size, " bytes, beyond the ",
                                    kMaxChunkBytes, " a chunk may hold (too many pipes?)"));
    }
    ensure_capacity(size + format::kChunkPrefixBytes);
    chunk.SerializeWithCachedSizesToArray(buffer.get() + format::kChunkPrefixBytes);
    return write_chunk(buffer.get() + format::kChunkPrefixBytes + size);
  }

  Status close_batch() {
    if (batch_start == nullptr) return Status::ok();
    codec::end_batch(batch_start, cursor);
    batch_start = nullptr;
    return write_chunk(cursor);
  }
};

ImageWriter::ImageWriter(std::unique_ptr<State> state) : s_(std::move(state)) {}
ImageWriter::ImageWriter(ImageWriter&&) noexcept = default;
ImageWriter& ImageWriter::operator=(ImageWriter&&) noexcept = default;
ImageWriter::~ImageWriter() = default;

uint64_t ImageWriter::bytes_written() const {
  return s_->bytes_written;
}

Result<ImageWriter> ImageWriter::create(const std::string& path, const NodeInfo& node,
                                        const std::vector<PipeInfo>& pipes,
                                        const WriterOptions& options) {
  if (path.empty()) return invalid_argument("image path is empty");
  if (options.chunk_bytes < 4096 || options.chunk_bytes > kMaxChunkBytes / 2) {
    return invalid_argument(
        cat("chunk_bytes: ", options.chunk_bytes, " is outside [4096, ", kMaxChunkBytes / 2, "]"));
  }
  if (options.max_frame_bytes == 0 || options.max_frame_bytes > kMaxFrameBytes) {
    return invalid_argument(
        cat("max_frame_bytes: ", options.max_frame_bytes, " is outside [1, ", kMaxFrameBytes, "]"));
  }
  image::Chunk chunk;
  image::Header* header = chunk.mutable_header();
  header->set_format_version(kFormatVersion);
  to_proto(node, header->mutable_node());
  uint64_t total_frames = 0, total_bytes = 0;
  for (size_t i = 0; i < pipes.size(); ++i) {
    if (Status s = pipes[i].config.validate(); !s) {
      return s.with_context(cat("pipe ", i, " (", pipes[i].link, " ", pipes[i].direction, "): "));
    }
    to_proto(pipes[i], header->add_pipes());
    total_frames += pipes[i].frames;
    total_bytes += pipes[i].bytes;
  }
  header->set_total_frames(total_frames);
  header->set_total_bytes(total_bytes);
  header->set_max_frame_bytes(options.max_frame_bytes);

  auto s = std::make_unique<State>();
  s->path = path;
  s->tmp_path = cat(path, ".tmp");
  s->options = options;
  s->pipes = pipes;
  s->frames_seen.assign(pipes.size(), 0);
  s->bytes_seen.assign(pipes.size(), 0);
  // The experiment's frames: the owner's only (#16 defect 6).
  s->fd = ::open(s->tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (s->fd >= 0) (void)::fchmod(s->fd, 0600);
  if (s->fd < 0) {
    std::string reason = errno_text();
    s->tmp_path.clear();  // not ours to remove
    return unavailable(cat("cannot create ", path, ".tmp: ", reason));
  }
  s->ensure_capacity(options.chunk_bytes + codec::kBatchPrefixMax +
                     codec::frame_encoded_max(kMaxFrameBytes) + format::kChunkPrefixBytes);

  uint8_t file_header[format::kFileHeaderBytes];
  std::memcpy(file_header, format::kMagic, sizeof(format::kMagic));
  format::put_u32(file_header + 8, kFormatVersion);
  format::put_u32(file_header + 12, crc32c(file_header, 12));
  s->digest = crc32c(file_header, sizeof(file_header));
  AMBER_RETURN_IF_ERROR(write_all(s->fd, file_header, sizeof(file_header), s->tmp_path));
  s->bytes_written = sizeof(file_header);
  AMBER_RETURN_IF_ERROR(s->write_message(chunk));
  return ImageWriter(std::move(s));
}

Status ImageWriter::add_frame(size_t pipe_index, const FrameRecord& frame) {
  const std::span<const uint8_t> one[1] = {frame.bytes};
  return add_frame(pipe_index, frame, one);
}

Status ImageWriter::add_frame(size_t pipe_index, const FrameRecord& frame,
                              std::span<const std::span<const uint8_t>> segments) {
  State& s = *s_;
  size_t length = 0;
  for (const auto& segment : segments) length += segment.size();
  if (!s.failed.is_ok()) return s.failed;
  if (s.finished) return failed_precondition(cat(s.path, ": add_frame after finish"));
  if (pipe_index >= s.pipes.size()) {
    return s.fail(invalid_argument(
        cat(s.path, ": pipe index ", pipe_index, " beyond the ", s.pipes.size(), " pipes")));
  }
  if (s.batch_start != nullptr && pipe_index < s.batch_pipe) {
    return s.fail(
        invalid_argument(cat(s.path, ": a frame of pipe ", pipe_index, " after frames of pipe ",
                             s.batch_pipe, " (pipes must come in order)")));
  }
  if (s.frames_seen[pipe_index] >= s.pipes[pipe_index].frames) {
    return s.fail(invalid_argument(cat(s.path, ": pipe ", pipe_index, " declared ",
                                       s.pipes[pipe_index].frames, " frames, got more")));
  }
  if (length > s.options.max_frame_bytes) {
    return s.fail(
        invalid_argument(cat(s.path, ": a frame of ", length, " bytes, beyond max_frame_bytes ",
                             s.options.max_frame_bytes)));
  }
  if (static_cast<uint8_t>(frame.stage) > static_cast<uint8_t>(link::FrameStage::kExpress)) {
    return s.fail(
        invalid_argument(cat(s.path, ": unknown frame stage ", static_cast<int>(frame.stage))));
  }
  const size_t need = codec::frame_encoded_max(length);
  if (s.batch_start != nullptr &&
      (pipe_index != s.batch_pipe ||
       static_cast<size_t>(s.cursor - s.batch_start) + need > s.options.chunk_bytes)) {
    if (Status st = s.close_batch(); !st) return s.fail(st);
  }
  if (s.batch_start == nullptr) {
    s.batch_start = s.buffer.get() + format::kChunkPrefixBytes;
    s.batch_pipe = pipe_index;
    s.cursor = codec::begin_batch(s.batch_start, static_cast<uint32_t>(pipe_index),
                                  s.frames_seen[pipe_index]);
  }
  s.cursor = codec::encode_frame(s.cursor, frame, segments, length);
  ++s.frames_seen[pipe_index];
  s.bytes_seen[pipe_index] += length;
  return Status::ok();
}

Status ImageWriter::finish() {
  State& s = *s_;
  if (!s.failed.is_ok()) return s.failed;
  if (s.finished) return failed_precondition(cat(s.path, ": finish called twice"));
  for (size_t i = 0; i < s.pipes.size(); ++i) {
    if (s.frames_seen[i] != s.pipes[i].frames || s.bytes_seen[i] != s.pipes[i].bytes) {
      return s.fail(failed_precondition(cat(s.path, ": pipe ", i, " (", s.pipes[i].link, " ",
                                            s.pipes[i].direction, ") declared ", s.pipes[i].frames,
                                            " frames / ", s.pipes[i].bytes, " bytes, got ",
                                            s.frames_seen[i], " / ", s.bytes_seen[i])));
    }
  }
  if (Status st = s.close_batch(); !st) return s.fail(st);

  image::Chunk chunk;
  image::Trailer* trailer = chunk.mutable_trailer();
  trailer->set_chunks(s.chunks);
  uint64_t frames = 0, bytes = 0;
  for (size_t i = 0; i < s.pipes.size(); ++i) {
    auto* totals = trailer->add_pipes();
    totals->set_frames(s.frames_seen[i]);
    totals->set_bytes(s.bytes_seen[i]);
    frames += s.frames_seen[i];
    bytes += s.bytes_seen[i];
  }
  trailer->set_total_frames(frames);
  trailer->set_total_bytes(bytes);
  trailer->set_file_digest(s.digest);
  if (Status st = s.write_message(chunk); !st) return s.fail(st);

  if (s.options.sync && ::fsync(s.fd) != 0) {
    return s.fail(unavailable(cat("fsync ", s.tmp_path, ": ", errno_text())));
  }
  if (::close(s.fd) != 0) {
    s.fd = -1;
    return s.fail(unavailable(cat("close ", s.tmp_path, ": ", errno_text())));
  }
  s.fd = -1;
  if (::rename(s.tmp_path.c_str(), s.path.c_str()) != 0) {
    return s.fail(unavailable(cat("rename ", s.tmp_path, " to ", s.path, ": ", errno_text())));
  }
  s.finished = true;
  if (s.options.sync) {
    // The rename is durable only once the directory is.
    std::filesystem::path parent = std::filesystem::path(s.path).parent_path();
    const std::string dir = parent.empty() ? std::string(".") : parent.string();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return unavailable(cat("open directory ", dir, ": ", errno_text()));
    int rc = ::fsync(dfd);
    ::close(dfd);
    if (rc != 0) return unavailable(cat("fsync directory ", dir, ": ", errno_text()));
  }
  return Status::ok();
}

}  // namespace amber::checkpoint
