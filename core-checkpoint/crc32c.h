// CRC32C (Castagnoli), the checksum of every image chunk: SSE4.2's crc32
// instruction where the compiler targets it, a table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

namespace amber::checkpoint {

// Continues a CRC: crc32c(b, crc32c(a)) == crc32c(a + b). Start with 0.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace amber::checkpoint
