#include "core-checkpoint/frame_codec.h"

#include <bit>
#include <cstring>

namespace amber::checkpoint::codec {
namespace {

// Fixed-width fields are copied as they are in memory.
static_assert(std::endian::native == std::endian::little);

enum WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

constexpr uint8_t tag(uint32_t field, WireType type) {
  return static_cast<uint8_t>(field << 3 | type);
}

inline uint8_t* put_varint(uint8_t* out, uint64_t v) {
  while (v >= 0x80) {
    *out++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<uint8_t>(v);
  return out;
}

// A length known only later: five bytes, continuation bits set on the
// first four (non-minimal varints are valid Protobuf).
inline void put_varint5(uint8_t* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<uint8_t>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out[4] = static_cast<uint8_t>(v);
}

inline uint8_t* put_fixed64(uint8_t* out, uint8_t key, int64_t v) {
  *out++ = key;
  std::memcpy(out, &v, 8);  // little-endian, as the wire format wants
  return out + 8;
}

inline size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline uint64_t zigzag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t unzigzag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

// Reads a varint of at most 10 bytes; nullptr when it does not end in time.
inline const uint8_t* get_varint(const uint8_t* p, const uint8_t* end, uint64_t* v) {
  if (p < end && *p < 0x80) {
    *v = *p;
    return p + 1;
  }
  uint64_t result = 0;
  for (int shift = 0; shift < 70 && p < end; shift += 7) {
    uint8_t b = *p++;
    result |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (b < 0x80) {
      *v = result;
      return p;
    }
  }
  return nullptr;
}

// One field: its number, wire type, and value (a varint, or the bytes of a
// length-delimited field). nullptr when malformed.
struct Field {
  uint32_t number = 0;
  uint8_t type = 0;
  uint64_t value = 0;
  const uint8_t* data = nullptr;
};

inline const uint8_t* get_field(const uint8_t* p, const uint8_t* end, Field* f,
                                const char** error) {
  uint64_t key;
  p = get_varint(p, end, &key);
  if (p == nullptr) {
    *error = "truncated field key";
    return nullptr;
  }
  f->number = static_cast<uint32_t>(key >> 3);
  f->type = static_cast<uint8_t>(key & 7);
  if (f->number == 0 || key >> 32 != 0) {
    *error = "invalid field number";
    return nullptr;
  }
  switch (f->type) {
    case kVarint:
      p = get_varint(p, end, &f->value);
      if (p == nullptr) *error = "truncated varint";
      return p;
    case kFixed64:
      if (end - p < 8) break;
      std::memcpy(&f->value, p, 8);
      return p + 8;
    case kFixed32:
      if (end - p < 4) break;
      f->value = 0;
      std::memcpy(&f->value, p, 4);
      return p + 4;
    case kLen:
      p = get_varint(p, end, &f->value);
      if (p == nullptr || f->value > static_cast<uint64_t>(end - p)) break;
      f->data = p;
      return p + f->value;
    default:
      *error = "unsupported wire type";
      return nullptr;
  }
  *error = "field runs past the end of its message";
  return nullptr;
}

}  // namespace

uint8_t* begin_batch(uint8_t* out, uint32_t pipe_index, uint64_t first_frame) {
  *out++ = tag(2, kLen);  // Chunk.frames
  out += 5;               // patched by end_batch
  *out++ = tag(1, kVarint);
  out = put_varint(out, pipe_index);
  *out++ = tag(2, kVarint);
  return put_varint(out, first_frame);
}

void end_batch(uint8_t* start, const uint8_t* end) {
  put_varint5(start + 1, static_cast<uint32_t>(end - (start + 6)));
}

uint8_t* encode_frame(uint8_t* out, const FrameRecord& f) {
  const std::span<const uint8_t> one[1] = {f.bytes};
  return encode_frame(out, f, one, f.bytes.size());
}

uint8_t* encode_frame(uint8_t* out, const FrameRecord& f,
                      std::span<const std::span<const uint8_t>> segments, size_t data_len) {
  // Fields at their default value are left out, as Protobuf does.
  const uint64_t extra = zigzag(f.extra_delay_ns);
  const uint64_t len = data_len;
  const size_t body = (f.stage != link::FrameStage::kBottleneck ? 2 : 0) + (f.express ? 2 : 0) +
                      (f.arrival_ns != 0 ? 9 : 0) + (extra != 0 ? 1 + varint_size(extra) : 0) +
                      (f.ready_ns != 0 ? 9 : 0) + (f.departure_ns != 0 ? 9 : 0) + 1 +
                      varint_size(len) + len;
  *out++ = tag(3, kLen);  // FrameBatch.frames
  out = put_varint(out, body);
  if (f.stage != link::FrameStage::kBottleneck) {
    *out++ = tag(1, kVarint);
    *out++ = static_cast<uint8_t>(f.stage);
  }
  if (f.express) {
    *out++ = tag(2, kVarint);
    *out++ = 1;
  }
  if (f.arrival_ns != 0) out = put_fixed64(out, tag(3, kFixed64), f.arrival_ns);
  if (extra != 0) {
    *out++ = tag(4, kVarint);
    out = put_varint(out, extra);
  }
  if (f.ready_ns != 0) out = put_fixed64(out, tag(5, kFixed64), f.ready_ns);
  if (f.departure_ns != 0) out = put_fixed64(out, tag(6, kFixed64), f.departure_ns);
  *out++ = tag(7, kLen);
  out = put_varint(out, len);
  for (const auto& segment : segments) {
    if (segment.empty()) continue;
    std::memcpy(out, segment.data(), segment.size());
    out += segment.size();
  }
  return out;
}

ChunkKind classify_chunk(std::span<const uint8_t> payload, std::span<const uint8_t>* body) {
  const uint8_t* p = payload.data();
  const uint8_t* end = p + payload.size();
  ChunkKind kind = ChunkKind::kInvalid;
  const char* error = nullptr;
  // The last occurrence of the oneof wins, as in Protobuf.
  while (p < end) {
    Field f;
    p = get_field(p, end, &f, &error);
    if (p == nullptr) return ChunkKind::kInvalid;
    if (f.type != kLen || f.number > 3) continue;
    if (f.number == 1) kind = ChunkKind::kHeader;
    if (f.number == 3) kind = ChunkKind::kTrailer;
    if (f.number == 2) {
      kind = ChunkKind::kFrames;
      *body = std::span<const uint8_t>(f.data, f.value);
    }
  }
  return kind;
}

bool scan_batch(std::span<const uint8_t> body, BatchInfo* info, const char** error) {
  const uint8_t* p = body.data();
  const uint8_t* end = p + body.size();
  *info = BatchInfo{};
  while (p < end) {
    if (*p == tag(3, kLen)) break;  // the first frame
    Field f;
    p = get_field(p, end, &f, error);
    if (p == nullptr) return false;
    if (f.number == 1 && f.type == kVarint) {
      if (f.value > UINT32_MAX) {
        *error = "pipe_index out of range";
        return false;
      }
      info->pipe_index = static_cast<uint32_t>(f.value);
    } else if (f.number == 2 && f.type == kVarint) {
      info->first_frame = f.value;
    } else if (f.number == 3) {
      *error = "frames: wrong wire type";
      return false;
    }
  }
  info->frames_offset = static_cast<size_t>(p - body.data());
  return true;
}

bool next_frame(std::span<const uint8_t> body, size_t* cursor, FrameRecord* frame, bool* done,
                const char** error) {
  const uint8_t* p = body.data() + *cursor;
  const uint8_t* end = body.data() + body.size();
  *done = false;
  while (p < end) {
    Field f;
    p = get_field(p, end, &f, error);
    if (p == nullptr) return false;
    if (f.number == 1 || f.number == 2) {
      *error = "pipe_index or first_frame after the frames";
      return false;
    }
    if (f.number != 3 || f.type != kLen) continue;
    *cursor = static_cast<size_t>(p - body.data());
    // Frame message: defaults first, as Protobuf leaves absent fields.
    *frame = FrameRecord{};
    const uint8_t* q = f.data;
    const uint8_t* fend = f.data + f.value;
    while (q < fend) {
      // Fast paths for the fields as the writer lays them out; anything
      // else goes through the general field reader.
      const uint8_t key = *q;
      if ((key == tag(3, kFixed64) || key == tag(5, kFixed64) || key == tag(6, kFixed64)) &&
          fend - q >= 9) {
        int64_t v;
        std::memcpy(&v, q + 1, 8);
        q += 9;
        if (key == tag(3, kFixed64)) {
          frame->arrival_ns = v;
        } else if (key == tag(5, kFixed64)) {
          frame->ready_ns = v;
        } else {
          frame->departure_ns = v;
        }
        continue;
      }
      if (key == tag(7, kLen) && fend - q >= 2 && q[1] < 0x80) {
        const size_t len = q[1];
        if (len > static_cast<size_t>(fend - q - 2)) {
          *error = "field runs past the end of its message";
          return false;
        }
        frame->bytes = std::span<const uint8_t>(q + 2, len);
        q += 2 + len;
        continue;
      }
      Field g;
      q = get_field(q, fend, &g, error);
      if (q == nullptr) return false;
      if (g.number == 7) {
        if (g.type != kLen) {
          *error = "frame data: wrong wire type";
          return false;
        }
        frame->bytes = std::span<const uint8_t>(g.data, g.value);
        continue;
      }
      if (g.type == kFixed64) {
        const int64_t v = static_cast<int64_t>(g.value);
        if (g.number == 3) frame->arrival_ns = v;
        if (g.number == 5) frame->ready_ns = v;
        if (g.number == 6) frame->departure_ns = v;
        continue;
      }
      if (g.type != kVarint) continue;
      switch (g.number) {
        case 1:
          if (g.value > 2) {
            *error = "frame stage: unknown value";
            return false;
          }
          frame->stage = static_cast<link::FrameStage>(g.value);
          break;
        case 2:
          frame->express = g.value != 0;
          break;
        case 4:
          frame->extra_delay_ns = unzigzag(g.value);
          break;
        default:
          break;
      }
    }
    return true;
  }
  *cursor = body.size();
  *done = true;
  return true;
}

}  // namespace amber::checkpoint::codec
