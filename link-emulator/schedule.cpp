#include "link-emulator/schedule.h"

#include <charconv>
#include <fstream>
#include <sstream>

#include "common/strings.h"
#include "common/units.h"

namespace amber::link {

ScheduleRef::ScheduleRef(Schedule schedule)
    : schedule_(std::make_shared<const Schedule>(std::move(schedule))) {}

bool ScheduleRef::operator==(const ScheduleRef& other) const {
  if (schedule_ == other.schedule_) return true;
  if (!schedule_ || !other.schedule_) return false;
  return *schedule_ == *other.schedule_;
}

PipeConfig Segment::applied_to(PipeConfig base) const {
  if (rate_bps) base.rate_bps = *rate_bps;
  if (delay_ns) base.delay_ns = *delay_ns;
  if (jitter_ns) base.jitter_ns = *jitter_ns;
  if (loss) base.loss = *loss;
  if (queue_limit_frames) base.queue_limit_frames = *queue_limit_frames;
  if (queue_limit_bytes) base.queue_limit_bytes = *queue_limit_bytes;
  return base;
}

uint64_t DeliveryTrace::mean_rate_bps() const {
  if (ms.empty() || ms.back() == 0) return 0;
  const unsigned __int128 bits = static_cast<unsigned __int128>(ms.size()) * opportunity_bytes * 8;
  return static_cast<uint64_t>(bits * 1000 / ms.back());
}

const char* schedule_end_name(ScheduleEnd end) {
  switch (end) {
    case ScheduleEnd::kLoop:
      return "loop";
    case ScheduleEnd::kHoldLast:
      return "hold";
    case ScheduleEnd::kEnd:
      return "end";
  }
  return "unknown";
}

const char* schedule_start_name(ScheduleStart start) {
  switch (start) {
    case ScheduleStart::kAtOnce:
      return "now";
    case ScheduleStart::kFirstFrame:
      return "first_frame";
    case ScheduleStart::kOnEvent:
      return "event";
  }
  return "unknown";
}

const char* schedule_waiting_for(ScheduleStart start) {
  switch (start) {
    case ScheduleStart::kAtOnce:
      return "waiting for the pipe's first event";
    case ScheduleStart::kFirstFrame:
      return "waiting for the link's first frame";
    case ScheduleStart::kOnEvent:
      return "waiting for a start event";
  }
  return "waiting";
}

int64_t Schedule::cycle_ns() const {
  int64_t total = 0;
  for (const Segment& s : segments) total += s.duration_ns;
  return total;
}

Status Schedule::validate() const {
  if (segments.empty() && !trace) return invalid_argument("schedule: neither segments nor a trace");
  // A day of segments keeps every sum far from int64 overflow.
  constexpr int64_t kMaxSegmentNs = int64_t{86'400} * 1'000'000'000;
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& s = segments[i];
    if (s.duration_ns <= 0 || s.duration_ns > kMaxSegmentNs) {
      return invalid_argument(cat("segment ", i + 1, ": duration must be above 0 and at most 24h (",
                                  format_duration_ns(s.duration_ns), ")"));
    }
    if (trace && s.rate_bps) {
      return invalid_argument(
          cat("segment ", i + 1, ": sets a rate, but the trace gives the rate of this schedule"));
    }
  }
  if (trace) {
    if (trace->ms.empty()) return invalid_argument("trace: no delivery opportunities");
    if (trace->ms.back() == 0) return invalid_argument("trace: must last longer than 0 ms");
    for (size_t i = 1; i < trace->ms.size(); ++i) {
      if (trace->ms[i] < trace->ms[i - 1]) {
        return invalid_argument(cat("trace: opportunity ", i + 1, " at ", trace->ms[i],
                                    " ms comes before the one above it"));
      }
    }
    if (trace->opportunity_bytes == 0 || trace->opportunity_bytes > 1'000'000) {
      return invalid_argument(cat("trace: opportunity_bytes must be between 1 and 1000000 (",
                                  trace->opportunity_bytes, ")"));
    }
    if (trace->header_bytes > 1024) {
      return invalid_argument(cat("trace: header_bytes ", trace->header_bytes,
                                  " is more than any link layer adds (at most 1024)"));
    }
  }
  return Status::ok();
}

namespace {

// Lines of a text file with their numbers, without comments ('#') and
// surrounding blanks; blank lines are skipped.
template <typename Visit>
Status for_each_line(std::string_view text, Visit&& visit) {
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) continue;
    AMBER_RETURN_IF_ERROR(visit(line, line_no));
  }
  return Status::ok();
}

Result<std::string> read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(cat(path, ": cannot open the ", what));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Result<DeliveryTrace> parse_mahimahi_trace(std::string_view text, const std::string& name) {
  DeliveryTrace trace;
  trace.source = name;
  Status s = for_each_line(text, [&](std::string_view line, size_t no) -> Status {
    const auto where = [&] { return cat(name, ":", no, ": "); };
    if (line.front() == '-') {
      return invalid_argument(cat(where(), "'", line,
                                  "' is negative: a line is a millisecond "
                                  "from the start of the trace"));
    }
    uint32_t ms = 0;
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), ms);
    if (ec == std::errc::result_out_of_range) {
      return invalid_argument(cat(where(), "'", line, "' ms is beyond 2^32 ms (49 days)"));
    }
    if (ec != std::errc() || ptr != line.data() + line.size()) {
      return invalid_argument(cat(where(), "'", line,
                                  "' is not a whole number of milliseconds (one opportunity "
                                  "per line)"));
    }
    if (!trace.ms.empty() && ms < trace.ms.back()) {
      return invalid_argument(cat(where(), ms, " ms is before the line above (", trace.ms.back(),
                                  " ms): timestamps must not decrease"));
    }
    trace.ms.push_back(ms);
    return Status::ok();
  });
  if (!s) return s;
  if (trace.ms.empty())
    return invalid_argument(cat(name, ":1: the trace is empty (no opportunity)"));
  if (trace.ms.back() == 0) {
    return invalid_argument(cat(name, ":", trace.ms.size(),
                                ": the trace lasts 0 ms (its last opportunity is its period)"));
  }
  return trace;
}

Result<DeliveryTrace> load_mahimahi_trace(const std::string& path) {
  auto text = read_file(path, "trace");
  if (!text) return text.status();
  return parse_mahimahi_trace(*text, path);
}

namespace {

enum class Column { kDuration, kRate, kDelay, kJitter, kLoss, kQueue, kQueueBytes };

Result<Column> column_of(std::string_view name) {
  if (name == "duration") return Column::kDuration;
  if (name == "rate") return Column::kRate;
  if (name == "delay") return Column::kDelay;
  if (name == "jitter") return Column::kJitter;
  if (name == "loss") return Column::kLoss;
  if (name == "queue") return Column::kQueue;
  if (name == "queue_bytes") return Column::kQueueBytes;
  return invalid_argument(
      cat("unknown column '", name, "' (duration, rate, delay, jitter, loss, queue, queue_bytes)"));
}

std::vector<std::string_view> split_cells(std::string_view line) {
  std::vector<std::string_view> cells;
  while (true) {
    size_t comma = line.find(',');
    std::string_view cell = line.substr(0, comma);
    while (!cell.empty() && cell.front() == ' ') cell.remove_prefix(1);
    while (!cell.empty() && cell.back() == ' ') cell.remove_suffix(1);
    cells.push_back(cell);
    if (comma == std::string_view::npos) return cells;
    line = line.substr(comma + 1);
  }
}

template <typename T>
Status set_cell(Result<T> parsed, std::optional<T>& out) {
  if (!parsed) return parsed.status();
  out = *parsed;
  return Status::ok();
}

Status read_cell(Column column, std::string_view cell, Segment& seg) {
  switch (column) {
    case Column::kDuration: {
      Result<int64_t> d = parse_duration_ns(cell);
      if (!d) return d.status();
      seg.duration_ns = *d;
      if (*d <= 0) return invalid_argument(cat("the duration must be above 0 (", cell, ")"));
      return Status::ok();
    }
    case Column::kRate:
      return set_cell(parse_rate_bps(cell), seg.rate_bps);
    case Column::kDelay:
    case Column::kJitter: {
      Result<int64_t> d = parse_duration_ns(cell);
      if (!d) return d.status();
      if (*d < 0) return invalid_argument(cat("'", cell, "' is negative"));
      (column == Column::kDelay ? seg.delay_ns : seg.jitter_ns) = *d;
      return Status::ok();
    }
    case Column::kLoss: {
      Result<double> p = parse_probability(cell);
      if (!p) return p.status();
      seg.loss = *p == 0 ? LossConfig{NoLoss{}} : LossConfig{RandomLoss{*p}};
      return Status::ok();
    }
    case Column::kQueue: {
      uint32_t n = 0;
      auto [ptr, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), n);
      if (ec != std::errc() || ptr != cell.data() + cell.size() || n == 0) {
        return invalid_argument(cat("'", cell, "' is not a queue limit of at least 1 frame"));
      }
      seg.queue_limit_frames = n;
      return Status::ok();
    }
    case Column::kQueueBytes: {
      Result<uint64_t> b = parse_bytes(cell);
      if (!b) return b.status();
      if (*b == 0) return invalid_argument("the byte limit must be at least 1 byte");
      seg.queue_limit_bytes = *b;
      return Status::ok();
    }
  }
  return Status::ok();
}

}  // namespace

Result<std::vector<Segment>> parse_segments_csv(std::string_view text, const std::string& name) {
  std::vector<Column> columns;
  std::vector<std::string_view> column_names;
  std::vector<Segment> segments;
  Status s = for_each_line(text, [&](std::string_view line, size_t no) -> Status {
    const std::vector<std::string_view> cells = split_cells(line);
    if (columns.empty()) {
      bool has_duration = false;
      for (std::string_view cell : cells) {
        Result<Column> c = column_of(cell);
        if (!c) return invalid_argument(cat(name, ":", no, ": ", c.status().message()));
        for (Column seen : columns) {
          if (seen == *c)
            return invalid_argument(cat(name, ":", no, ": column '", cell, "' twice"));
        }
        has_duration |= *c == Column::kDuration;
        columns.push_back(*c);
        column_names.push_back(cell);
      }
      if (!has_duration) {
        return invalid_argument(cat(name, ":", no, ": the header needs a 'duration' column"));
      }
      return Status::ok();
    }
    if (cells.size() != columns.size()) {
      return invalid_argument(cat(name, ":", no, ": ", cells.size(), " cells, the header has ",
                                  columns.size(), " columns"));
    }
    Segment seg;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (cells[i].empty()) {
        if (columns[i] == Column::kDuration) {
          return invalid_argument(cat(name, ":", no, ": duration: every segment needs one"));
        }
        continue;  // keeps the static value
      }
      Status cell = read_cell(columns[i], cells[i], seg);
      if (!cell)
        return invalid_argument(cat(name, ":", no, ": ", column_names[i], ": ", cell.message()));
    }
    segments.push_back(seg);
    return Status::ok();
  });
  if (!s) return s;
  if (columns.empty()) return invalid_argument(cat(name, ":1: empty (expected a header line)"));
  if (segments.empty()) return invalid_argument(cat(name, ": a header but no segment"));
  return segments;
}

Result<std::vector<Segment>> load_segments_csv(const std::string& path) {
  auto text = read_file(path, "segment file");
  if (!text) return text.status();
  return parse_segments_csv(*text, path);
}

std::string describe(const Schedule& s) {
  std::string out;
  if (!s.segments.empty()) {
    out = cat(s.segments.size(), s.segments.size() == 1 ? " segment" : " segments", " over ",
              format_duration_ns(s.cycle_ns()));
  }
  if (s.trace) {
    const DeliveryTrace& t = *s.trace;
    if (!out.empty()) out += ", ";
    std::string_view file = t.source;
    if (size_t slash = file.rfind('/'); slash != std::string_view::npos)
      file = file.substr(slash + 1);
    out += cat("trace ", file, " (", t.ms.size(), " opportunities of ", t.opportunity_bytes,
               " B over ", format_duration_ns(t.period_ns()), ", mean ",
               format_rate_bps(t.mean_rate_bps()), ")");
  }
  const char* starts = s.start == ScheduleStart::kFirstFrame ? "starts on the link's first frame, "
                       : s.start == ScheduleStart::kOnEvent  ? "starts on a start event, "
                                                             : "";
  return cat(out, ", ", starts, "then ", schedule_end_name(s.at_end));
}

}  // namespace amber::link
