#include "common/units.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common/strings.h"

namespace amber {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "12.5Mbit" into the number 12.5 and the suffix "mbit" (lower case).
struct Quantity {
  double number;
  std::string suffix;
};

Result<Quantity> split_quantity(std::string_view text, std::string_view what) {
  std::string_view s = trim(text);
  if (s.empty()) return invalid_argument(cat("empty ", what));
  size_t end = 0;
  while (end < s.size() && (std::isdigit(static_cast<unsigned char>(s[end])) || s[end] == '.' ||
                            s[end] == '-' || s[end] == '+' || s[end] == 'e' || s[end] == 'E')) {
    // An 'e' is an exponent only when followed by a digit or sign ("1e6"),
    // not the start of a unit.
    if ((s[end] == 'e' || s[end] == 'E') &&
        (end + 1 >= s.size() || !(std::isdigit(static_cast<unsigned char>(s[end + 1])) ||
                                  s[end + 1] == '-' || s[end + 1] == '+')))
      break;
    ++end;
  }
  double number = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + end, number);
  if (ec != std::errc() || ptr != s.data() + end || end == 0 || !std::isfinite(number)) {
    return invalid_argument(cat("'", text, "' is not a valid ", what));
  }
  return Quantity{number, lower(trim(s.substr(end)))};
}

Status bad_unit(std::string_view text, std::string_view what, std::string_view units) {
  return invalid_argument(cat("'", text, "': unknown unit for ", what, " (use ", units, ")"));
}

template <typename T>
Result<T> scaled(double number, double scale, std::string_view text, std::string_view what) {
  double v = std::round(number * scale);
  if (v > static_cast<double>(std::numeric_limits<T>::max()) ||
      v < static_cast<double>(std::numeric_limits<T>::lowest())) {
    return out_of_range(cat("'", text, "' is too large for a ", what));
  }
  return static_cast<T>(v);
}

}  // namespace

Result<int64_t> parse_duration_ns(std::string_view text) {
  auto q = split_quantity(text, "duration");
  if (!q) return q.status();
  double scale;
  const std::string& u = q->suffix;
  if (u == "ns")
    scale = 1;
  else if (u == "us" || u == "µs")
    scale = 1e3;
  else if (u == "ms")
    scale = 1e6;
  else if (u == "s")
    scale = 1e9;
  else if (u == "min")
    scale = 60e9;
  else if (u == "h")
    scale = 3600e9;
  else if (u.empty() && q->number == 0)
    scale = 1;
  else if (u.empty())
    return invalid_argument(cat("'", text, "': a duration needs a unit (ns, us, ms, s, min, h)"));
  else
    return bad_unit(text, "duration", "ns, us, ms, s, min, h");
  return scaled<int64_t>(q->number, scale, text, "duration");
}

Result<uint64_t> parse_rate_bps(std::string_view text) {
  if (lower(trim(text)) == "unlimited") return uint64_t{0};
  auto q = split_quantity(text, "rate");
  if (!q) return q.status();
  std::string u = q->suffix;
  for (std::string_view tail : {"/s", "ps"}) {
    if (u.size() > tail.size() && u.ends_with(tail)) u.resize(u.size() - tail.size());
  }
  double scale;
  if (u.empty() || u == "bit" || u == "b")
    scale = 1;
  else if (u == "kbit" || u == "kb")
    scale = 1e3;
  else if (u == "mbit" || u == "mb")
    scale = 1e6;
  else if (u == "gbit" || u == "gb")
    scale = 1e9;
  else if (u == "tbit" || u == "tb")
    scale = 1e12;
  else
    return bad_unit(text, "rate", "bit, kbit, Mbit, Gbit, or 'unlimited'");
  if (q->number < 0) return invalid_argument(cat("rate '", text, "' is negative"));
  return scaled<uint64_t>(q->number, scale, text, "rate");
}

Result<uint64_t> parse_bytes(std::string_view text) {
  auto q = split_quantity(text, "size");
  if (!q) return q.status();
  const std::string& u = q->suffix;
  double scale;
  if (u.empty() || u == "b")
    scale = 1;
  else if (u == "kb")
    scale = 1e3;
  else if (u == "mb")
    scale = 1e6;
  else if (u == "gb")
    scale = 1e9;
  else if (u == "kib")
    scale = 1024.0;
  else if (u == "mib")
    scale = 1024.0 * 1024;
  else if (u == "gib")
    scale = 1024.0 * 1024 * 1024;
  else
    return bad_unit(text, "size", "B, KB, MB, GB, KiB, MiB, GiB");
  if (q->number < 0) return invalid_argument(cat("size '", text, "' is negative"));
  return scaled<uint64_t>(q->number, scale, text, "size");
}

Result<double> parse_probability(std::string_view text) {
  auto q = split_quantity(text, "probability");
  if (!q) return q.status();
  double p = q->number;
  if (q->suffix == "%")
    p /= 100.0;
  else if (!q->suffix.empty())
    return bad_unit(text, "probability", "a fraction like 0.01 or a percentage like 1%");
  if (!(p >= 0.0 && p <= 1.0)) {
    return invalid_argument(cat("probability '", text, "' is outside [0, 1]"));
  }
  return p;
}

std::string format_duration_ns(int64_t ns) {
  char buf[48];
  double a = std::fabs(static_cast<double>(ns));
  if (a >= 1e9)
    std::snprintf(buf, sizeof buf, "%gs", ns / 1e9);
  else if (a >= 1e6)
    std::snprintf(buf, sizeof buf, "%gms", ns / 1e6);
  else if (a >= 1e3)
    std::snprintf(buf, sizeof buf, "%gus", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lldns", static_cast<long long>(ns));
  return buf;
}

std::string format_rate_bps(uint64_t bps) {
  if (bps == 0) return "unlimited";
  char buf[48];
  double v = static_cast<double>(bps);
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%gGbit/s", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%gMbit/s", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%gkbit/s", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%llubit/s", static_cast<unsigned long long>(bps));
  return buf;
}

std::string format_bytes(uint64_t bytes) {
  char buf[48];
  double v = static_cast<double>(bytes);
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.3gGB", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.3gMB", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.3gKB", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
  return buf;
}

}  // namespace amber
