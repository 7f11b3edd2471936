// Internal to core-checkpoint: the fixed parts of the file layout that the
// writer and the reader share.
#pragma once

#include <cstdint>
#include <cstring>

namespace amber::checkpoint::format {

inline constexpr char kMagic[8] = {'A', 'M', 'B', 'E', 'R', 'I', 'M', 'G'};
inline constexpr size_t kFileHeaderBytes = 16;  // magic, u32 version, u32 crc32c
inline constexpr size_t kChunkPrefixBytes = 8;  // u32 length, u32 crc32c

inline void put_u32(uint8_t* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t get_u32(const uint8_t* in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(in[i]) << (8 * i);
  return v;
}

}  // namespace amber::checkpoint::format
