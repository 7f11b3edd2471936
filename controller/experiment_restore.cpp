// Restore of a checkpoint: verify, stop what runs, load every piece,
// resume all at one instant (controller/README.md).
#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"

namespace amber::controller {

Result<Manifest> Experiment::restore(const RestoreRequest& request, const ProgressFn& progress) {
  return exclusively("restoring", [&] { return restore_locked(request, progress); });
}

Result<Manifest> Experiment::restore_locked(const RestoreRequest& request,
                                            const ProgressFn& progress) {
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
  Crew crew = crew_of(agents_, everyone);

  // The pieces must map onto today's topology, before anything is touched.
  for (const Member& a : crew) {
    if (Status s = a.agent->find_pieces(m); !s) {
      return Status(s.code(), cat("restore: ", s.message(), ": nothing was touched"));
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
  auto running = on_each("restore", crew, [](Member& a) { return a.agent->running(); });
  if (Status s = first_error(running); !s) {
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  }
  for (size_t i = 0; i < crew.size(); ++i) crew[i].running = *running[i];
  // Everything the restore freezes or loads has a lease: a controller that
  // vanishes mid-restore leaves nothing frozen for good (#16 defect 3).
  auto start = clock_->now_ns();
  if (!start) return start.status().with_context("master clock: ");
  const Durations& d = topology_.durations;
  const int64_t lease =
      std::max(*start + lead_ns() + d.lease_ns(), request.at_ns() + 2 * d.step_deadline_ns);
  // From here the experiment is touched: a controller that vanishes before
  // the restore ends leaves STATE saying so, and the next one finishes it
  // (reconcile()) instead of letting the leases run a half-restored one.
  if (Status s = store_->set_restoring(m.id()); !s) {
    return Status(s.code(), cat("store: ", s.message(), ": nothing was touched"));
  }
  Crew nodes = only(crew, [](const Member& a) { return a.running && a.agent->moves_network(); });
  if (!nodes.empty()) {
    auto now = clock_->now_ns();
    if (!now) return now.status().with_context("master clock: ");
    const int64_t at = *now + lead_ns();
    say("stop", cat("the running delay nodes freeze at +", format_duration_ns(at - *now)));
    count_network_stops(nodes);
    auto frozen = on_each("restore (freezing the running node)", nodes,
                          [&](Member& a) { return a.agent->stop_at(at, lease, at - *now); });
    if (Status s = first_error(frozen); !s) {
      (void)store_->set_restoring("");
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
  Crew vms = only(crew, [](const Member& a) { return a.running && !a.agent->moves_network(); });
  auto down = on_each("restore (shutting the running VMs down)", vms,
                      [](Member& a) { return a.agent->shutdown(); });
  if (Status s = first_error(down); !s) {
    return Status(s.code(), cat(s.message(), ": the delay nodes are frozen, nothing was loaded"));
  }
  say("load", "loading states and images");
  count_network_stops(crew);
  auto loaded = on_each("restore", crew, [&](Member& a) { return a.agent->load(dir, lease); });
  if (Status s = first_error(loaded); !s) {
    // Down for good, not until the leases end: the VMs that loaded quit,
    // the nodes hold.
    auto shut = on_each("", crew, [](Member& a) { return a.agent->shutdown(); });
    (void)store_->set_swapped_out(true);
    {
      // One that did not answer (its agent died mid-load) may have loaded
      // VMs that its next agent would resume when their lease ends: it is
      // shut down as soon as it answers again (straggler_loop).
      std::lock_guard lock(background_mutex_);
      for (size_t i = 0; i < crew.size(); ++i) {
        if (!shut[i]) to_shut_down_.insert(crew[i].agent);
      }
    }
    background_wake_.notify_all();
    return Status(s.code(), cat(s.message(),
                                ": the experiment is down; fix the cause and "
                                "restore again"));
  }

  // The nodes' clocks follow their images now: experiment time maps onto
  // them as it did when the checkpoint was taken (a node that started
  // afresh since had another epoch). A checkpoint from before experiment
  // time started keeps the epochs there are.
  if (!m.epoch_virtual_ns().empty()) {
    std::map<std::string, uint64_t> clock_ids;
    for (const auto& [node, epoch] : m.epoch_virtual_ns()) {
      const auto id = m.clock_id().find(node);
      clock_ids[node] = id != m.clock_id().end() ? id->second : 0;  // 0: learnt at the next look
    }
    if (Status s = store_->set_epochs({m.epoch_virtual_ns().begin(), m.epoch_virtual_ns().end()},
                                      clock_ids);
        !s) {
      say("load", cat("store: ", s.message(),
                      ": experiment time may be mapped wrong until the next restore"));
    }
  }
  {
    std::lock_guard lock(timeline_mutex_);
    timelines_.clear();
  }

  auto now = clock_->now_ns();
  if (!now) return now.status().with_context("master clock: ");
  const int64_t at = request.at_ns() != 0 ? request.at_ns() : *now + lead_ns();
  if (at < *now) {
    return deadline_exceeded(
        "resume: the instant asked for has passed; everything is loaded "
        "and paused until the restore's lease ends: restore again");
  }
  Manifest resumed = m;
  resumed.clear_steps();
  Status s = resume_all(at, crew, &resumed, progress);
  auto branch = store_->restored(m.id());
  if (!branch) return branch.status().with_context("store: ");
  resumed.set_branch(*branch);
  if (!s) return s;
  return resumed;
}

}  // namespace amber::controller
