// amberctl's experiment commands: status, checkpoint, restore and the
// checkpoint store, through amber-controller.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "amberctl/amberctl.h"
#include "common/strings.h"
#include "common/units.h"
#include "proto/controller.grpc.pb.h"

namespace amber::ctl {
namespace {

using controller::Manifest;
using controller::Progress;

using controller::set_deadline;

std::string clock_time(int64_t unix_ns) {
  if (unix_ns <= 0) return "-";
  const time_t secs = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm local{};
  localtime_r(&secs, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &local);
  return cat(buf, ".", (unix_ns / 1'000'000) % 1000 / 100);
}

// Progress of a long save or restore: a bar on a terminal, lines otherwise.
class ProgressView {
 public:
  explicit ProgressView(bool quiet) : tty_(::isatty(2) == 1), quiet_(quiet) {}
  ~ProgressView() { end_bar(); }

  void show(const Progress& p) {
    if (quiet_) return;
    if (p.step() != step_) {
      end_bar();
      step_ = p.step();
      if (step_ != "done") std::fprintf(stderr, "%-9s %s\n", step_.c_str(), p.detail().c_str());
    } else if (!p.detail().empty()) {
      end_bar();
      std::fprintf(stderr, "%-9s %s\n", step_.c_str(), p.detail().c_str());
    }
    if (p.total_bytes() == 0 || p.done_bytes() == 0) return;
    const double f =
        std::min(1.0, static_cast<double>(p.done_bytes()) / static_cast<double>(p.total_bytes()));
    if (tty_) {
      const int width = 30;
      const int filled = static_cast<int>(f * width);
      std::fprintf(stderr, "\r          [%s%s] %3d%%  %s / %s   ", std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), static_cast<int>(f * 100),
                   format_bytes(p.done_bytes()).c_str(), format_bytes(p.total_bytes()).c_str());
      bar_ = true;
    } else if (static_cast<int>(f * 4) > quarter_) {
      quarter_ = static_cast<int>(f * 4);
      std::fprintf(stderr, "          %d%% (%s of ~%s)\n", static_cast<int>(f * 100),
                   format_bytes(p.done_bytes()).c_str(), format_bytes(p.total_bytes()).c_str());
    }
  }

 private:
  void end_bar() {
    if (bar_) std::fputc('\n', stderr);
    bar_ = false;
    quarter_ = 0;
  }
  const bool tty_;
  const bool quiet_;
  bool bar_ = false;
  int quarter_ = 0;
  std::string step_;
};

void print_manifest_line(const Manifest& m, const std::string& head) {
  std::string flags;
  if (m.id() == head) flags += " (head)";
  if (m.swapped_out()) flags += " swapped out";
  if (m.naive()) flags += " naive";
  const std::string what = m.label().empty() ? m.reason() : cat(m.reason(), " \"", m.label(), "\"");
  std::printf("%-6s %-6s %-6s %s  %9s  %-9s %s%s\n", m.id().c_str(), m.branch().c_str(),
              m.parent().empty() ? "-" : m.parent().c_str(), clock_time(m.freeze_ns()).c_str(),
              format_bytes(m.total_bytes()).c_str(),
              m.resume_ns() ? format_duration_ns(m.resume_ns() - m.freeze_ns()).c_str() : "-",
              what.c_str(), flags.c_str());
}

void print_manifest(const Manifest& m) {
  std::printf("checkpoint %s of experiment %s, branch %s, parent %s\n", m.id().c_str(),
              m.experiment().c_str(), m.branch().c_str(),
              m.parent().empty() ? "(the start)" : m.parent().c_str());
  std::printf("  reason %s%s\n", m.reason().c_str(),
              m.label().empty() ? "" : cat(", label \"", m.label(), "\"").c_str());
  std::printf("  frozen at %s (%lld ns)", clock_time(m.freeze_ns()).c_str(),
              static_cast<long long>(m.freeze_ns()));
  if (m.resume_ns()) {
    std::printf(", resumed %s later\n", format_duration_ns(m.resume_ns() - m.freeze_ns()).c_str());
  } else {
    std::printf(m.swapped_out() ? ", swapped out\n" : "\n");
  }
  std::printf("  saved %s in %s%s\n", format_bytes(m.total_bytes()).c_str(),
              format_duration_ns(m.save_ns()).c_str(),
              m.naive() ? " (naive: the VMs only, never restored)" : "");
  for (const auto& p : m.pieces()) {
    uint64_t bytes = 0;
    for (const auto& f : p.files()) bytes += f.bytes();
    std::printf("  %-10s %-8s %9s  %zu file(s) by %s\n", p.kind().c_str(), p.name().c_str(),
                format_bytes(bytes).c_str(), static_cast<size_t>(p.files_size()),
                p.agent().c_str());
  }
  for (const auto& s : m.steps()) {
    std::printf("  step %-7s %-22s", s.step().c_str(), s.agent().c_str());
    if (s.step() == "freeze" || s.step() == "resume") {
      std::printf(" acted %s after the instant", format_duration_ns(s.lateness_ns()).c_str());
    } else {
      std::printf(" %s in %s", format_bytes(s.bytes()).c_str(),
                  format_duration_ns(s.duration_ns()).c_str());
    }
    std::printf("\n");
  }
}

void print_status(const controller::StatusReply& r) {
  std::printf("experiment %s: %s, branch %s, head %s, %u checkpoint(s)\n", r.experiment().c_str(),
              r.state().c_str(), r.branch().c_str(), r.head().empty() ? "-" : r.head().c_str(),
              r.checkpoints());
  std::printf("  clock: %s%s\n",
              r.clock_trustworthy() ? "" : "NOT TRUSTWORTHY: ", r.clock().c_str());
  if (r.has_experiment_ns()) {
    std::printf("  experiment time: %s\n", format_duration_ns(r.experiment_ns()).c_str());
  }
  if (!r.periodic().empty()) std::printf("  periodic: %s\n", r.periodic().c_str());
  for (const auto& t : r.triggers()) std::printf("  trigger %s\n", t.c_str());
  for (const auto& a : r.agents()) {
    std::printf("  %-10s %-8s %-28s ", a.kind().c_str(), a.id().c_str(), a.address().c_str());
    if (!a.reachable()) {
      std::printf("UNREACHABLE: %s\n", a.error().c_str());
    } else {
      std::printf("rtt %s, clock %s%s\n", format_duration_ns(a.round_trip_ns()).c_str(),
                  a.clock_trustworthy() ? "" : "NOT TRUSTWORTHY: ", a.clock().c_str());
    }
    if (!a.timeline().empty()) std::printf("      %s\n", a.timeline().c_str());
    if (!a.reachable()) continue;
    for (const auto& vm : a.vms()) std::printf("      vm %s\n", vm.c_str());
    if (a.frozen()) std::printf("      frozen\n");
    for (const auto& p : a.pipes()) {
      uint64_t dropped = 0;
      for (const auto& [cause, n] : p.dropped()) dropped += n;
      std::printf("      %s/%s: %s; in %llu out %llu held %llu (%s) dropped %llu\n",
                  p.pipe().link().c_str(), p.pipe().direction().c_str(), p.config().c_str(),
                  static_cast<unsigned long long>(p.frames_in()),
                  static_cast<unsigned long long>(p.frames_out()),
                  static_cast<unsigned long long>(p.held_frames()),
                  format_bytes(p.held_bytes()).c_str(), static_cast<unsigned long long>(dropped));
      for (const auto& e : p.events()) {
        std::printf("        event at %s: %s\n",
                    e.has_at_experiment_ns()
                        ? cat("experiment ", format_duration_ns(e.at_experiment_ns())).c_str()
                        : cat("virtual ", e.at_virtual_ns(), " ns").c_str(),
                    e.change().c_str());
      }
      if (p.pending_events() > static_cast<uint32_t>(p.events_size())) {
        std::printf("        ... %u events in all\n", p.pending_events());
      }
    }
  }
}

// Runs a streaming call (checkpoint, restore) to its end; the last message
// carries the manifest.
template <typename Start>
int stream(const Cli& cli, const char* what, Start start) {
  grpc::ClientContext context;
  // The controller keeps its own deadlines per step; ours only guards
  // against a controller that went silent for good.
  set_deadline(context, std::max<int64_t>(cli.timeout_ns, 3600'000'000'000));
  auto reader = start(&context);
  ProgressView view(cli.json);
  Progress p;
  Manifest result;
  bool done = false;
  while (reader->Read(&p)) {
    view.show(p);
    if (p.has_result()) {
      result = p.result();
      done = true;
    }
  }
  Status s =
      controller::from_grpc(reader->Finish(), cat("controller ", cli.controller, ": ", what, ": "));
  if (!s) return failed(s);
  if (!done) return failed(internal_error(cat(what, ": the controller sent no result")));
  if (print_json(cli, result)) return 0;
  print_manifest(result);
  return 0;
}

}  // namespace

bool is_experiment_command(const std::string& command) {
  static const std::set<std::string> kCommands = {"status", "checkpoint", "restore", "pause",
                                                  "list",   "show",       "delete",  "schedule"};
  return kCommands.count(command) > 0;
}

int run_experiment_command(Cli& cli, const std::string& command) {
  auto channel = controller::connect(cli.controller, cli.tls);
  if (!channel) return failed(channel.status());
  auto stub = controller::Controller::NewStub(*channel);
  std::vector<std::string>& args = cli.args;
  auto check = [&](const grpc::Status& s) {
    return controller::from_grpc(s, cat("controller ", cli.controller, ": ", command, ": "));
  };

  // --label and the instant of a checkpoint or pause, then nothing else.
  auto take_label_and_instant = [&](auto& req) -> Status {
    auto label = take_option(args, "--label");
    if (!label) return label.status();
    req.set_label(*label);
    auto at = take_instant(args, 0);
    if (!at) return at.status();
    req.set_at_ns(*at);
    if (!args.empty()) return invalid_argument(cat(command, ": unexpected '", args[0], "'"));
    return Status::ok();
  };
  if (command == "checkpoint") {
    controller::CheckpointRequest req;
    req.set_swap_out(take_flag(args, "--swap-out"));
    req.set_naive(take_flag(args, "--naive"));
    if (Status s = take_label_and_instant(req); !s) return usage_error(s.message());
    return stream(cli, "checkpoint",
                  [&](grpc::ClientContext* c) { return stub->Checkpoint(c, req); });
  }
  if (command == "pause") {
    controller::PauseRequest req;
    auto duration = take_option(args, "--for");
    if (!duration) return usage_error(duration.status().message());
    if (duration->empty()) return usage_error("pause --for D [--in D | --at NS]: give --for");
    auto ns = parse_duration_ns(*duration);
    if (!ns) return usage_error(cat("pause --for: ", ns.status().message()));
    req.set_duration_ns(*ns);
    if (Status s = take_label_and_instant(req); !s) return usage_error(s.message());
    return stream(cli, "pause", [&](grpc::ClientContext* c) { return stub->Pause(c, req); });
  }
  if (command == "restore") {
    controller::RestoreRequest req;
    auto at = take_instant(args, 0);
    if (!at) return usage_error(at.status().message());
    if (args.size() != 1) return usage_error("restore ID [--in D | --at NS]");
    req.set_id(args[0]);
    req.set_at_ns(*at);
    return stream(cli, "restore", [&](grpc::ClientContext* c) { return stub->Restore(c, req); });
  }

  grpc::ClientContext context;
  set_deadline(context, cli.timeout_ns);
  if (command == "schedule") {
    controller::ScheduleRequest req;
    req.set_clear(take_flag(args, "--clear"));
    auto at = take_option(args, "--at-experiment");
    if (!at) return usage_error(at.status().message());
    if (args.empty()) return usage_error("schedule LINK [DIR] --at-experiment D CHANGE | --clear");
    req.set_link(args[0]);
    args.erase(args.begin());
    if (!args.empty() && (args[0] == "a_to_b" || args[0] == "b_to_a")) {
      req.set_direction(args[0]);
      args.erase(args.begin());
    }
    req.set_delay_node(cli.node);
    if (req.clear()) {
      if (!at->empty() || !args.empty())
        return usage_error("schedule --clear takes no instant or change");
    } else {
      if (at->empty()) return usage_error("schedule: give --at-experiment D (experiment time)");
      auto d = parse_duration_ns(*at);
      if (!d) return usage_error(cat("--at-experiment: ", d.status().message()));
      if (*d < 0) return usage_error("--at-experiment: experiment time starts at 0");
      req.set_at_experiment_ns(*d);
      if (args.empty()) return usage_error("schedule: give down, up, start or KEY=VALUE...");
      std::string change;
      for (const auto& a : args) change += cat(change.empty() ? "" : " ", a);
      req.set_change(change);
    }
    controller::ScheduleReply r;
    if (Status s = check(stub->Schedule(&context, req, &r)); !s) return failed(s);
    if (!print_json(cli, r)) std::printf("%s\n", r.detail().c_str());
    return 0;
  }
  if (command == "status") {
    if (!args.empty()) return usage_error(cat("status: unexpected '", args[0], "'"));
    controller::StatusReply r;
    if (Status s = check(stub->GetStatus(&context, {}, &r)); !s) return failed(s);
    if (!print_json(cli, r)) print_status(r);
    return 0;
  }
  if (command == "list") {
    if (!args.empty()) return usage_error(cat("list: unexpected '", args[0], "'"));
    controller::ListReply r;
    if (Status s = check(stub->ListCheckpoints(&context, {}, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    std::printf(
        "experiment %s: new checkpoints go to branch %s, the experiment continues from %s\n",
        r.experiment().c_str(), r.branch().c_str(),
        r.head().empty() ? "its start" : r.head().c_str());
    if (r.checkpoints().empty()) {
      std::printf("no checkpoints yet\n");
      return 0;
    }
    std::printf("%-6s %-6s %-6s %-23s  %9s  %-9s %s\n", "id", "branch", "parent", "frozen at",
                "size", "paused", "reason");
    for (const auto& m : r.checkpoints()) print_manifest_line(m, r.head());
    return 0;
  }
  if (command == "show" || command == "delete") {
    if (args.size() != 1) return usage_error(command + " ID");
    if (command == "show") {
      controller::GetRequest req;
      req.set_id(args[0]);
      Manifest m;
      if (Status s = check(stub->GetCheckpoint(&context, req, &m)); !s) return failed(s);
      if (!print_json(cli, m)) print_manifest(m);
      return 0;
    }
    controller::DeleteRequest req;
    req.set_id(args[0]);
    controller::DeleteReply r;
    if (Status s = check(stub->DeleteCheckpoint(&context, req, &r)); !s) return failed(s);
    if (print_json(cli, r)) return 0;
    std::printf("deleted %s (%s freed)\n", args[0].c_str(), format_bytes(r.freed_bytes()).c_str());
    return 0;
  }
  return usage_error("unknown command '" + command + "'");
}

}  // namespace amber::ctl
