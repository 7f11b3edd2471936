// A delay node with one link between two given ports, started on the
// worker lcores, for the benchmarks. node_options: more node-level
// configuration text (e.g. sizing). nullptr (and the reason on stderr) if
// the configuration or the node is refused.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "config/loader.h"
#include "dataplane/delay_node.h"

namespace amber::bench {

inline std::unique_ptr<dataplane::DelayNode> start_bench_node(const std::string& port_a,
                                                              const std::string& port_b,
                                                              const std::string& pipe,
                                                              const std::string& idle_sleep,
                                                              const std::string& node_options = "") {
  std::string text = "node_id: \"bench\" idle_sleep: \"" + idle_sleep + "\" " + node_options +
                     " link { name: \"l\" port_a: \"" + port_a + "\" port_b: \"" + port_b +
                     "\" both { " + pipe + " } }";
  auto config = config::parse_node_config(text, "bench");
  if (!config) {
    std::fprintf(stderr, "%s\n", config.status().to_string().c_str());
    return nullptr;
  }
  auto node = dataplane::DelayNode::create(*config);
  if (!node) {
    std::fprintf(stderr, "%s\n", node.status().to_string().c_str());
    return nullptr;
  }
  node.value()->start();
  return std::move(node).value();
}

}  // namespace amber::bench
