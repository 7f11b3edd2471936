// Restore of a checkpoint: verify, stop what runs, load every piece,
// resume all at one instant (controller/README.md).
#include <algorithm>
#include <atomic>
#include <thread>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"
#include "controller/grpc_status.h"

namespace amber::controller {

Result<Manifest> Experiment::restore(const RestoreRequest& request, const ProgressFn& progress) {
  std::unique_lock lock(operation_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::nanoseconds(topology_.durations.save_deadline_ns))) {
    return unavailable(cat("busy: another operation (", activity_.load(), ") did not finish"));
  }
  activity_ = "restoring";
  auto result = restore_locked(request, progress);
  activity_ = "idle";
  return result;
}

Result<Manifest> Experiment::restore_locked(const RestoreRequest& request,
                                            const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  auto say = [&](const char* step, std::string detail, uint64_t done = 0, uint64_t total = 0) {
    report(progress, step, std::move(detail), done, total);
  };
  auto found = store_->manifest(request.id());
  if (!found) return found.status();
  Manifest m = *std::move(found);
  if (Status s = await_clock(); !s)
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  if (m.naive()) {
    return failed_precondition(
        cat("checkpoint ", m.id(), " is a naive one (evaluation): the network was not saved"));
  }
  const std::string dir = store_->path_of(m.id());
  auto& nodes = agents_.delay_nodes;
  auto& hosts = agents_.vm_hosts;

  // The pieces must map onto today's topology, before anything is touched.
  for (const auto& node : nodes) {
    auto piece = std::find_if(m.pieces().begin(), m.pieces().end(), [&](const Piece& p) {
      return p.kind() == "delay node" && p.name() == node.ref.id();
    });
    if (piece == m.pieces().end()) {
      return failed_precondition(cat("restore: checkpoint ", m.id(), " holds no image for ",
                                     node.what(), ": nothing was touched"));
    }
  }
  for (const auto& host : hosts) {
    for (const auto& vm : host.ref.vm()) {
      auto piece = std::find_if(m.pieces().begin(), m.pieces().end(),
                                [&](const Piece& p) { return p.kind() == "vm" && p.name() == vm; });
      if (piece == m.pieces().end()) {
        return failed_precondition(cat("restore: checkpoint ", m.id(), " holds no state of VM '",
                                       vm, "' (", host.what(), "): nothing was touched"));
      }
    }
  }

  // Every file as the manifest recorded it.
  uint64_t total = m.total_bytes();
  std::atomic<uint64_t> verified{0};
  std::vector<Status> bad(m.pieces_size());
  {
    say("verify", cat(m.pieces_size(), " pieces, ", format_bytes(total)), 0, total);
    Poller poller([&] { say("verify", "", verified.load(), total); });
    std::vector<std::function<void()>> tasks;
    for (int p = 0; p < m.pieces_size(); ++p) {
      tasks.push_back([&, p] {
        for (const auto& f : m.pieces(p).files()) {
          auto sha = sha256_file(cat(dir, "/", f.path()));
          if (!sha) {
            bad[p] = sha.status();
            return;
          }
          if (*sha != f.sha256()) {
            bad[p] = data_loss(cat(f.path(),
                                   ": checksum mismatch (the file changed since the "
                                   "checkpoint)"));
            return;
          }
          verified += f.bytes();
        }
      });
    }
    run_parallel(tasks);
  }
  if (Status s = first_error(bad); !s) {
    return Status(s.code(),
                  cat("verify: checkpoint ", m.id(), ": ", s.message(), ": nothing was touched"));
  }

  // Every agent must answer before anything is touched; then the delay
  // nodes that still run the current experiment freeze at one instant (a
  // node loads an image only while frozen).
  std::vector<Status> errors(nodes.size() + hosts.size());
  std::vector<bool> running(nodes.size(), false);
  std::vector<std::function<void()>> tasks;
  for (size_t i = 0; i < nodes.size(); ++i) {
    tasks.push_back([&, i] {
      agent::GetStatsReply stats;
      if (auto s = unary(*nodes[i].stub, &NodeStub::GetStats, {}, &stats, d.step_deadline_ns);
          !s.ok()) {
        errors[i] = agent_error(nodes[i].what(), "restore", s);
      }
      running[i] = !stats.frozen();
    });
  }
  for (size_t j = 0; j < hosts.size(); ++j) {
    tasks.push_back([&, j] {
      vmhost::GetStatusReply status;
      if (auto s = unary(*hosts[j].stub, &HostStub::GetStatus, {}, &status, d.step_deadline_ns);
          !s.ok()) {
        errors[nodes.size() + j] = agent_error(hosts[j].what(), "restore", s);
      }
    });
  }
  run_parallel(tasks);
  if (Status s = first_error(errors); !s) {
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  }
  if (std::find(running.begin(), running.end(), true) != running.end()) {
    auto now = clock_->now_ns();
    if (!now) return now.status().with_context("master clock: ");
    const int64_t at = *now + lead_ns();
    say("stop", cat("the running delay nodes freeze at +", format_duration_ns(at - *now)));
    tasks.clear();
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!running[i]) continue;
      tasks.push_back([&, i, at] {
        agent::FreezeRequest req;
        req.set_at_ns(at);
        agent::FreezeReply reply;
        if (auto s = unary(*nodes[i].stub, &NodeStub::Freeze, req, &reply,
                           at - *now + d.step_deadline_ns);
            !s.ok()) {
          errors[i] = agent_error(nodes[i].what(), "restore (freezing the running node)", s);
        }
      });
    }
    run_parallel(tasks);
    if (Status s = first_error(errors); !s) {
      return Status(s.code(), cat(s.message(), ": the experiment runs on as it was"));
    }
    // Freeze answers once the instant has passed when it is near.
    if (auto after = clock_->now_ns(); after && *after < at) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(at - *after + 1'000'000));
    }
  }

  // Down with the VMs that run now, everywhere, before any piece loads: a
  // frame they send must not reach a restored delay node.
  say("load", "stopping the running VMs");
  tasks.clear();
  for (size_t j = 0; j < hosts.size(); ++j) {
    tasks.push_back([&, j] {
      VmHostClient& h = hosts[j];
      const size_t k = nodes.size() + j;
      vmhost::GetStatusReply status;
      if (auto s = unary(*h.stub, &HostStub::GetStatus, {}, &status, d.step_deadline_ns); !s.ok()) {
        errors[k] = agent_error(h.what(), "restore", s);
        return;
      }
      bool present = false;
      for (const auto& vm : status.vms()) present |= vm.state() != "absent";
      if (!present) return;
      vmhost::ShutdownReply reply;
      if (auto s = unary(*h.stub, &HostStub::Shutdown, {}, &reply, d.step_deadline_ns); !s.ok()) {
        errors[k] = agent_error(h.what(), "restore (shutting the running VMs down)", s);
      }
    });
  }
  run_parallel(tasks);
  if (Status s = first_error(errors); !s) {
    return Status(s.code(), cat(s.message(), ": the delay nodes are frozen, nothing was loaded"));
  }
  say("load", "loading states and images");
  tasks.clear();
  for (size_t i = 0; i < nodes.size(); ++i) {
    tasks.push_back([&, i] {
      agent::RestoreRequest req;
      req.set_path(cat(dir, "/delaynodes/", nodes[i].ref.id(), ".img"));
      req.set_allow_other_node(true);
      agent::RestoreReply reply;
      if (auto s = unary(*nodes[i].stub, &NodeStub::Restore, req, &reply, d.save_deadline_ns);
          !s.ok()) {
        errors[i] = agent_error(nodes[i].what(), "restore", s);
      }
    });
  }
  for (size_t j = 0; j < hosts.size(); ++j) {
    tasks.push_back([&, j] {
      vmhost::RestoreRequest req;
      req.set_checkpoint_dir(dir + "/vms");
      vmhost::RestoreReply reply;
      if (auto s = unary(*hosts[j].stub, &HostStub::Restore, req, &reply, d.save_deadline_ns);
          !s.ok()) {
        errors[nodes.size() + j] = agent_error(hosts[j].what(), "restore", s);
      }
    });
  }
  run_parallel(tasks);
  if (Status s = first_error(errors); !s) {
    (void)store_->set_swapped_out(true);
    return Status(s.code(), cat(s.message(),
                                ": the experiment is down; fix the cause and "
                                "restore again"));
  }

  auto now = clock_->now_ns();
  if (!now) return now.status().with_context("master clock: ");
  const int64_t at = request.at_ns() != 0 ? request.at_ns() : *now + lead_ns();
  if (at < *now) {
    return deadline_exceeded(
        "resume: the instant asked for has passed; everything is loaded "
        "and paused: restore again");
  }
  Manifest resumed = m;
  resumed.clear_steps();
  Status s = resume_all(at, true, &resumed, progress);
  auto branch = store_->restored(m.id());
  if (!branch) return branch.status().with_context("store: ");
  resumed.set_branch(*branch);
  if (!s) return s;
  return resumed;
}

}  // namespace amber::controller
