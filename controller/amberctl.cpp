// amberctl: drives amber's agents from the command line. For now it speaks
// to one delay-node agent; the controller issue adds the experiment-wide
// commands.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "common/units.h"
#include "controller/grpc_status.h"
#include "proto/agent.grpc.pb.h"

namespace {

using amber::cat;
using amber::Status;

constexpr const char* kUsage = R"(usage: amberctl [--agent ADDRESS] [--timeout DURATION] COMMAND [ARGS]

Drives a delay-node agent (amber-delaynode --agent ADDRESS).
  --agent ADDRESS   unix:/run/amber/delaynode.sock (default), or 127.0.0.1:PORT
  --timeout D       deadline of each call (default 30s)
  --json            print the agent's reply as JSON (for scripts)

Commands:
  stats                               counters of every link direction
  freeze [--in D | --at NS]           freeze every pipe at an instant (default: in 100ms)
  thaw [--in D | --at NS]             thaw them (default: in 100ms)
  save PATH                           write the frozen node to an image (on the node)
  restore PATH [--other-node]         load an image into the frozen node
  pcap DIR                            one pcap per pipe of the frozen node (on the node)
  frames LINK DIR [--offset N] [--limit N]
                                      list the held frames of a frozen pipe
  drop LINK DIR INDEX                 remove a held frame
  replace LINK DIR INDEX HEXBYTES     replace a held frame's bytes
  inject LINK DIR HEXBYTES (--before INDEX | --at NS)
                                      add a frame to a frozen pipe
  set LINK DIR KEY=VALUE...           change parameters now (rate=, delay=, loss=, ...)

Instants are nanoseconds of the synchronized clock (CLOCK_REALTIME). DIR is
a_to_b or b_to_a. Exit status: 0 done, 1 refused or failed, 2 bad usage.
)";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "amberctl: %s (try --help)\n", message.c_str());
  return 2;
}

int failed(const Status& s) {
  std::fprintf(stderr, "amberctl: %s\n", s.to_string().c_str());
  return 1;
}

bool g_json = false;

// With --json, prints the reply and returns true: the caller skips its
// human-readable output.
bool print_json(const google::protobuf::Message& reply) {
  if (!g_json) return false;
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

// --in D / --at NS among args (removed from them); default 100 ms from now.
amber::Result<int64_t> instant(std::vector<std::string>& args) {
  int64_t at = realtime_ns() + 100'000'000;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--in") {
      auto d = amber::parse_duration_ns(args[i + 1]);
      if (!d) return d.status();
      at = realtime_ns() + *d;
    } else if (args[i] == "--at") {
      at = std::stoll(args[i + 1]);
    } else {
      continue;
    }
    args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
    break;
  }
  return at;
}

amber::Result<std::string> from_hex(const std::string& hex) {
  if (hex.size() % 2) return amber::invalid_argument("hex bytes: odd number of digits");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    char* end;
    std::string pair = hex.substr(i, 2);
    long v = std::strtol(pair.c_str(), &end, 16);
    if (*end) return amber::invalid_argument(cat("hex bytes: '", pair, "' is not hex"));
    out.push_back(static_cast<char>(v));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "unix:/run/amber/delaynode.sock";
  int64_t timeout_ns = 30'000'000'000;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--agent" && i + 1 < argc) {
      address = argv[++i];
    } else if (a == "--json") {
      g_json = true;
    } else if (a == "--timeout" && i + 1 < argc) {
      auto d = amber::parse_duration_ns(argv[++i]);
      if (!d) return usage_error(cat("--timeout: ", d.status().message()));
      timeout_ns = *d;
    } else {
      args.push_back(a);
    }
  }
  if (args.empty()) return usage_error("no command");
  const std::string command = args.front();
  args.erase(args.begin());

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = amber::agent::DelayNodeAgent::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(timeout_ns));
  auto check = [&](const grpc::Status& s) {
    return amber::controller::from_grpc(s, cat("agent ", address, ": ", command, ": "));
  };
  auto pipe_args = [&](amber::agent::PipeRef* p, size_t needed) -> bool {
    if (args.size() < needed) return false;
    p->set_link(args[0]);
    p->set_direction(args[1]);
    return true;
  };

  if (command == "stats") {
    amber::agent::GetStatsReply r;
    Status s = check(stub->GetStats(&context, {}, &r));
    if (!s) return failed(s);
    if (print_json(r)) return 0;
    std::printf("node %s%s\n", r.node_id().c_str(), r.frozen() ? " (frozen)" : "");
    const auto& c = r.clock();
    if (!c.synchronized()) {
      std::printf("  clock: local (no PTP configured)\n");
    } else {
      std::printf("  clock: %s, %s, correction %s", c.mode().c_str(),
                  c.trustworthy() ? "trustworthy" : "NOT trustworthy",
                  amber::format_duration_ns(c.correction_ns()).c_str());
      for (const auto& reason : c.reasons()) std::printf("; %s", reason.c_str());
      std::printf("\n");
    }
    for (const auto& p : r.pipes()) {
      std::printf("  %s/%s: %s\n    in %llu out %llu held %llu (%s) queued %u", p.pipe().link().c_str(),
                  p.pipe().direction().c_str(), p.config().c_str(),
                  static_cast<unsigned long long>(p.frames_in()),
                  static_cast<unsigned long long>(p.frames_out()),
                  static_cast<unsigned long long>(p.held_frames()),
                  amber::format_bytes(p.held_bytes()).c_str(), p.queued_frames());
      std::map<std::string, uint64_t> dropped(p.dropped().begin(), p.dropped().end());
      for (const auto& [cause, n] : dropped) {
        if (n) std::printf(" dropped %s %llu", cause.c_str(), static_cast<unsigned long long>(n));
      }
      std::printf("\n");
    }
    return 0;
  }
  if (command == "freeze" || command == "thaw") {
    auto at = instant(args);
    if (!at) return usage_error(at.status().message());
    if (command == "freeze") {
      amber::agent::FreezeRequest req;
      req.set_at_ns(*at);
      amber::agent::FreezeReply r;
      Status s = check(stub->Freeze(&context, req, &r));
      if (!s) return failed(s);
      if (print_json(r)) return 0;
      std::printf("frozen at %lld", static_cast<long long>(*at));
      for (int64_t l : r.latency_ns()) std::printf(" (+%s)", amber::format_duration_ns(l).c_str());
      std::printf("\n");
    } else {
      amber::agent::ThawRequest req;
      req.set_at_ns(*at);
      amber::agent::ThawReply r;
      Status s = check(stub->Thaw(&context, req, &r));
      if (!s) return failed(s);
      if (print_json(r)) return 0;
      std::printf("thaws at %lld\n", static_cast<long long>(*at));
    }
    return 0;
  }
  if (command == "save" || command == "restore") {
    if (args.empty()) return usage_error(command + " needs a PATH");
    if (command == "save") {
      amber::agent::SaveRequest req;
      req.set_path(args[0]);
      amber::agent::SaveReply r;
      Status s = check(stub->Save(&context, req, &r));
      if (!s) return failed(s);
      if (print_json(r)) return 0;
      std::printf("saved %llu frames (%s) to %s: %s image in %s\n",
                  static_cast<unsigned long long>(r.frames()), amber::format_bytes(r.bytes()).c_str(),
                  args[0].c_str(), amber::format_bytes(r.image_bytes()).c_str(),
                  amber::format_duration_ns(r.duration_ns()).c_str());
    } else {
      amber::agent::RestoreRequest req;
      req.set_path(args[0]);
      req.set_allow_other_node(args.size() > 1 && args[1] == "--other-node");
      amber::agent::RestoreReply r;
      Status s = check(stub->Restore(&context, req, &r));
      if (!s) return failed(s);
      if (print_json(r)) return 0;
      std::printf("restored %llu frames (%s) in %s; frozen at virtual %lld ns\n",
                  static_cast<unsigned long long>(r.frames()), amber::format_bytes(r.bytes()).c_str(),
                  amber::format_duration_ns(r.duration_ns()).c_str(),
                  static_cast<long long>(r.virtual_now_ns()));
    }
    return 0;
  }
  if (command == "pcap") {
    if (args.empty()) return usage_error("pcap needs a DIR");
    amber::agent::ExportPcapRequest req;
    req.set_dir(args[0]);
    amber::agent::ExportPcapReply r;
    Status s = check(stub->ExportPcap(&context, req, &r));
    if (!s) return failed(s);
    if (print_json(r)) return 0;
    for (const auto& f : r.files()) std::printf("%s\n", f.c_str());
    return 0;
  }
  if (command == "frames") {
    amber::agent::ListFramesRequest req;
    if (!pipe_args(req.mutable_pipe(), 2)) return usage_error("frames LINK DIR");
    for (size_t i = 2; i + 1 < args.size(); i += 2) {
      if (args[i] == "--offset") req.set_offset(std::stoull(args[i + 1]));
      else if (args[i] == "--limit") req.set_limit(std::stoull(args[i + 1]));
      else return usage_error("unknown option " + args[i]);
    }
    amber::agent::ListFramesReply r;
    Status s = check(stub->ListFrames(&context, req, &r));
    if (!s) return failed(s);
    if (print_json(r)) return 0;
    std::printf("%llu frames held, virtual time %lld ns\n", static_cast<unsigned long long>(r.total()),
                static_cast<long long>(r.virtual_now_ns()));
    for (const auto& f : r.frames()) {
      // Frames still in the bottleneck have no departure time yet.
      std::string when = f.departure_ns()
                             ? "departs in " + amber::format_duration_ns(f.departure_ns() - r.virtual_now_ns())
                             : std::string("queued");
      std::printf("%6llu %-10s %5u B  %-18s %s\n", static_cast<unsigned long long>(f.index()),
                  f.stage().c_str(), f.length(), when.c_str(), f.summary().c_str());
    }
    return 0;
  }
  if (command == "drop" || command == "replace" || command == "inject") {
    amber::agent::EditFramesRequest req;
    amber::agent::FrameEdit* e = req.add_edits();
    if (command == "drop") {
      if (!pipe_args(req.mutable_pipe(), 3)) return usage_error("drop LINK DIR INDEX");
      e->set_drop_index(std::stoull(args[2]));
    } else if (command == "replace") {
      if (!pipe_args(req.mutable_pipe(), 4)) return usage_error("replace LINK DIR INDEX HEXBYTES");
      auto bytes = from_hex(args[3]);
      if (!bytes) return usage_error(bytes.status().message());
      e->mutable_replace()->set_index(std::stoull(args[2]));
      e->mutable_replace()->set_data(*bytes);
    } else {
      if (!pipe_args(req.mutable_pipe(), 5)) {
        return usage_error("inject LINK DIR HEXBYTES (--before INDEX | --at NS)");
      }
      auto bytes = from_hex(args[2]);
      if (!bytes) return usage_error(bytes.status().message());
      e->mutable_inject()->set_data(*bytes);
      if (args[3] == "--before") e->mutable_inject()->set_before_index(std::stoull(args[4]));
      else if (args[3] == "--at") e->mutable_inject()->set_departure_ns(std::stoll(args[4]));
      else return usage_error("inject needs --before INDEX or --at NS");
    }
    amber::agent::EditFramesReply r;
    Status s = check(stub->EditFrames(&context, req, &r));
    if (!s) return failed(s);
    if (print_json(r)) return 0;
    std::printf("%u edit(s) applied\n", r.applied());
    return 0;
  }
  if (command == "set") {
    amber::agent::SetLinkParamsRequest req;
    if (!pipe_args(req.mutable_pipe(), 3)) return usage_error("set LINK DIR KEY=VALUE...");
    std::string settings;
    for (size_t i = 2; i < args.size(); ++i) settings += args[i] + " ";
    req.set_settings(settings);
    amber::agent::SetLinkParamsReply r;
    Status s = check(stub->SetLinkParams(&context, req, &r));
    if (!s) return failed(s);
    if (print_json(r)) return 0;
    std::printf("%s/%s: %s\n", args[0].c_str(), args[1].c_str(), r.config().c_str());
    return 0;
  }
  return usage_error("unknown command '" + command + "'");
}
