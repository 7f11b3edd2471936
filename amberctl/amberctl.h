// amberctl's parts: the command line shared by every command, the
// experiment commands (to amber-controller) and the delay-node commands (to
// one delay-node agent, directly or found through the controller).
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "rpc/grpc_status.h"

namespace amber::ctl {

struct Cli {
  std::string controller = "unix:/run/amber/controller.sock";
  std::string agent;  // empty: the default socket, or --node through the controller
  std::string node;   // --node ID: the agent's address comes from the controller
  controller::TlsFiles tls;
  bool json = false;
  int64_t timeout_ns = 30'000'000'000;
  std::vector<std::string> args;  // after the command name
};

int usage_error(const std::string& message);
int failed(const Status& s);
// With --json, prints the message and returns true: the caller skips its
// human-readable output.
bool print_json(const Cli& cli, const google::protobuf::Message& reply);
int64_t realtime_ns();
// Takes "--in D" or "--at NS" out of args; `fallback_in_ns` from now when
// neither is there (0: returns 0, "as soon as possible").
Result<int64_t> take_instant(std::vector<std::string>& args, int64_t fallback_in_ns);
// Takes a flag without a value out of args.
bool take_flag(std::vector<std::string>& args, const std::string& flag);
// Takes "--name VALUE" out of args ("" when absent).
Result<std::string> take_option(std::vector<std::string>& args, const std::string& name);

bool is_experiment_command(const std::string& command);
int run_experiment_command(Cli& cli, const std::string& command);
bool is_node_command(const std::string& command);
int run_node_command(Cli& cli, const std::string& command);

}  // namespace amber::ctl
