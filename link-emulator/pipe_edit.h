// Changes to a PipeConfig written as "key=value" (the admin's runtime
// commands and the CLI): rate=200Mbit delay=30ms jitter=1ms loss=1%
// queue_frames=500 queue_bytes=64KiB duplicate=0.1% corrupt=0 reorder=0
// seed=7 overhead_bytes=24 jitter_distribution=normal trace=FILE (a
// Mahimahi trace as the rate, read here; trace=none drops it) down=yes|no
// (the link down: every arriving frame dropped).
#pragma once

#include <string_view>

#include "common/status.h"
#include "link-emulator/pipe_config.h"

namespace amber::link {

// Applies one setting; the config is unchanged on error. The result is not
// validated as a whole: call PipeConfig::validate() after the last edit.
Status apply_setting(PipeConfig& config, std::string_view key, std::string_view value);

// Applies "k=v,k=v" or "k=v k=v"; all or nothing.
Status apply_settings(PipeConfig& config, std::string_view settings);

}  // namespace amber::link
