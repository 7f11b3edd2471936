#include "core-checkpoint/crc32c.h"

#include <array>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace amber::checkpoint {
namespace {

constexpr uint32_t kPoly = 0x82f63b78u;  // reflected Castagnoli polynomial

#if !defined(__SSE4_2__)
constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = make_table();
#endif

// The raw register update (no pre/post inversion) over size bytes.
uint32_t update(uint32_t c, const uint8_t* p, size_t size) {
#if defined(__SSE4_2__)
  uint64_t c64 = c;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c64 = _mm_crc32_u64(c64, word);
    p += 8;
    size -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (size > 0) {
    c = _mm_crc32_u8(c, *p++);
    --size;
  }
#else
  while (size > 0) {
    c = kTable[(c ^ *p++) & 0xff] ^ (c >> 8);
    --size;
  }
#endif
  return c;
}

#if defined(__SSE4_2__)
// GF(2) 32x32 matrices, to advance a CRC register over runs of zero bytes
// (zlib's crc32_combine method).
uint32_t gf2_times(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  for (int i = 0; vec != 0; ++i, vec >>= 1) {
    if (vec & 1) sum ^= mat[i];
  }
  return sum;
}

void gf2_square(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = gf2_times(mat, mat[n]);
}

// The raw register c after `len` more zero bytes.
uint32_t shift_zeros(uint32_t c, size_t len) {
  uint32_t even[32], odd[32];
  odd[0] = kPoly;  // one zero bit
  uint32_t row = 1;
  for (int n = 1; n < 32; ++n) {
    odd[n] = row;
    row <<= 1;
  }
  gf2_square(even, odd);  // two zero bits
  gf2_square(odd, even);  // four
  do {
    gf2_square(even, odd);  // first pass: one zero byte
    if (len & 1) c = gf2_times(even, c);
    len >>= 1;
    if (len == 0) break;
    gf2_square(odd, even);
    if (len & 1) c = gf2_times(odd, c);
    len >>= 1;
  } while (len != 0);
  return c;
}

// Three independent crc32 chains hide the instruction's 3-cycle latency.
// Blocks of three fixed-size lanes are joined by shifting a lane's CRC over
// the bytes after it: one 32x32 GF(2) matrix, computed once.
constexpr size_t kLane = 16 * 1024;

struct LaneShift {
  uint32_t matrix[32];
  LaneShift() {
    for (int i = 0; i < 32; ++i) matrix[i] = shift_zeros(uint32_t{1} << i, kLane);
  }
};

uint32_t update_3way(uint32_t c, const uint8_t* p, size_t size) {
  static const LaneShift shift;
  while (size >= 3 * kLane) {
    uint64_t ca = c, cb = 0, cd = 0;
    for (size_t i = 0; i < kLane; i += 8) {
      uint64_t wa, wb, wd;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kLane + i, 8);
      std::memcpy(&wd, p + 2 * kLane + i, 8);
      ca = _mm_crc32_u64(ca, wa);
      cb = _mm_crc32_u64(cb, wb);
      cd = _mm_crc32_u64(cd, wd);
    }
    const uint32_t ab =
        gf2_times(shift.matrix, static_cast<uint32_t>(ca)) ^ static_cast<uint32_t>(cb);
    c = gf2_times(shift.matrix, ab) ^ static_cast<uint32_t>(cd);
    p += 3 * kLane;
    size -= 3 * kLane;
  }
  return update(c, p, size);
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
#if defined(__SSE4_2__)
  // Below this the joins cost more than the parallel lanes save.
  if (size >= 3 * kLane) return ~update_3way(~crc, p, size);
#endif
  return ~update(~crc, p, size);
}

}  // namespace amber::checkpoint
