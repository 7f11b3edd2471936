#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/strings.h"
#include "core-checkpoint/convert.h"
#include "core-checkpoint/crc32c.h"
#include "core-checkpoint/frame_codec.h"
#include "core-checkpoint/image.h"
#include "core-checkpoint/image_format.h"
#include "proto/image.pb.h"

namespace amber::checkpoint {
namespace {

// The fuzz build ignores checksums so that mutated inputs reach the
// parsers behind them (the convention libFuzzer and OSS-Fuzz use).
#if defined(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
constexpr bool kCheckSums = false;
#else
constexpr bool kCheckSums = true;
#endif

std::string hex32(uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", v);
  return text;
}

// Printable form of bytes that should have been the magic.
std::string printable(const uint8_t* data, size_t size) {
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    char c = static_cast<char>(data[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(c);
    } else {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\x%02x", data[i]);
      out += esc;
    }
  }
  return out;
}

}  // namespace

struct ImageReader::State {
  std::string name;
  int fd = -1;
  uint64_t file_size = 0;
  uint64_t offset = 0;  // of the next unread byte
  std::unique_ptr<uint8_t[]> buffer;
  size_t capacity = 0;

  NodeInfo node;
  std::vector<PipeInfo> pipes;
  uint64_t total_frames = 0, total_bytes = 0;
  uint32_t max_frame_bytes = 0;

  std::vector<uint64_t> frames_seen, bytes_seen;
  uint64_t chunks = 0;       // read so far
  uint64_t chunk_index = 0;  // of the chunk being read, 0 = header
  uint32_t digest = 0;
  uint32_t digest_before_last = 0;
  size_t current_pipe = 0;
  // The frame batch being handed out.
  bool in_batch = false;
  std::span<const uint8_t> batch;
  size_t batch_cursor = 0;
  size_t batch_pipe = 0;
  uint64_t chunk_offset = 0;  // of the chunk in the buffer, for messages
  bool done = false;
  Status failed;

  ~State() {
    if (fd >= 0) ::close(fd);
  }

  Status fail(Status status) {
    if (failed.is_ok()) failed = status;
    return status;
  }

  // "image.amb: chunk 3 at byte 4194336: ..."
  std::string where() const {
    return cat(name, ": chunk ", chunk_index, " at byte ", chunk_offset);
  }

  // Reads exactly size bytes; returns how many were there before the end.
  Result<size_t> read_exact(uint8_t* out, size_t size) {
    size_t got = 0;
    while (got < size) {
      ssize_t n = ::read(fd, out + got, size - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        return unavailable(
            cat("reading ", name, " at byte ", offset + got, ": ", std::strerror(errno)));
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    offset += got;
    return got;
  }

  // Reads the next chunk into the buffer; *payload spans it.
  Status read_chunk(std::span<const uint8_t>* payload) {
    chunk_offset = offset;
    chunk_index = chunks;
    uint8_t prefix[format::kChunkPrefixBytes];
    auto got = read_exact(prefix, sizeof(prefix));
    if (!got) return got.status();
    if (*got == 0) {
      return data_loss(cat(name, ": truncated: the file ends at byte ", offset, " after ", chunks,
                           " chunks, before the trailer"));
    }
    if (*got < sizeof(prefix)) {
      return data_loss(cat(where(), ": truncated: the file ends inside the chunk's 8-byte prefix"));
    }
    const uint32_t length = format::get_u32(prefix);
    const uint32_t stored_crc = format::get_u32(prefix + 4);
    const uint64_t remaining = file_size > offset ? file_size - offset : 0;
    if (length > kMaxChunkBytes) {
      return data_loss(cat(where(), ": length ", length, " is beyond the ", kMaxChunkBytes,
                           "-byte limit: the image is corrupted"));
    }
    if (length > remaining) {
      return data_loss(cat(where(), ": truncated: the chunk needs ", length, " bytes, only ",
                           remaining, " remain"));
    }
    if (length > capacity) {
      // Some slack: batches of one image differ by a few bytes in size.
      const size_t want = std::max<size_t>(length + length / 16, 64 * 1024);
      buffer.reset(new uint8_t[want]);
      capacity = want;
    }
    got = read_exact(buffer.get(), length);
    if (!got) return got.status();
    if (*got < length) {
      return data_loss(
          cat(where(), ": truncated: the chunk needs ", length, " bytes, only ", *got, " remain"));
    }
    const uint32_t crc = crc32c(buffer.get(), length);
    if (kCheckSums && crc != stored_crc) {
      return data_loss(cat(where(), ": checksum mismatch (stored ", hex32(stored_crc),
                           ", computed ", hex32(crc), "): the image is corrupted"));
    }
    *payload = std::span<const uint8_t>(buffer.get(), length);
    ++chunks;
    // The trailer's digest covers every prefix before its own.
    digest_before_last = digest;
    digest = crc32c(prefix, sizeof(prefix), digest);
    return Status::ok();
  }

  Status read_header(const std::optional<std::string>& expected_node_id) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return unavailable(cat("stat ", name, ": ", std::strerror(errno)));
    file_size = static_cast<uint64_t>(st.st_size);
    uint8_t head[format::kFileHeaderBytes];
    auto got = read_exact(head, sizeof(head));
    if (!got) return got.status();
    if (*got == 0) return invalid_argument(cat(name, ": not an amber image: the file is empty"));
    if (*got < sizeof(head) && std::memcmp(head, format::kMagic, std::min(*got, size_t{8})) == 0) {
      return data_loss(cat(name, ": truncated: the file ends inside the ", format::kFileHeaderBytes,
                           "-byte file header (", *got, " bytes)"));
    }
    if (*got < sizeof(format::kMagic) ||
        std::memcmp(head, format::kMagic, sizeof(format::kMagic)) != 0) {
      return invalid_argument(cat(name, ": not an amber image: it starts with \"",
                                  printable(head, std::min(*got, size_t{8})),
                                  "\", not \"AMBERIMG\""));
    }
    if (*got < sizeof(head)) {
      return data_loss(cat(name, ": truncated: the file ends inside the file header"));
    }
    const uint32_t version = format::get_u32(head + 8);
    const uint32_t crc = crc32c(head, 12);
    if (kCheckSums && crc != format::get_u32(head + 12)) {
      return data_loss(cat(name, ": file header checksum mismatch (stored ",
                           hex32(format::get_u32(head + 12)), ", computed ", hex32(crc),
                           "): the image is corrupted"));
    }
    if (version != kFormatVersion) {
      return failed_precondition(cat(name, ": image format version ", version,
                                     " is not supported (this build reads version ", kFormatVersion,
                                     ")"));
    }
    digest = crc32c(head, sizeof(head));

    std::span<const uint8_t> payload;
    AMBER_RETURN_IF_ERROR(read_chunk(&payload));
    std::span<const uint8_t> body;
    if (codec::classify_chunk(payload, &body) != codec::ChunkKind::kHeader) {
      return data_loss(cat(where(), ": expected the image header"));
    }
    image::Chunk chunk;
    if (!chunk.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
        !chunk.has_header()) {
      return data_loss(cat(where(), ": the image header does not parse"));
    }
    const image::Header& h = chunk.header();
    if (h.format_version() != kFormatVersion) {
      return data_loss(cat(where(), ": header says format version ", h.format_version(),
                           ", the file header ", kFormatVersion));
    }
    node = from_proto(h.node());
    if (expected_node_id && node.node_id != *expected_node_id) {
      return failed_precondition(cat(name, ": the image is of node '", node.node_id,
                                     "', this node is '", *expected_node_id, "'"));
    }
    if (h.max_frame_bytes() == 0 || h.max_frame_bytes() > kMaxFrameBytes) {
      return data_loss(cat(where(), ": max_frame_bytes ", h.max_frame_bytes(), " is outside [1, ",
                           kMaxFrameBytes, "]"));
    }
    max_frame_bytes = h.max_frame_bytes();
    uint64_t frames = 0, bytes = 0;
    for (int i = 0; i < h.pipes_size(); ++i) {
      auto pipe = from_proto(h.pipes(i));
      if (!pipe) {
        return data_loss(cat(where(), ": pipe ", i, " (", h.pipes(i).link(), " ",
                             h.pipes(i).direction(), "): ", pipe.status().message()));
      }
      uint64_t most = 0;
      if (__builtin_mul_overflow(pipe->frames, uint64_t{max_frame_bytes}, &most) ||
          pipe->bytes > most || __builtin_add_overflow(frames, pipe->frames, &frames) ||
          __builtin_add_overflow(bytes, pipe->bytes, &bytes)) {
        return data_loss(cat(where(), ": pipe ", i, " declares ", pipe->bytes, " bytes in ",
                             pipe->frames, " frames of at most ", max_frame_bytes, " bytes"));
      }
      pipes.push_back(std::move(pipe).value());
    }
    if (frames != h.total_frames() || bytes != h.total_bytes()) {
      return data_loss(cat(where(), ": header totals ", h.total_frames(), " frames / ",
                           h.total_bytes(), " bytes differ from the pipes' sum ", frames, " / ",
                           bytes));
    }
    total_frames = frames;
    total_bytes = bytes;
    frames_seen.assign(pipes.size(), 0);
    bytes_seen.assign(pipes.size(), 0);
    return Status::ok();
  }

  Status start_batch(std::span<const uint8_t> body) {
    codec::BatchInfo info;
    const char* error = "";
    if (!codec::scan_batch(body, &info, &error)) {
      return data_loss(cat(where(), ": frame batch malformed: ", error));
    }
    if (info.pipe_index >= pipes.size()) {
      return data_loss(cat(where(), ": frames of pipe ", info.pipe_index, ", the header lists ",
                           pipes.size(), " pipes"));
    }
    if (info.pipe_index < current_pipe) {
      return data_loss(cat(where(), ": frames of pipe ", info.pipe_index, " after pipe ",
                           current_pipe, " (pipes come in order)"));
    }
    if (info.first_frame != frames_seen[info.pipe_index]) {
      return data_loss(cat(where(), ": batch starts at frame ", info.first_frame, " of pipe ",
                           info.pipe_index, ", expected frame ", frames_seen[info.pipe_index],
                           " (a chunk is missing or repeated)"));
    }
    // Moving on to a later pipe: the ones before it must be complete.
    for (size_t q = current_pipe; q < info.pipe_index; ++q) {
      if (frames_seen[q] != pipes[q].frames) {
        return data_loss(cat(where(), ": frames of pipe ", info.pipe_index, " while pipe ", q,
                             " has ", frames_seen[q], " of the ", pipes[q].frames,
                             " frames its header declares"));
      }
    }
    current_pipe = info.pipe_index;
    batch_pipe = info.pipe_index;
    batch = body;
    batch_cursor = info.frames_offset;
    in_batch = true;
    return Status::ok();
  }

  Status check_trailer(std::span<const uint8_t> payload) {
    image::Chunk chunk;
    if (!chunk.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
        !chunk.has_trailer()) {
      return data_loss(cat(where(), ": the trailer does not parse"));
    }
    const image::Trailer& t = chunk.trailer();
    if (t.chunks() != chunks - 1) {
      return data_loss(cat(where(), ": the trailer counts ", t.chunks(), " chunks before it, read ",
                           chunks - 1));
    }
    if (static_cast<size_t>(t.pipes_size()) != pipes.size()) {
      return data_loss(cat(where(), ": the trailer lists ", t.pipes_size(), " pipes, the header ",
                           pipes.size()));
    }
    for (size_t i = 0; i < pipes.size(); ++i) {
      const auto& totals = t.pipes(static_cast<int>(i));
      if (frames_seen[i] != pipes[i].frames || bytes_seen[i] != pipes[i].bytes ||
          totals.frames() != pipes[i].frames || totals.bytes() != pipes[i].bytes) {
        return data_loss(cat(where(), ": pipe ", i, " (", pipes[i].link, " ", pipes[i].direction,
                             "): header declares ", pipes[i].frames, " frames / ", pipes[i].bytes,
                             " bytes, trailer ", totals.frames(), " / ", totals.bytes(), ", read ",
                             frames_seen[i], " / ", bytes_seen[i]));
      }
    }
    if (t.total_frames() != total_frames || t.total_bytes() != total_bytes) {
      return data_loss(cat(where(), ": trailer totals ", t.total_frames(), " frames / ",
                           t.total_bytes(), " bytes, header ", total_frames, " / ", total_bytes));
    }
    if (kCheckSums && t.file_digest() != digest_before_last) {
      return data_loss(cat(where(), ": file digest mismatch (trailer ", hex32(t.file_digest()),
                           ", computed ", hex32(digest_before_last),
                           "): chunks are missing, repeated or "
                           "out of order"));
    }
    uint8_t extra;
    auto got = read_exact(&extra, 1);
    if (!got) return got.status();
    if (*got != 0) {
      return data_loss(cat(name, ": ", file_size - (offset - 1),
                           " unexpected bytes after the trailer at byte ", offset - 1));
    }
    return Status::ok();
  }
};

ImageReader::ImageReader(std::unique_ptr<State> state) : s_(std::move(state)) {}
ImageReader::ImageReader(ImageReader&&) noexcept = default;
ImageReader& ImageReader::operator=(ImageReader&&) noexcept = default;
ImageReader::~ImageReader() = default;

const NodeInfo& ImageReader::node() const {
  return s_->node;
}
const std::vector<PipeInfo>& ImageReader::pipes() const {
  return s_->pipes;
}
uint64_t ImageReader::total_frames() const {
  return s_->total_frames;
}
uint64_t ImageReader::total_bytes() const {
  return s_->total_bytes;
}
uint32_t ImageReader::max_frame_bytes() const {
  return s_->max_frame_bytes;
}

Result<ImageReader> ImageReader::open(const std::string& path,
                                      std::optional<std::string> expected_node_id) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found(cat(path, ": no such image"));
    return unavailable(cat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return open_fd(fd, path, std::move(expected_node_id));
}

Result<ImageReader> ImageReader::open_fd(int fd, const std::string& name,
                                         std::optional<std::string> expected_node_id) {
  auto s = std::make_unique<State>();
  s->fd = fd;
  s->name = name;
  // Sequential reading: let the kernel read ahead generously.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  AMBER_RETURN_IF_ERROR(s->read_header(expected_node_id));
  return ImageReader(std::move(s));
}

Result<bool> ImageReader::next_frame(size_t* pipe_index, FrameRecord* frame) {
  State& s = *s_;
  if (!s.failed.is_ok()) return s.failed;
  while (!s.done) {
    if (s.in_batch) {
      bool end = false;
      const char* error = "";
      if (!codec::next_frame(s.batch, &s.batch_cursor, frame, &end, &error)) {
        return s.fail(data_loss(cat(s.where(), ": frame malformed: ", error)));
      }
      if (!end) {
        const size_t p = s.batch_pipe;
        if (frame->bytes.size() > s.max_frame_bytes) {
          return s.fail(
              data_loss(cat(s.where(), ": a frame of ", frame->bytes.size(),
                            " bytes, beyond the header's max_frame_bytes ", s.max_frame_bytes)));
        }
        s.bytes_seen[p] += frame->bytes.size();
        if (s.bytes_seen[p] > s.pipes[p].bytes) {
          return s.fail(data_loss(cat(s.where(), ": pipe ", p, " holds more than the ",
                                      s.pipes[p].bytes, " bytes its header declares")));
        }
        if (++s.frames_seen[p] > s.pipes[p].frames) {
          return s.fail(data_loss(cat(s.where(), ": pipe ", p, " holds more than the ",
                                      s.pipes[p].frames, " frames its header declares")));
        }
        *pipe_index = p;
        return true;
      }
      s.in_batch = false;
    }
    std::span<const uint8_t> payload;
    if (Status st = s.read_chunk(&payload); !st) return s.fail(st);
    std::span<const uint8_t> body;
    switch (codec::classify_chunk(payload, &body)) {
      case codec::ChunkKind::kFrames:
        if (Status st = s.start_batch(body); !st) return s.fail(st);
        break;
      case codec::ChunkKind::kTrailer:
        if (Status st = s.check_trailer(payload); !st) return s.fail(st);
        s.done = true;
        break;
      case codec::ChunkKind::kHeader:
        return s.fail(data_loss(cat(s.where(), ": a second image header")));
      case codec::ChunkKind::kInvalid:
        return s.fail(data_loss(cat(s.where(), ": neither header, frames nor trailer")));
    }
  }
  return false;
}

Status verify_image(const std::string& path) {
  auto reader = ImageReader::open(path, std::nullopt);
  if (!reader) return reader.status();
  size_t pipe;
  FrameRecord frame;
  while (true) {
    auto more = reader->next_frame(&pipe, &frame);
    if (!more) return more.status();
    if (!*more) return Status::ok();
  }
}

Status check_capacity(const ImageReader& reader, uint64_t free_buffers, uint32_t buffer_bytes) {
  if (buffer_bytes == 0) return invalid_argument("check_capacity: buffer_bytes is 0");
  uint64_t needed = reader.total_frames();
  if (reader.max_frame_bytes() > buffer_bytes) needed += reader.total_bytes() / buffer_bytes;
  if (needed > free_buffers) {
    return resource_exhausted(cat("the image holds ", reader.total_frames(), " frames (",
                                  reader.total_bytes(), " bytes) needing up to ", needed,
                                  " buffers of ", buffer_bytes, " bytes; only ", free_buffers,
                                  " are free"));
  }
  return Status::ok();
}

}  // namespace amber::checkpoint
