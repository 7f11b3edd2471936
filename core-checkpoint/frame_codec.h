// The hot path of the image: frame batches encoded and decoded by hand, in
// the Protobuf wire format of image.Chunk{frames: FrameBatch{...}}, without
// building a message or copying a frame's bytes twice. Decoding never
// reads past the buffer and skips fields it does not know.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core-checkpoint/image.h"

namespace amber::checkpoint::codec {

// Bytes begin_batch() writes at most.
inline constexpr size_t kBatchPrefixMax = 1 + 5 + 1 + 5 + 1 + 10;
// Bytes encode_frame() writes at most for a frame of data_len bytes.
constexpr size_t frame_encoded_max(size_t data_len) {
  return 1 + 5 + 2 + 2 + 3 * 9 + 11 + 1 + 5 + data_len;
}

// Starts a Chunk holding a FrameBatch at out; returns the end. The batch's
// length is patched by end_batch(start, end) once its frames are in.
uint8_t* begin_batch(uint8_t* out, uint32_t pipe_index, uint64_t first_frame);
void end_batch(uint8_t* start, const uint8_t* end);
uint8_t* encode_frame(uint8_t* out, const FrameRecord& frame);
// The same for a frame in pieces (an mbuf chain): frame.bytes is ignored,
// the data is the concatenation of segments, data_len bytes in all.
uint8_t* encode_frame(uint8_t* out, const FrameRecord& frame,
                      std::span<const std::span<const uint8_t>> segments, size_t data_len);

// A chunk's payload, classified without parsing the header or trailer.
enum class ChunkKind { kHeader, kFrames, kTrailer, kInvalid };
// For kFrames, *body is the FrameBatch's bytes.
ChunkKind classify_chunk(std::span<const uint8_t> payload, std::span<const uint8_t>* body);

struct BatchInfo {
  uint32_t pipe_index = 0;
  uint64_t first_frame = 0;
  size_t frames_offset = 0;  // where the first frame (or the end) is
};
// Reads a FrameBatch's scalar fields, which precede its frames (the image
// format requires it, so a batch is read in one pass). Returns false, with
// a reason in *error, when they are malformed.
bool scan_batch(std::span<const uint8_t> body, BatchInfo* info, const char** error);

// Decodes the next frame of a batch starting at *cursor (an offset into
// body, first BatchInfo::frames_offset), advancing it. Returns false with a
// reason at malformed data or a batch field after the frames; *done is set
// when no frame is left.
bool next_frame(std::span<const uint8_t> body, size_t* cursor, FrameRecord* frame, bool* done,
                const char** error);

}  // namespace amber::checkpoint::codec
