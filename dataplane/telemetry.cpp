#include "dataplane/telemetry.h"

#include <rte_ethdev.h>
#include <rte_telemetry.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>

#include "common/strings.h"
#include "link-emulator/link_event.h"
#include "link-emulator/pipe_edit.h"

namespace amber::dataplane {
namespace {

std::atomic<DelayNode*> g_node{nullptr};

void add_u64(rte_tel_data* d, const char* name, uint64_t v) {
  rte_tel_data_add_dict_u64(d, name, v);
}

// Starts the reply and fetches the counters; on failure the reply says why.
std::optional<std::vector<DirectionStats>> fetch_stats(rte_tel_data* out) {
  rte_tel_data_start_dict(out);
  auto stats = g_node.load()->stats();
  if (!stats) {
    rte_tel_data_add_dict_string(out, "error", stats.status().to_string().c_str());
    return std::nullopt;
  }
  return std::move(stats).value();
}

int handle_stats(const char*, const char*, rte_tel_data* out) {
  auto stats = fetch_stats(out);
  if (!stats) return 0;
  for (const DirectionStats& s : *stats) {
    rte_tel_data* d = rte_tel_data_alloc();
    rte_tel_data_start_dict(d);
    add_u64(d, "frames_in", s.pipe.frames_in);
    add_u64(d, "bytes_in", s.pipe.bytes_in);
    add_u64(d, "frames_out", s.pipe.frames_out);
    add_u64(d, "bytes_out", s.pipe.bytes_out);
    add_u64(d, "held_frames", s.held_frames);
    add_u64(d, "held_bytes", s.held_bytes);
    add_u64(d, "queue_frames", s.queued_frames);
    add_u64(d, "queue_bytes", s.queued_bytes);
    for (size_t c = 0; c < link::kDropCauseCount; ++c) {
      add_u64(d, cat("dropped_", link::drop_cause_name(static_cast<link::DropCause>(c))).c_str(),
              s.pipe.frames_dropped[c]);
    }
    add_u64(d, "dropped_dup_no_mbuf", s.node.dup_no_mbuf);
    add_u64(d, "dropped_oversize", s.node.oversize);
    add_u64(d, "dropped_no_priv_area", s.node.no_priv_area);
    add_u64(d, "duplicated", s.pipe.duplicated);
    add_u64(d, "corrupted", s.pipe.corrupted);
    add_u64(d, "reordered", s.pipe.reordered);
    add_u64(d, "tx_retries", s.node.tx_retries);
    add_u64(d, "tx_pending", s.tx_pending);
    add_u64(d, "late_departures", s.node.late_departures);
    // Tx bursts by lateness, below 50 ns, 100 ns, ... (kLatenessBoundsNs).
    rte_tel_data* late = rte_tel_data_alloc();
    rte_tel_data_start_array(late, RTE_TEL_U64_VAL);
    for (uint64_t n : s.node.burst_lateness) rte_tel_data_add_array_u64(late, n);
    rte_tel_data_add_dict_container(d, "tx_bursts_by_lateness", late, 0);
    add_u64(d, "rate_now_bps", s.rate_now_bps);
    add_u64(d, "delay_now_ns", static_cast<uint64_t>(s.delay_now_ns));
    if (s.config.schedule) {
      // Where the schedule stands (segment, time into it, passes; the
      // trace's next opportunity): what a checkpoint saves.
      const link::ScheduleState& st = s.schedule;
      rte_tel_data_add_dict_string(d, "schedule", schedule_state_name(s));
      add_u64(d, "schedule_segment", st.segment);
      add_u64(d, "schedule_segment_elapsed_ns",
              static_cast<uint64_t>(schedule_segment_elapsed_ns(s)));
      add_u64(d, "schedule_loops", st.loops);
      add_u64(d, "trace_index", st.trace_index);
      add_u64(d, "trace_loops", st.trace_loops);
    }
    // Link events: down or up now, how many are pending and the first of
    // them ("at_virtual_ns change", on the node's virtual clock, as the
    // agent's PipeStats.events give them).
    add_u64(d, "down", s.config.down ? 1 : 0);
    add_u64(d, "pending_events", s.pending_events);
    if (s.pending_events > 0) {
      rte_tel_data* events = rte_tel_data_alloc();
      rte_tel_data_start_array(events, RTE_TEL_STRING_VAL);
      const size_t shown = std::min<size_t>(s.pending_events, s.next_events.size());
      for (size_t i = 0; i < shown; ++i) {
        const std::string e =
            cat(s.next_events[i].at_ns + s.shift_ns, " ", link::describe_change(s.next_events[i]));
        rte_tel_data_add_array_string(events, e.c_str());
      }
      rte_tel_data_add_dict_container(d, "events", events, 0);
    }
    rte_tel_data_add_dict_container(out, cat(s.link, "/", s.direction).c_str(), d, 0);
  }
  return 0;
}

// Port-level counters: drops before a frame reaches a pipe (the NIC or
// socket ring overflowed, no mbuf) or after it left (tx errors).
int handle_ports(const char*, const char*, rte_tel_data* out) {
  rte_tel_data_start_dict(out);
  for (const PortStats& st : g_node.load()->port_stats()) {
    rte_tel_data* d = rte_tel_data_alloc();
    rte_tel_data_start_dict(d);
    add_u64(d, "rx_frames", st.rx_frames);
    add_u64(d, "tx_frames", st.tx_frames);
    add_u64(d, "rx_missed", st.rx_missed);
    add_u64(d, "rx_errors", st.rx_errors);
    add_u64(d, "rx_no_mbuf", st.rx_no_mbuf);
    add_u64(d, "tx_errors", st.tx_errors);
    rte_tel_data_add_dict_container(out, st.name.c_str(), d, 0);
  }
  return 0;
}

int handle_links(const char*, const char*, rte_tel_data* out) {
  auto stats = fetch_stats(out);
  if (!stats) return 0;
  for (const DirectionStats& s : *stats) {
    rte_tel_data_add_dict_string(out, cat(s.link, "/", s.direction).c_str(),
                                 link::describe(s.config).c_str());
  }
  return 0;
}

// A change through the node's operation lock, like the agent's
// SetLinkParams, and never while the node is frozen: between a checkpoint's
// freeze and its thaw a change would land in the saved or the restored
// timeline (#16 defect 8). The agent allows that on purpose (a restored
// node changed before its thaw); this socket has no say in checkpoints.
Result<std::string> set_link(DelayNode& node, const std::string& link, const std::string& dir,
                             std::string_view settings) {
  // A short wait: an agent call in progress (a Save) can take minutes,
  // and this thread answers every telemetry client.
  auto guard = node.operations().acquire("/amber/set", std::chrono::seconds(1));
  if (!guard) return guard.status();
  auto frozen = node.frozen();
  if (!frozen) return frozen.status();
  if (*frozen) {
    return failed_precondition(
        "/amber/set: the node is frozen (a checkpoint or amberctl freeze): change links after "
        "the thaw, or through the agent (amberctl set) to change the frozen node on purpose");
  }
  auto current = node.pipe_config(link, dir);
  if (!current) return current.status();
  link::PipeConfig next = *current;
  AMBER_RETURN_IF_ERROR(link::apply_settings(next, settings));
  AMBER_RETURN_IF_ERROR(node.set_pipe(link, dir, next));
  return link::describe(next);
}

// params: "LINK,DIRECTION,key=value[,key=value...]"
int handle_set(const char*, const char* params, rte_tel_data* out) {
  rte_tel_data_start_dict(out);
  std::string p = params ? params : "";
  size_t c1 = p.find(',');
  size_t c2 = c1 == std::string::npos ? c1 : p.find(',', c1 + 1);
  if (c2 == std::string::npos) {
    rte_tel_data_add_dict_string(out, "error",
                                 "usage: /amber/set,LINK,a_to_b|b_to_a,key=value[,...]");
    return 0;
  }
  auto set = set_link(*g_node.load(), p.substr(0, c1), p.substr(c1 + 1, c2 - c1 - 1),
                      std::string_view(p).substr(c2 + 1));
  if (set) {
    rte_tel_data_add_dict_string(out, "ok", set->c_str());
  } else {
    rte_tel_data_add_dict_string(out, "error", set.status().to_string().c_str());
  }
  return 0;
}

}  // namespace

void register_telemetry(DelayNode* node) {
  g_node.store(node);
  rte_telemetry_register_cmd("/amber/stats", handle_stats,
                             "Counters of every link direction. No parameters.");
  rte_telemetry_register_cmd("/amber/ports", handle_ports,
                             "Port counters, including drops before the pipes. No parameters.");
  rte_telemetry_register_cmd("/amber/links", handle_links,
                             "Parameters of every link direction. No parameters.");
  rte_telemetry_register_cmd("/amber/set", handle_set,
                             "Change a link direction at runtime. Parameters: "
                             "LINK,a_to_b|b_to_a,key=value[,key=value...]");
}

std::vector<std::string> format_stats(const std::vector<DirectionStats>& stats) {
  std::vector<std::string> lines;
  for (const DirectionStats& s : stats) {
    char buf[512];
    std::snprintf(
        buf, sizeof buf,
        "%s/%s: in %llu out %llu held %llu (queue %u) dropped loss %llu queue %llu "
        "no-mbuf %llu oversize %llu, tx retries %llu, late %llu",
        s.link.c_str(), s.direction.c_str(), static_cast<unsigned long long>(s.pipe.frames_in),
        static_cast<unsigned long long>(s.pipe.frames_out),
        static_cast<unsigned long long>(s.held_frames), s.queued_frames,
        static_cast<unsigned long long>(s.pipe.frames_dropped[0]),
        static_cast<unsigned long long>(s.pipe.frames_dropped[1] + s.pipe.frames_dropped[2]),
        static_cast<unsigned long long>(s.node.dup_no_mbuf),
        static_cast<unsigned long long>(s.node.oversize),
        static_cast<unsigned long long>(s.node.tx_retries),
        static_cast<unsigned long long>(s.node.late_departures));
    lines.emplace_back(buf);
  }
  return lines;
}

}  // namespace amber::dataplane
