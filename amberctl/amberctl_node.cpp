// amberctl's delay-node commands: one delay-node agent, reached directly
// (--agent) or through the controller's topology (--node ID).
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "amberctl/amberctl.h"
#include "common/strings.h"
#include "common/units.h"
#include "proto/agent.grpc.pb.h"
#include "proto/controller.grpc.pb.h"

namespace amber::ctl {
namespace {

constexpr const char* kDefaultAgent = "unix:/run/amber/delaynode.sock";

using controller::set_deadline;

// The agent's address: --agent, or the controller's record of --node.
Result<std::string> agent_address(const Cli& cli) {
  if (!cli.agent.empty()) return cli.agent;
  if (cli.node.empty()) return std::string(kDefaultAgent);
  auto channel = controller::connect(cli.controller, cli.tls);
  if (!channel) return channel.status();
  auto stub = controller::Controller::NewStub(*channel);
  grpc::ClientContext context;
  set_deadline(context, cli.timeout_ns);
  controller::StatusReply status;
  Status s = controller::from_grpc(stub->GetStatus(&context, {}, &status),
                                   cat("controller ", cli.controller, ": "));
  if (!s) return s;
  for (const auto& a : status.agents()) {
    if (a.kind() == "delay node" && a.id() == cli.node) return a.address();
  }
  return not_found(
      cat("--node ", cli.node, ": no delay node of that id in experiment ", status.experiment()));
}

Result<std::string> from_hex(const std::string& hex) {
  if (hex.size() % 2) return invalid_argument("hex bytes: odd number of digits");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    char* end;
    const std::string pair = hex.substr(i, 2);
    const long v = std::strtol(pair.c_str(), &end, 16);
    if (*end) return invalid_argument(cat("hex bytes: '", pair, "' is not hex"));
    out.push_back(static_cast<char>(v));
  }
  return out;
}

Result<uint64_t> number(const std::string& text, const char* what) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') {
    return invalid_argument(cat(what, " '", text, "': give a non-negative integer"));
  }
  return static_cast<uint64_t>(v);
}

// "    schedule running: segment 2 of 3, 4.1s of 20s, pass 1; now 10Mbit/s, 20ms"
void print_schedule(const agent::PipeStats& p) {
  const agent::ScheduleStats& s = p.schedule();
  std::printf("    schedule %s", s.state().c_str());
  if (s.segments()) {
    std::printf(": segment %u of %u, %s of %s, pass %llu", s.segment() + 1, s.segments(),
                format_duration_ns(s.segment_elapsed_ns()).c_str(),
                format_duration_ns(s.segment_duration_ns()).c_str(),
                static_cast<unsigned long long>(s.loops() + 1));
  }
  if (!s.trace().empty()) {
    std::printf("%s trace %s at opportunity %u, pass %llu", s.segments() ? ";" : ":",
                s.trace().c_str(), s.trace_index(),
                static_cast<unsigned long long>(s.trace_loops() + 1));
  }
  const bool idle_trace = !s.trace().empty() && s.state() == "running" && p.rate_now_bps() == 0;
  std::printf(
      "; now %s, %s\n",
      idle_trace ? "no opportunity in the next 100ms" : format_rate_bps(p.rate_now_bps()).c_str(),
      format_duration_ns(p.delay_now_ns()).c_str());
}

void print_stats(const agent::GetStatsReply& r) {
  std::printf("node %s%s\n", r.node_id().c_str(), r.frozen() ? " (frozen)" : "");
  const auto& c = r.clock();
  std::printf("  tsc: %.6f MHz, within %s of CLOCK_REALTIME\n", c.tsc_hz() / 1e6,
              format_duration_ns(std::llabs(c.tsc_offset_ns())).c_str());
  if (!c.synchronized()) {
    std::printf("  clock: local (no PTP configured)\n");
  } else {
    std::printf("  clock: %s, %s, correction %s", c.mode().c_str(),
                c.trustworthy() ? "trustworthy" : "NOT trustworthy",
                format_duration_ns(c.correction_ns()).c_str());
    for (const auto& reason : c.reasons()) std::printf("; %s", reason.c_str());
    std::printf("\n");
  }
  for (const auto& p : r.pipes()) {
    std::printf("  %s/%s: %s\n    in %llu out %llu held %llu (%s) queued %u",
                p.pipe().link().c_str(), p.pipe().direction().c_str(), p.config().c_str(),
                static_cast<unsigned long long>(p.frames_in()),
                static_cast<unsigned long long>(p.frames_out()),
                static_cast<unsigned long long>(p.held_frames()),
                format_bytes(p.held_bytes()).c_str(), p.queued_frames());
    std::map<std::string, uint64_t> dropped(p.dropped().begin(), p.dropped().end());
    for (const auto& [cause, n] : dropped) {
      if (n) std::printf(" dropped %s %llu", cause.c_str(), static_cast<unsigned long long>(n));
    }
    std::printf("\n");
    if (p.has_schedule()) print_schedule(p);
    for (const auto& e : p.events()) {
      std::printf("    event in %s: %s\n",
                  format_duration_ns(e.at_virtual_ns() - r.virtual_now_ns()).c_str(),
                  e.change().c_str());
    }
    if (p.pending_events() > static_cast<uint32_t>(p.events_size())) {
      std::printf("    ... %u events in all\n", p.pending_events());
    }
  }
}

}  // namespace

bool is_node_command(const std::string& command) {
  static const std::set<std::string> kCommands = {"stats",  "freeze", "thaw",    "save",   "pcap",
                                                  "frames", "drop",   "replace", "inject", "set"};
  return kCommands.count(command) > 0;
}

int run_node_command(Cli& cli, const std::string& command) {
  auto address = agent_address(cli);
  if (!address) return failed(address.status());
  auto channel = controller::connect(*address, cli.tls);
  if (!channel) return failed(channel.status());
  auto stub = agent::DelayNodeAgent::NewStub(*channel);
  grpc::ClientContext context;
  set_deadline(context, cli.timeout_ns);
  auto check = [&](const grpc::Status& s) {
    return controller::from_grpc(s, cat("agent ", *address, ": ", command, ": "));
  };
  std::vector<std::string>& args = cli.args;
  auto pipe_args = [&](agent::PipeRef* p, size_t needed) -> bool {
    if (args.size() < needed) return false;
    p->set_link(args[0]);
    p->set_direction(args[1]);
    return true;
  };

  if (command == "stats") {
    agent::GetStatsReply r;
    if (Status s = check(stub->GetStats(&context, {}, &r)); !s) return failed(s);
    if (!print_json(cli, r)) print_stats(r);
    return 0;
  }
  if (command == "freeze" || command == "thaw") {
    auto at = take_instant(args, 100'000'000);
    if (!at) return usage_error(at.status().message());
    if (!args.empty()) return usage_error(cat(command, ": unexpected '", args[0], "'"));
    if (command == "freeze") {
      agent::FreezeRequest req;
      req.set_at_ns(*at);
      agent::FreezeReply r;
      if (Status s = check(stub->Freeze(&context, req, &r)); !s) return failed(s);
      if (print_json(cli, r)) return 0;
      std::printf("frozen at %lld", static_cast<long long>(*at));
      for (int64_t l : r.latency_ns()) std::printf(" (+%s)", format_duration_ns(l).c_str());
      std::printf("\n");
    } else {
      agent::ThawRequest req;
      req.set_at_ns(*at);
      agent::ThawReply r;
      if (Status s = check(stub->Thaw(&context, req, &r)); !s) return failed(s);
      if (print_json(cli, r)) return 0;
      std::printf("thaws at %lld\n", static_cast<long long>(*at));
    }
    return 0;
  }
  if (command == "save" || command == "restore") {
    const bool other_node = take_flag(args, "--other-node");
    if (args.size() != 1) return usage_error(command + " needs one PATH");
    if (command == "save") {
      agent::SaveRequest req;
      req.set_path(args[0]);
      agent::SaveReply r;
      if (Status s = check(stub->Save(&context, req, &r)); !s) return failed(s);
      if (print_json(cli, r)) return 0;
      std::printf("saved %llu frames (%s) to %s: %s image in %s\n",
                  static_cast<unsigned long long>(r.frames()), format_bytes(r.bytes()).c_str(),
                  args[0].c_str(), format_bytes(r.image_bytes()).c_str(),
                  format_duration_ns(r.duration_ns()).c_str());
    } else {
      agent::RestoreRequest req;
      req.set_path(args[0]);
      req.set_allow_other_node(other_node);
      agent::RestoreReply r;
      if (Status s = check(stub->Restore(&context, req, &r)); !s) return failed(s);
      if (print_json(cli, r)) return 0;
      std::printf("restored %llu frames (%s) in %s; frozen at virtual %lld ns\n",
                  static_cast<unsigned long long>(r.frames()), format_bytes(r.bytes()).c_str(),
                  format_duration_ns(r.duration_ns()).c_str(),
                  static_cast<long long>(r.virtual_now_ns()));
    }
    return 0;
  }
  if (command == "pcap") {
    if (args.size() != 1) return usage_error("pcap needs one DIR");
    agent::ExportPcapRequest req;
    req.set_dir(args[0]);
    agent::ExportPcapReply r;
    if (Status s = check(stub->ExportPcap(&context, req, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    for (const auto& f : r.files()) std::printf("%s\n", f.c_str());
    return 0;
  }
  if (command == "frames") {
    agent::ListFramesRequest req;
    auto offset = take_option(args, "--offset");
    auto limit = take_option(args, "--limit");
    if (!offset || !limit) return usage_error((!offset ? offset : limit).status().message());
    if (!pipe_args(req.mutable_pipe(), 2) || args.size() != 2) {
      return usage_error("frames LINK DIR [--offset N] [--limit N]");
    }
    if (!offset->empty()) {
      auto n = number(*offset, "--offset");
      if (!n) return usage_error(n.status().message());
      req.set_offset(*n);
    }
    if (!limit->empty()) {
      auto n = number(*limit, "--limit");
      if (!n) return usage_error(n.status().message());
      req.set_limit(*n);
    }
    agent::ListFramesReply r;
    if (Status s = check(stub->ListFrames(&context, req, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    std::printf("%llu frames held, virtual time %lld ns\n",
                static_cast<unsigned long long>(r.total()),
                static_cast<long long>(r.virtual_now_ns()));
    for (const auto& f : r.frames()) {
      // Frames still in the bottleneck have no departure time yet.
      const std::string when =
          f.departure_ns()
              ? "departs in " + format_duration_ns(f.departure_ns() - r.virtual_now_ns())
              : std::string("queued");
      std::printf("%6llu %-10s %5u B  %-18s %s\n", static_cast<unsigned long long>(f.index()),
                  f.stage().c_str(), f.length(), when.c_str(), f.summary().c_str());
    }
    return 0;
  }
  if (command == "drop" || command == "replace" || command == "inject") {
    agent::EditFramesRequest req;
    agent::FrameEdit* e = req.add_edits();
    if (command == "drop") {
      if (!pipe_args(req.mutable_pipe(), 3) || args.size() != 3) {
        return usage_error("drop LINK DIR INDEX");
      }
      auto index = number(args[2], "INDEX");
      if (!index) return usage_error(index.status().message());
      e->set_drop_index(*index);
    } else if (command == "replace") {
      if (!pipe_args(req.mutable_pipe(), 4) || args.size() != 4) {
        return usage_error("replace LINK DIR INDEX HEXBYTES");
      }
      auto index = number(args[2], "INDEX");
      if (!index) return usage_error(index.status().message());
      auto bytes = from_hex(args[3]);
      if (!bytes) return usage_error(bytes.status().message());
      e->mutable_replace()->set_index(*index);
      e->mutable_replace()->set_data(*bytes);
    } else {
      auto before = take_option(args, "--before");
      auto at = take_option(args, "--at");
      if (!before || !at) return usage_error((!before ? before : at).status().message());
      if (!pipe_args(req.mutable_pipe(), 3) || args.size() != 3 || before->empty() == at->empty()) {
        return usage_error("inject LINK DIR HEXBYTES (--before INDEX | --at NS)");
      }
      auto bytes = from_hex(args[2]);
      if (!bytes) return usage_error(bytes.status().message());
      e->mutable_inject()->set_data(*bytes);
      auto n = number(before->empty() ? *at : *before, before->empty() ? "--at" : "--before");
      if (!n) return usage_error(n.status().message());
      if (!before->empty()) {
        e->mutable_inject()->set_before_index(*n);
      } else {
        e->mutable_inject()->set_departure_ns(static_cast<int64_t>(*n));
      }
    }
    agent::EditFramesReply r;
    if (Status s = check(stub->EditFrames(&context, req, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    std::printf("%u edit(s) applied\n", r.applied());
    return 0;
  }
  if (command == "set") {
    agent::SetLinkParamsRequest req;
    if (!pipe_args(req.mutable_pipe(), 3)) return usage_error("set LINK DIR KEY=VALUE...");
    std::string settings;
    for (size_t i = 2; i < args.size(); ++i) settings += args[i] + " ";
    req.set_settings(settings);
    agent::SetLinkParamsReply r;
    if (Status s = check(stub->SetLinkParams(&context, req, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    std::printf("%s/%s: %s\n", args[0].c_str(), args[1].c_str(), r.config().c_str());
    return 0;
  }
  return usage_error("unknown command '" + command + "'");
}

}  // namespace amber::ctl
