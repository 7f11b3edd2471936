// The experiment's topology (amber-controller --topology FILE): Protobuf
// text format, message amber.config.Topology in proto/config.proto. Every
// error names the file and line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/config.pb.h"

namespace amber::controller {

struct Durations {
  int64_t margin_ns = 50'000'000;
  int64_t step_deadline_ns = 10'000'000'000;
  int64_t save_deadline_ns = 120'000'000'000;
  // A trigger stream's deadline, so no stream outlives a peer that
  // vanished unnoticed; the controller opens it again at once.
  int64_t watch_deadline_ns = 600'000'000'000;
  int64_t periodic_interval_ns = 0;  // 0: no periodic checkpoints
  // Topology.run_on: how long past a freeze an attached direction may run
  // on waiting for its VM's stop; 0: off.
  int64_t run_on_ns = 0;
  std::vector<int64_t> trigger_cooldown_ns;  // per Topology.trigger
  std::vector<std::string> trigger_pattern;  // per trigger: the bytes (frame) or text (console)

  // How long after its instant an operation's lease runs at most: two
  // steps and a save. An agent left stopped resumes by itself then.
  int64_t lease_ns() const { return 2 * step_deadline_ns + save_deadline_ns; }
};

// A topology's link event, checked: on which node and direction(s), when
// in experiment time, and the change as the agent takes it ("down", "up",
// "delay=200ms loss=1%").
struct ScheduledEvent {
  std::string delay_node;
  std::string link;
  std::string direction;  // empty: both
  int64_t at_ns = 0;      // experiment time
  std::string change;
};

struct Topology {
  config::Topology proto;
  Durations durations;
  std::vector<ScheduledEvent> events;  // in the file's order
};

// "delay=200ms loss=1%" from an event's `set { ... }`; refuses a field an
// event cannot change, naming it.
Result<std::string> event_settings(const config::Pipe& set);

Result<Topology> parse_topology(const std::string& text, const std::string& origin);
Result<Topology> load_topology(const std::string& path);

// A name usable as one folder component: letters, digits, '-', '_', '.'.
bool is_plain_name(const std::string& name);

}  // namespace amber::controller
