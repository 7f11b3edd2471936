#include "link-emulator/pipe_edit.h"

#include <charconv>
#include <string>

#include "common/strings.h"
#include "common/units.h"
#include "link-emulator/schedule.h"

namespace amber::link {
namespace {

template <typename T>
Status parse_integer(std::string_view key, std::string_view value, T& out) {
  T v{};
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size()) {
    return invalid_argument(cat(key, ": '", value, "' is not a whole number"));
  }
  out = v;
  return Status::ok();
}

template <typename T, typename U>
Status assign(std::string_view key, Result<T> parsed, U& out) {
  if (!parsed) return invalid_argument(cat(key, ": ", parsed.status().message()));
  out = static_cast<U>(*parsed);
  return Status::ok();
}

// trace=FILE loads a Mahimahi trace as the rate, keeping any segments;
// trace=none drops it. A changed schedule starts again when applied.
Status set_trace(PipeConfig& c, std::string_view value) {
  Schedule schedule = c.schedule ? *c.schedule : Schedule{};
  if (value == "none") {
    schedule.trace.reset();
  } else {
    auto trace = load_mahimahi_trace(std::string(value));
    if (!trace) return invalid_argument(cat("trace: ", trace.status().message()));
    schedule.trace = std::move(trace).value();
  }
  if (schedule.segments.empty() && !schedule.trace) {
    c.schedule = ScheduleRef();
  } else {
    c.schedule = ScheduleRef(std::move(schedule));
  }
  return Status::ok();
}

}  // namespace

Status apply_setting(PipeConfig& c, std::string_view key, std::string_view value) {
  PipeConfig next = c;
  Status s;
  if (key == "rate")
    s = assign(key, parse_rate_bps(value), next.rate_bps);
  else if (key == "delay")
    s = assign(key, parse_duration_ns(value), next.delay_ns);
  else if (key == "jitter")
    s = assign(key, parse_duration_ns(value), next.jitter_ns);
  else if (key == "jitter_distribution") {
    if (value == "uniform")
      next.jitter_distribution = JitterDistribution::kUniform;
    else if (value == "normal")
      next.jitter_distribution = JitterDistribution::kNormal;
    else
      s = invalid_argument(cat(key, ": '", value, "' is not uniform or normal"));
  } else if (key == "loss") {
    Result<double> p = parse_probability(value);
    if (!p)
      s = invalid_argument(cat(key, ": ", p.status().message()));
    else if (*p == 0)
      next.loss = NoLoss{};
    else
      next.loss = RandomLoss{*p};
  } else if (key == "queue_frames") {
    if (value == "none")
      next.queue_limit_frames.reset();
    else {
      uint32_t n = 0;
      s = parse_integer(key, value, n);
      next.queue_limit_frames = n;
    }
  } else if (key == "queue_bytes") {
    if (value == "none")
      next.queue_limit_bytes.reset();
    else {
      uint64_t n = 0;
      s = assign(key, parse_bytes(value), n);
      next.queue_limit_bytes = n;
    }
  } else if (key == "duplicate")
    s = assign(key, parse_probability(value), next.duplicate);
  else if (key == "corrupt")
    s = assign(key, parse_probability(value), next.corrupt);
  else if (key == "reorder")
    s = assign(key, parse_probability(value), next.reorder);
  else if (key == "seed")
    s = parse_integer(key, value, next.seed);
  else if (key == "overhead_bytes")
    s = parse_integer(key, value, next.overhead_bytes);
  else if (key == "trace")
    s = set_trace(next, value);
  else if (key == "down") {
    if (value == "yes" || value == "true" || value == "1")
      next.down = true;
    else if (value == "no" || value == "false" || value == "0")
      next.down = false;
    else
      s = invalid_argument(cat(key, ": '", value, "' is not yes or no"));
  } else {
    s = invalid_argument(
        cat("unknown setting '", key,
            "' (rate, delay, jitter, jitter_distribution, loss, queue_frames, "
            "queue_bytes, duplicate, corrupt, reorder, seed, overhead_bytes, trace, down)"));
  }
  if (s) c = next;
  return s;
}

Status apply_settings(PipeConfig& c, std::string_view settings) {
  PipeConfig next = c;
  size_t pos = 0;
  while (pos < settings.size()) {
    size_t end = settings.find_first_of(", ", pos);
    if (end == std::string_view::npos) end = settings.size();
    std::string_view item = settings.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return invalid_argument(cat("'", item, "' is not key=value"));
    }
    AMBER_RETURN_IF_ERROR(apply_setting(next, item.substr(0, eq), item.substr(eq + 1)));
  }
  c = next;
  return Status::ok();
}

}  // namespace amber::link
