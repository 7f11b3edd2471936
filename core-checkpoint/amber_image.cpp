// amber-image: looks into checkpoint images of delay nodes.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/strings.h"
#include "common/units.h"
#include "core-checkpoint/frame_summary.h"
#include "core-checkpoint/image.h"
#include "core-checkpoint/pcap_export.h"

namespace {

using amber::checkpoint::FrameRecord;
using amber::checkpoint::ImageReader;

constexpr const char* kUsage =
    "usage: amber-image COMMAND IMAGE [options]\n"
    "\n"
    "Looks into a checkpoint image of an amber delay node.\n"
    "\n"
    "commands:\n"
    "  info IMAGE               the node and every pipe: configuration, state, held frames\n"
    "  verify IMAGE [--node ID] read the whole image, check every checksum and the trailer;\n"
    "                           with --node, also that it is the image of node ID\n"
    "  pcap IMAGE OUT_DIR       write one nanosecond pcap per pipe into OUT_DIR, frames\n"
    "                           stamped with their virtual arrival time\n"
    "  frames IMAGE [--pipe N] [--limit N]\n"
    "                           list held frames with their timestamps and a header decode\n"
    "\n"
    "Exit status: 0 success, 1 the image is refused or an operation failed, 2 bad usage.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "amber-image: %s\n(try amber-image --help)\n", message.c_str());
  return 2;
}

int fail(const amber::Status& status) {
  std::fprintf(stderr, "amber-image: %s\n", status.to_string().c_str());
  return 1;
}

const char* stage_name(amber::link::FrameStage stage) {
  switch (stage) {
    case amber::link::FrameStage::kBottleneck:
      return "bottleneck";
    case amber::link::FrameStage::kDelayLine:
      return "delay-line";
    case amber::link::FrameStage::kExpress:
      return "express";
  }
  return "?";
}

// Where a pipe stood in its schedule at the freeze.
void print_schedule_position(const amber::checkpoint::PipeInfo& p) {
  if (!p.config.schedule) return;
  const auto& schedule = *p.config.schedule;
  const auto& s = p.state.schedule;
  if (!s.started) {
    std::printf("          schedule not started (%s, since virtual %lld ns)\n",
                amber::link::schedule_waiting_for(schedule.start),
                static_cast<long long>(s.start_ns));
    return;
  }
  if (s.ended) {
    std::printf(
        "          schedule ended after %llu loops (started at virtual %lld ns): static "
        "configuration\n",
        static_cast<unsigned long long>(s.loops), static_cast<long long>(s.start_ns));
    return;
  }
  std::printf("          schedule started at virtual %lld ns", static_cast<long long>(s.start_ns));
  if (!schedule.segments.empty()) {
    std::printf("; segment %u of %zu, %s into it (began at %lld ns), loop %llu", s.segment + 1,
                schedule.segments.size(),
                amber::format_duration_ns(p.virtual_now_ns - s.segment_start_ns).c_str(),
                static_cast<long long>(s.segment_start_ns),
                static_cast<unsigned long long>(s.loops));
  }
  if (schedule.trace) {
    std::printf("; trace at opportunity %u of %zu, pass %llu, %u bytes left of the one at %lld ns",
                s.trace_index + 1, schedule.trace->ms.size(),
                static_cast<unsigned long long>(s.trace_loops), s.surplus_bytes,
                static_cast<long long>(s.surplus_at_ns));
  }
  std::printf("\n");
}

int info(const std::string& path) {
  auto reader = ImageReader::open(path, std::nullopt);
  if (!reader) return fail(reader.status());
  const auto& n = reader->node();
  std::printf("image     %s (format version %u)\n", path.c_str(),
              amber::checkpoint::kFormatVersion);
  std::printf("node      %s  amber %s\n", n.node_id.c_str(), n.amber_version.c_str());
  std::printf("frozen at real %lld ns, virtual %lld ns (clock %016llx); written at unix %lld ns\n",
              static_cast<long long>(n.freeze_real_ns), static_cast<long long>(n.virtual_now_ns),
              static_cast<unsigned long long>(n.clock_id),
              static_cast<long long>(n.created_unix_ns));
  std::printf("held      %llu frames, %llu bytes (largest frame allowed %u bytes)\n",
              static_cast<unsigned long long>(reader->total_frames()),
              static_cast<unsigned long long>(reader->total_bytes()), reader->max_frame_bytes());
  const auto& pipes = reader->pipes();
  for (size_t i = 0; i < pipes.size(); ++i) {
    const auto& p = pipes[i];
    const auto& k = p.state.counters;
    std::printf("pipe %zu    %s %s (%s -> %s): %s\n", i, p.link.c_str(), p.direction.c_str(),
                p.port_in.c_str(), p.port_out.c_str(), amber::link::describe(p.config).c_str());
    std::printf(
        "          held %llu frames, %llu bytes; in %llu out %llu dropped %llu; "
        "virtual now %lld ns, link free at %lld ns\n",
        static_cast<unsigned long long>(p.frames), static_cast<unsigned long long>(p.bytes),
        static_cast<unsigned long long>(k.frames_in), static_cast<unsigned long long>(k.frames_out),
        static_cast<unsigned long long>(k.total_dropped()),
        static_cast<long long>(p.virtual_now_ns), static_cast<long long>(p.state.link_free_ns));
    print_schedule_position(p);
    for (const auto& e : p.state.events) {
      std::printf("          event at virtual %lld ns (in %s): %s\n",
                  static_cast<long long>(e.at_ns),
                  amber::format_duration_ns(e.at_ns - p.virtual_now_ns).c_str(),
                  amber::link::describe_change(e).c_str());
    }
  }
  return 0;
}

int verify(const std::string& path, const std::optional<std::string>& node) {
  auto reader = ImageReader::open(path, node);
  if (!reader) return fail(reader.status());
  size_t pipe;
  FrameRecord frame;
  while (true) {
    auto more = reader->next_frame(&pipe, &frame);
    if (!more) return fail(more.status());
    if (!*more) break;
  }
  std::printf("%s: ok, node %s, %zu pipes, %llu frames, %llu bytes\n", path.c_str(),
              reader->node().node_id.c_str(), reader->pipes().size(),
              static_cast<unsigned long long>(reader->total_frames()),
              static_cast<unsigned long long>(reader->total_bytes()));
  return 0;
}

int pcap(const std::string& path, const std::string& out_dir) {
  std::vector<std::string> files;
  if (auto st = amber::checkpoint::export_pcap(path, out_dir, &files); !st) return fail(st);
  for (const auto& f : files) std::printf("%s\n", f.c_str());
  return 0;
}

int frames(const std::string& path, std::optional<size_t> only_pipe, uint64_t limit) {
  auto reader = ImageReader::open(path, std::nullopt);
  if (!reader) return fail(reader.status());
  if (only_pipe && *only_pipe >= reader->pipes().size()) {
    std::fprintf(stderr, "amber-image: --pipe %zu: the image has %zu pipes\n", *only_pipe,
                 reader->pipes().size());
    return 2;
  }
  size_t pipe;
  size_t last_pipe = SIZE_MAX;
  uint64_t index = 0, shown = 0;
  FrameRecord f;
  while (true) {
    auto more = reader->next_frame(&pipe, &f);
    if (!more) return fail(more.status());
    if (!*more) break;
    if (pipe != last_pipe) {
      index = 0;
      last_pipe = pipe;
    }
    ++index;
    if (only_pipe && pipe != *only_pipe) continue;
    if (shown >= limit) continue;  // read on: the listing is only trusted once verified
    ++shown;
    std::printf("pipe %zu #%llu %s%s arrival=%lld ready=%lld departure=%lld extra=%lld  %s\n", pipe,
                static_cast<unsigned long long>(index - 1), stage_name(f.stage),
                f.express ? " express" : "", static_cast<long long>(f.arrival_ns),
                static_cast<long long>(f.ready_ns), static_cast<long long>(f.departure_ns),
                static_cast<long long>(f.extra_delay_ns),
                amber::checkpoint::summarize_frame(f.bytes).c_str());
  }
  return 0;
}

bool parse_count(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  if (args.size() < 2) return usage_error(args.empty() ? "missing COMMAND" : "missing IMAGE");
  const std::string command = args[0];
  const std::string path = args[1];
  std::vector<std::string> rest(args.begin() + 2, args.end());

  if (command == "info") {
    if (!rest.empty()) return usage_error(amber::cat("info: unexpected argument '", rest[0], "'"));
    return info(path);
  }
  if (command == "verify") {
    std::optional<std::string> node;
    for (size_t i = 0; i < rest.size(); ++i) {
      if (rest[i] == "--node" && i + 1 < rest.size()) {
        node = rest[++i];
      } else {
        return usage_error(amber::cat("verify: unexpected argument '", rest[i], "'"));
      }
    }
    return verify(path, node);
  }
  if (command == "pcap") {
    if (rest.size() != 1) return usage_error("pcap: expected IMAGE OUT_DIR");
    return pcap(path, rest[0]);
  }
  if (command == "frames") {
    std::optional<size_t> pipe;
    uint64_t limit = UINT64_MAX;
    for (size_t i = 0; i < rest.size(); ++i) {
      uint64_t v;
      if ((rest[i] == "--pipe" || rest[i] == "--limit") && i + 1 < rest.size()) {
        if (!parse_count(rest[i + 1].c_str(), &v)) {
          return usage_error(
              amber::cat(rest[i], ": expected a non-negative integer, got '", rest[i + 1], "'"));
        }
        if (rest[i] == "--pipe")
          pipe = v;
        else
          limit = v;
        ++i;
      } else {
        return usage_error(amber::cat("frames: unexpected argument '", rest[i], "'"));
      }
    }
    return frames(path, pipe, limit);
  }
  return usage_error(amber::cat("unknown command '", command, "' (info, verify, pcap, frames)"));
}
