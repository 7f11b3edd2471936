// The delay node's configuration as plain data. Filled by the loader
// (config/loader.h) from a text file; no Protobuf here, so the dataplane
// can include it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "link-emulator/pipe_config.h"

namespace amber::config {

struct LinkConfig {
  std::string name;
  std::string port_a;
  std::string port_b;
  link::PipeConfig a_to_b;
  link::PipeConfig b_to_a;
  std::string where;  // "links.conf:12" for messages about this link
};

struct NodeConfig {
  std::string node_id;
  std::vector<LinkConfig> links;
  int64_t idle_sleep_ns = 10'000;  // 0: never sleep
  int worker_priority = 0;         // SCHED_FIFO of the workers; 0: as the EAL made them
  int worker_nice = 0;             // else their nice value; 0: as the EAL made them
  bool wait_on_ports = false;      // idle workers wait on af_packet sockets (--idle-wait ports)
  uint32_t sizing_frame_bytes = 1500;
  uint64_t sizing_unlimited_rate_bps = 10'000'000'000ULL;
  uint32_t max_frame_bytes = 1518;
  std::string source;  // the file it came from
};

}  // namespace amber::config
