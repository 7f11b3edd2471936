// amberctl: the command line of amber. Experiment commands talk to
// amber-controller; delay-node commands talk to one delay-node agent.
#include "amberctl/amberctl.h"

#include <google/protobuf/util/json_util.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>

#include "common/strings.h"
#include "common/units.h"

namespace amber::ctl {
namespace {

constexpr const char* kUsage = R"(usage: amberctl [OPTIONS] COMMAND [ARGS]

The experiment (through amber-controller):
  status                              the experiment, its agents, clocks, links
  checkpoint [--in D | --at NS] [--swap-out] [--label TEXT]
                                      checkpoint every VM and delay node at one
                                      instant (default: as soon as all can act),
                                      then resume, or with --swap-out stay down
  restore ID [--in D | --at NS]       load a checkpoint everywhere and resume all
                                      at one instant (an earlier one starts a
                                      new branch: time travel)
  pause --for D [--in D | --at NS] [--label TEXT]
                                      freeze every delay node and stop every VM
                                      at one instant, resume all D later; nothing
                                      is saved (look at the frames in flight
                                      meanwhile with frames/pcap --node ID)
  list                                the checkpoints as a timeline, by branch
  show ID                             one checkpoint's manifest
  delete ID                           remove a checkpoint from the store
  schedule LINK [DIR] --at-experiment D (down | up | KEY=VALUE...)
                                      a link event at an instant of experiment
                                      time (0: when the controller first started
                                      the experiment; a freeze stops it): the
                                      link down (every frame dropped, counted as
                                      link_down), up, or new rate=, delay=,
                                      jitter=, loss=, queue_frames=, queue_bytes=
                                      (both directions without DIR; --node ID if
                                      two delay nodes have the link)
  schedule LINK [DIR] --clear         drop the link's pending events

One delay node (its agent directly with --agent, or --node ID through the
controller; the node should be frozen for frames/drop/replace/inject/save/pcap;
with TLS the node lets an operator's certificate only read, and set or pcap
where it allows them):
  stats                               counters of every link direction
  freeze [--in D | --at NS]           freeze every pipe at an instant (default: in 100ms)
  thaw [--in D | --at NS]             thaw them (default: in 100ms)
  save PATH                           write the frozen node to an image (on the node,
                                      inside its --store)
  restore PATH [--other-node]         with --agent/--node: load an image into the frozen node
  pcap DIR                            one pcap per pipe of the frozen node (on the node,
                                      inside its --export-dir or --store)
  frames LINK DIR [--offset N] [--limit N]
                                      list the held frames of a frozen pipe
  drop LINK DIR INDEX                 remove a held frame
  replace LINK DIR INDEX HEXBYTES     replace a held frame's bytes
  inject LINK DIR HEXBYTES (--before INDEX | --at NS)
                                      add a frame to a frozen pipe
  set LINK DIR KEY=VALUE...           change link parameters now (rate=, delay=,
                                      jitter=, loss=, queue=, ...; trace=FILE
                                      replays a Mahimahi trace on the node)

Options:
  --controller ADDRESS  amber-controller (default unix:/run/amber/controller.sock)
  --agent ADDRESS       a delay-node agent (default unix:/run/amber/delaynode.sock)
  --node ID             the delay node of that id in the controller's topology
  --tls-ca FILE --tls-cert FILE --tls-key FILE
                        mutual TLS, for addresses beyond loopback
  --timeout D           deadline of each call (default 30s; a checkpoint or
                        restore gets the controller's own deadlines on top)
  --json                print replies as JSON (for scripts)
  -h, --help            this text

Instants are nanoseconds of the synchronized clock (master time, UTC); D is
a duration such as 100ms or 2s. DIR is a_to_b or b_to_a.
Exit status: 0 done, 1 refused or failed (the message says why), 2 bad usage.
)";

}  // namespace

int usage_error(const std::string& message) {
  std::fprintf(stderr, "amberctl: %s (try --help)\n", message.c_str());
  return 2;
}

int failed(const Status& s) {
  std::fprintf(stderr, "amberctl: %s\n", s.to_string().c_str());
  return 1;
}

bool print_json(const Cli& cli, const google::protobuf::Message& reply) {
  if (!cli.json) return false;
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(reply, &out, options);
  std::printf("%s\n", out.c_str());
  return true;
}

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

Result<std::string> take_option(std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] != name) continue;
    if (i + 1 >= args.size()) return invalid_argument(cat(name, " needs a value"));
    std::string value = args[i + 1];
    args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
    return value;
  }
  return std::string();
}

bool take_flag(std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag) {
      args.erase(args.begin() + static_cast<long>(i));
      return true;
    }
  }
  return false;
}

Result<int64_t> take_instant(std::vector<std::string>& args, int64_t fallback_in_ns) {
  auto in = take_option(args, "--in");
  if (!in) return in.status();
  auto at = take_option(args, "--at");
  if (!at) return at.status();
  if (!in->empty() && !at->empty()) return invalid_argument("give --in or --at, not both");
  if (!in->empty()) {
    auto d = parse_duration_ns(*in);
    if (!d) return d.status().with_context("--in: ");
    if (*d <= 0) return invalid_argument("--in: give a positive duration");
    return realtime_ns() + *d;
  }
  if (!at->empty()) {
    char* end = nullptr;
    const long long v = std::strtoll(at->c_str(), &end, 10);
    if (end == at->c_str() || *end != '\0' || v <= 0) {
      return invalid_argument(cat("--at '", *at, "': give nanoseconds since the epoch"));
    }
    return static_cast<int64_t>(v);
  }
  return fallback_in_ns == 0 ? 0 : realtime_ns() + fallback_in_ns;
}

}  // namespace amber::ctl

int main(int argc, char** argv) {
  using namespace amber::ctl;
  Cli cli;
  if (const char* env = std::getenv("AMBER_CONTROLLER"); env && *env) cli.controller = env;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& out) -> bool {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--json") {
      cli.json = true;
    } else if (a == "--controller" || a == "--agent" || a == "--node" || a == "--tls-ca" ||
               a == "--tls-cert" || a == "--tls-key" || a == "--timeout") {
      std::string v;
      if (!value(v)) return usage_error(a + " needs a value");
      if (a == "--controller") cli.controller = v;
      if (a == "--agent") cli.agent = v;
      if (a == "--node") cli.node = v;
      if (a == "--tls-ca") cli.tls.ca = v;
      if (a == "--tls-cert") cli.tls.cert = v;
      if (a == "--tls-key") cli.tls.key = v;
      if (a == "--timeout") {
        auto d = amber::parse_duration_ns(v);
        if (!d || *d <= 0) return usage_error("--timeout: give a positive duration such as 10s");
        cli.timeout_ns = *d;
      }
    } else {
      rest.push_back(a);
    }
  }
  if (rest.empty()) return usage_error("no command");
  const std::string command = rest.front();
  cli.args.assign(rest.begin() + 1, rest.end());
  if (!cli.agent.empty() && !cli.node.empty())
    return usage_error("give --agent or --node, not both");
  // "restore" is the experiment's unless a single node is named.
  const bool node_restore = command == "restore" && (!cli.agent.empty() || !cli.node.empty());
  if (is_node_command(command) || node_restore) return run_node_command(cli, command);
  if (is_experiment_command(command)) return run_experiment_command(cli, command);
  return usage_error("unknown command '" + command + "'");
}
