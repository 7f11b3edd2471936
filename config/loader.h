// Loads a delay node's configuration file (Protobuf text format, schema in
// proto/config.proto). Every error names the file, the line and the field:
//   "links.conf:12:5: link 'lfn' a_to_b.delay: must not be negative (-3ms)"
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "config/node_config.h"

namespace amber::config {

Result<NodeConfig> load_node_config(const std::string& path);
// The same from text in memory; `name` stands for the file in messages.
Result<NodeConfig> parse_node_config(std::string_view text, const std::string& name);

}  // namespace amber::config
