#include "core-checkpoint/frame_codec.h"

#include <cstring>

namespace amber::checkpoint::codec {
namespace {

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

const uint8_t* get_field(const uint8_t* p, const uint8_t* end, Field* f, const char** error) {
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
  const uint64_t arrival = static_cast<uint64_t>(f.arrival_ns);
  const uint64_t extra = zigzag(f.extra_delay_ns);
  const uint64_t ready = static_cast<uint64_t>(f.ready_ns);
  const uint64_t departure = static_cast<uint64_t>(f.departure_ns);
  const uint64_t len = f.bytes.size();
  const size_t body = 2 + 2 + 1 + varint_size(arrival) + 1 + varint_size(extra) + 1 +
                      varint_size(ready) + 1 + varint_size(departure) + 1 + varint_size(len) + len;
  *out++ = tag(3, kLen);  // FrameBatch.frames
  out = put_varint(out, body);
  *out++ = tag(1, kVarint);
  *out++ = static_cast<uint8_t>(f.stage);
  *out++ = tag(2, kVarint);
  *out++ = f.express ? 1 : 0;
  *out++ = tag(3, kVarint);
  out = put_varint(out, arrival);
  *out++ = tag(4, kVarint);
  out = put_varint(out, extra);
  *out++ = tag(5, kVarint);
  out = put_varint(out, ready);
  *out++ = tag(6, kVarint);
  out = put_varint(out, departure);
  *out++ = tag(7, kLen);
  out = put_varint(out, len);
  if (len > 0) std::memcpy(out, f.bytes.data(), len);
  return out + len;
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
      if (f.type != kLen) {
        *error = "frames: wrong wire type";
        return false;
      }
      ++info->frames;
    }
  }
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
    if (f.number != 3 || f.type != kLen) continue;
    *cursor = static_cast<size_t>(p - body.data());
    // Frame message: defaults first, as Protobuf leaves absent fields.
    *frame = FrameRecord{};
    const uint8_t* q = f.data;
    const uint8_t* fend = f.data + f.value;
    while (q < fend) {
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
      if (g.type != kVarint) continue;
      switch (g.number) {
        case 1:
          if (g.value > 2) {
            *error = "frame stage: unknown value";
            return false;
          }
          frame->stage = static_cast<link::FrameStage>(g.value);
          break;
        case 2: frame->express = g.value != 0; break;
        case 3: frame->arrival_ns = static_cast<int64_t>(g.value); break;
        case 4: frame->extra_delay_ns = unzigzag(g.value); break;
        case 5: frame->ready_ns = static_cast<int64_t>(g.value); break;
        case 6: frame->departure_ns = static_cast<int64_t>(g.value); break;
        default: break;
      }
    }
    return true;
  }
  *cursor = body.size();
  *done = true;
  return true;
}

}  // namespace amber::checkpoint::codec
