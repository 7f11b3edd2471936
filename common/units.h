// Human-readable quantities for configuration files and command lines:
// "20ms", "100Mbit", "64KiB", "1%". Parsers return a clear error naming the
// offending text; nothing is clamped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace amber {

// "20ms", "1.5s", "250us", "100ns", "0". Integer nanoseconds, may be negative
// only if allow_negative (the caller validates ranges with its own message).
Result<int64_t> parse_duration_ns(std::string_view text);

// "100Mbit", "1Gbit", "10gbps", "2.5Gbit/s", "64kbit", "1000000" (bit/s),
// or "unlimited" (returns 0). Decimal prefixes, bits per second.
Result<uint64_t> parse_rate_bps(std::string_view text);

// "1500", "64KiB", "16MiB", "1MB". Bytes.
Result<uint64_t> parse_bytes(std::string_view text);

// "0.01", "1%", "0.5 %". A probability in [0, 1].
Result<double> parse_probability(std::string_view text);

std::string format_duration_ns(int64_t ns);  // "20ms", "1.5us"
std::string format_rate_bps(uint64_t bps);   // "100Mbit/s", "unlimited"
std::string format_bytes(uint64_t bytes);    // "12.5MB"

}  // namespace amber
