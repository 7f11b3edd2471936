// Conversions between the link model's plain structs and their Protobuf
// messages (proto/image.proto). The controller and the configuration loader
// reuse them. Messages coming in are checked: a configuration is validated,
// a state must have the right shape, errors name the field.
#pragma once

#include "common/status.h"
#include "core-checkpoint/image.h"
#include "link-emulator/pipe.h"
#include "link-emulator/pipe_config.h"
#include "proto/image.pb.h"

namespace amber::checkpoint {

void to_proto(const link::PipeConfig& config, image::PipeConfig* out);
Result<link::PipeConfig> from_proto(const image::PipeConfig& message);

void to_proto(const link::PipeState& state, image::PipeState* out);
Result<link::PipeState> from_proto(const image::PipeState& message);

void to_proto(const NodeInfo& node, image::Node* out);
NodeInfo from_proto(const image::Node& message);

void to_proto(const PipeInfo& pipe, image::Pipe* out);
Result<PipeInfo> from_proto(const image::Pipe& message);

}  // namespace amber::checkpoint
