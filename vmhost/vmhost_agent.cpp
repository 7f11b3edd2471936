#include "vmhost/vmhost_agent.h"

#include <grpcpp/grpcpp.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "clock-sync/action_scheduler.h"
#include "clock-sync/clock.h"
#include "clock-sync/pmc_client.h"
#include "clock-sync/sync_monitor.h"
#include "common/operation_lock.h"
#include "common/strings.h"
#include "proto/vmhost.grpc.pb.h"
#include "rpc/access.h"
#include "rpc/files.h"
#include "rpc/grpc_status.h"
#include "rpc/lease.h"
#include "vm-checkpoint/checkpoint.h"
#include "vm-checkpoint/sched_boost.h"
#include "vm-checkpoint/vm.h"
#include "vmhost/vmhost_config.h"

namespace amber::controller {
namespace {

namespace fs = std::filesystem;
using clock_sync::SystemClock;

constexpr const char* kUnsynchronized = "unsynchronized: local clock";
// Instants further ahead are refused: every wait has a bound.
constexpr int64_t kMaxLeadNs = 600'000'000'000;

int64_t to_ns(vm::WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
vm::WallTime from_ns(int64_t ns) {
  return vm::WallTime(
      std::chrono::duration_cast<vm::WallTime::duration>(std::chrono::nanoseconds(ns)));
}
int64_t dur_ns(vm::Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

// Waits for master-time instants through clock-sync's action scheduler: the
// action only wakes this thread, which then issues the QMP commands.
class SchedulerWaiter final : public vm::InstantWaiter {
 public:
  SchedulerWaiter(clock_sync::ActionScheduler& scheduler, const clock_sync::MasterTimeSource& time)
      : scheduler_(scheduler), time_(time) {}

  Status wait_until(vm::WallTime instant) override {
    const int64_t t = to_ns(instant);
    auto correction = time_.correction_ns();
    if (!correction) return correction.status().with_context("clock-sync: ");
    const int64_t master_now = SystemClock::realtime_ns() - *correction;
    if (t <= master_now) return Status::ok();  // like SleepUntilWaiter: at once
    auto fired = std::make_shared<std::promise<void>>();
    auto done = fired->get_future();
    auto id = scheduler_.schedule(t, [fired](const clock_sync::Firing&) { fired->set_value(); });
    if (!id) {
      // The instant passed between the check above and the scheduler's own
      // (a fault-matrix StopAt failed by 33 us so): at once, as above.
      auto again = time_.correction_ns();
      if (again && t <= SystemClock::realtime_ns() - *again) return Status::ok();
      return id.status().with_context("clock-sync: ");
    }
    const auto bound = std::chrono::nanoseconds(t - master_now) + std::chrono::seconds(5);
    if (done.wait_for(bound) != std::future_status::ready) {
      (void)scheduler_.cancel(*id);
      return deadline_exceeded(cat("clock-sync: the action at ", t, " did not fire in time"));
    }
    return Status::ok();
  }

 private:
  clock_sync::ActionScheduler& scheduler_;
  const clock_sync::MasterTimeSource& time_;
};

// The VMs of this host and the clock they are stopped by. Every operation
// holds `mutex_`: the controller's calls are sequential, and a Status call
// during a Save waits for it.
class Host {
 public:
  static Result<std::unique_ptr<Host>> create(const vmhost::VmHost& config, bool boot) {
    std::unique_ptr<Host> host(new Host(config));
    for (const auto& spec : config.vms()) {
      host->configs_.push_back(to_vm_config(config, spec));
      // The experiment's VMs outlive a crash of this agent; a new agent
      // adopts them (below).
      host->configs_.back().outlive_owner = true;
    }
    host->vms_.resize(host->configs_.size());
    if (!config.ptp_socket().empty()) {
      clock_sync::SyncMonitorOptions options;
      auto& bounds = options.policy.bounds;
      if (config.max_abs_offset_ns() > 0) bounds.max_abs_offset_ns = config.max_abs_offset_ns();
      if (config.max_offset_step_ns() > 0) bounds.max_offset_step_ns = config.max_offset_step_ns();
      if (config.max_sample_age_ns() > 0) bounds.max_sample_age_ns = config.max_sample_age_ns();
      if (config.sync_mode() == "disciplined") {
        options.policy.mode = clock_sync::SyncMode::kDisciplined;
      } else if (config.sync_mode() == "grandmaster") {
        options.policy.mode = clock_sync::SyncMode::kGrandmaster;
      }
      auto monitor = clock_sync::SyncMonitor::open(config.ptp_socket(), host->local_, options);
      if (!monitor) return monitor.status();
      host->monitor_ = std::move(monitor).value();
      clock_sync::SchedulerOptions scheduling;
      if (config.agent_realtime()) scheduling.realtime_priority = 3;
      auto scheduler = clock_sync::ActionScheduler::create(*host->monitor_, scheduling);
      if (!scheduler) return scheduler.status();
      if (config.agent_realtime()) {
        const Status rt = (*scheduler)->realtime_status();
        std::fprintf(stderr, "amber-vmhost: agent_realtime: %s\n",
                     rt ? "scheduler thread at SCHED_FIFO 3, stepping threads at 2 during a step"
                        : cat("refused (", rt.message(), "): normal priority").c_str());
      }
      host->scheduler_ = std::move(scheduler).value();
      host->waiter_ = std::make_unique<SchedulerWaiter>(*host->scheduler_, *host->monitor_);
    } else {
      host->waiter_ = std::make_unique<vm::SleepUntilWaiter>();
    }
    for (std::size_t i = 0; i < host->configs_.size(); ++i) {
      auto adopted = vm::Vm::adopt(host->configs_[i]);
      if (adopted) {
        host->vms_[i] = std::move(adopted).value();
        std::fprintf(stderr, "amber-vmhost: VM %s: adopted the running QEMU %d (%s)\n",
                     host->configs_[i].name.c_str(), host->vms_[i]->pid(),
                     host->vm_state(i).c_str());
      } else if (adopted.status().code() != ErrorCode::kNotFound) {
        return adopted.status();
      } else if (boot) {
        AMBER_RETURN_IF_ERROR(host->boot(i));
      }
    }
    host->lease_ =
        std::make_unique<Lease>(host->operations_, [h = host.get()] { return h->lease_ended(); });
    host->pick_up_lease();
    return host;
  }

  ~Host() {
    lease_.reset();  // its thread ends before the VMs go
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (!vms_[i]) continue;
      (void)vms_[i]->quit();
      remove_lease_file(i);
    }
  }

  Result<std::unique_lock<std::timed_mutex>> lock(const char* what) {
    return operations_.acquire(what);
  }

  grpc::Status prepare(const vmhost::PrepareRequest& req, vmhost::PrepareReply* reply) {
    std::string dir;
    if (!req.checkpoint_dir().empty()) {
      auto confined = store_.confine(req.checkpoint_dir());
      if (!confined) return to_grpc(confined.status().with_context("Prepare: checkpoint_dir "));
      dir = *confined;
    }
    auto guard = lock("Prepare");
    if (!guard) return to_grpc(guard.status());
    std::vector<std::string> reasons;
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      auto state = vm_state(i);
      if (state != "running") reasons.push_back(cat("VM ", configs_[i].name, ": ", state));
    }
    vmhost::ClockHealth clock = clock_health();
    if (!clock.trustworthy()) {
      if (monitor_) {
        std::string why;
        for (const auto& r : clock.reasons()) why += cat(why.empty() ? "" : "; ", r);
        reasons.push_back(cat("clock: master time not trustworthy: ", why));
      } else if (!req.allow_unsynchronized()) {
        reasons.push_back(cat("clock: ", kUnsynchronized,
                              " (no ptp_socket configured; set allow_unsynchronized to accept)"));
      }
    }
    uint64_t estimate = 0;
    for (const auto& c : configs_) {
      estimate += uint64_t(c.memory_mib) << 20;
      std::error_code ec;
      if (!c.disk.empty()) {
        auto size = fs::file_size(c.disk, ec);
        if (!ec) estimate += size;
      }
    }
    reply->set_estimated_state_bytes(estimate);
    struct statvfs st {};
    if (dir.empty()) {
      reasons.push_back("checkpoint_dir: not given");
    } else if (::statvfs(dir.c_str(), &st) != 0) {
      reasons.push_back(cat("checkpoint_dir ", dir, ": ", std::strerror(errno)));
    } else {
      const uint64_t free_bytes = uint64_t(st.f_bavail) * st.f_frsize;
      reply->set_free_bytes(free_bytes);
      if (free_bytes < estimate) {
        reasons.push_back(cat("checkpoint_dir ", dir, ": ", free_bytes,
                              " bytes free, the VMs' state may need ", estimate));
      }
      if (::access(dir.c_str(), W_OK) != 0) {
        reasons.push_back(cat("checkpoint_dir ", dir, ": not writable"));
      }
    }
    for (auto& r : reasons) reply->add_reasons(r);
    reply->set_ready(reasons.empty());
    return grpc::Status::OK;
  }

  grpc::Status stop_at(const vmhost::StopAtRequest& req, vmhost::StopAtReply* reply) {
    auto guard = lock("StopAt");
    if (!guard) return to_grpc(guard.status());
    if (req.lease_until_ns() != 0 && req.lease_until_ns() <= req.at_ns()) {
      return to_grpc(invalid_argument("StopAt: the lease must end after the stop instant"));
    }
    grpc::Status s = step_at("StopAt", req.at_ns(), false, reply->mutable_vms());
    if (s.ok() && req.lease_until_ns() != 0) {
      auto corr = correction();
      set_lease(req.lease_until_ns() + (corr ? *corr : 0));
    }
    return s;
  }
  grpc::Status resume_at(const vmhost::ResumeAtRequest& req, vmhost::ResumeAtReply* reply) {
    auto guard = lock("ResumeAt");
    if (!guard) return to_grpc(guard.status());
    grpc::Status s = step_at("ResumeAt", req.at_ns(), req.only_stopped(), reply->mutable_vms());
    if (s.ok()) set_lease(0);
    return s;
  }

  // `context`: a caller that gave up (its deadline passed) stops the save
  // between VMs (#16 defect 9).
  grpc::Status save(const vmhost::SaveRequest& req, vmhost::SaveReply* reply,
                    grpc::ServerContext* context) {
    if (req.checkpoint_dir().empty()) {
      return to_grpc(invalid_argument("Save: checkpoint_dir: not given"));
    }
    auto confined = store_.confine(req.checkpoint_dir());
    if (!confined) return to_grpc(confined.status().with_context("Save: checkpoint_dir "));
    const std::string& dir = *confined;
    auto guard = lock("Save");
    if (!guard) return to_grpc(guard.status());
    std::error_code ec;
    if (!fs::exists(dir, ec)) {
      return to_grpc(not_found(cat("Save: checkpoint_dir ", dir, ": does not exist")));
    }
    if (!fs::is_directory(dir, ec)) {
      return to_grpc(failed_precondition(cat("Save: checkpoint_dir ", dir, ": not a directory")));
    }
    if (::access(dir.c_str(), W_OK) != 0) {
      return to_grpc(permission_denied(cat("Save: checkpoint_dir ", dir, ": not writable")));
    }
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      const std::string state = vm_state(i);
      if (state != "paused" && state != "postmigrate") {
        return to_grpc(failed_precondition(
            cat("Save: VM ", configs_[i].name, ": ", state, " (expected stopped: StopAt first)")));
      }
    }
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (context->IsCancelled()) return abandon_save(*reply);
      const std::string target = cat(dir, "/", configs_[i].name);
      auto r = vm::save_checkpoint(*vms_[i], target);
      if (!r) {
        // The VMs saved before it stay saved: say which, so the caller knows
        // what to discard.
        std::string before;
        for (const auto& v : reply->vms()) before += cat(before.empty() ? "" : ", ", v.vm());
        return to_grpc(r.status().with_context(
            cat("Save: VM ", configs_[i].name, " into ", target,
                before.empty() ? std::string() : cat(" (already saved: ", before, ")"), ": ")));
      }
      auto* saved = reply->add_vms();
      saved->set_vm(configs_[i].name);
      saved->set_dir(r->dir);
      // Digests of what is on disk, for the controller's manifest.
      std::error_code ec;
      for (fs::recursive_directory_iterator it(target, ec), end; !ec && it != end;
           it.increment(ec)) {
        if (!it->is_regular_file()) continue;
        auto sha = sha256_file(it->path());
        if (!sha)
          return to_grpc(sha.status().with_context(cat("Save: VM ", configs_[i].name, ": ")));
        auto* f = saved->add_files();
        f->set_path(fs::relative(it->path(), dir).string());
        f->set_bytes(it->file_size());
        f->set_sha256(*sha);
      }
      saved->set_state_bytes(r->save.file_bytes);
      saved->set_ram_transferred(r->save.ram_transferred);
      saved->set_state_duration_ns(dur_ns(r->save.duration));
      saved->set_disk_copy_ns(dur_ns(r->disk_copy));
      saved->set_total_ns(dur_ns(r->total));
    }
    if (context->IsCancelled()) return abandon_save(*reply);
    return grpc::Status::OK;
  }

  // Nobody will use what this Save wrote (the controller may even have
  // removed the checkpoint already): it goes.
  grpc::Status abandon_save(const vmhost::SaveReply& reply) {
    std::error_code ec;
    for (const auto& v : reply.vms()) fs::remove_all(v.dir(), ec);
    return grpc::Status(grpc::StatusCode::CANCELLED, cat("Save: the caller gave up; removed the ",
                                                         reply.vms_size(), " VMs saved so far"));
  }

  grpc::Status shutdown(vmhost::ShutdownReply* reply) {
    auto guard = lock("Shutdown");
    if (!guard) return to_grpc(guard.status());
    Status first;
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (!vms_[i]) continue;
      Status s = vms_[i]->quit();
      if (!s && first) first = s.with_context(cat("Shutdown: VM ", configs_[i].name, ": "));
      vms_[i].reset();  // kills QEMU by PID if quit did not end it
      remove_overlay(i);
      remove_lease_file(i);
      reply->add_stopped(configs_[i].name);
    }
    set_lease(0);
    return to_grpc(first);
  }

  grpc::Status restore(const vmhost::RestoreRequest& req, vmhost::RestoreReply* reply) {
    if (req.checkpoint_dir().empty()) {
      return to_grpc(invalid_argument("Restore: checkpoint_dir: not given"));
    }
    auto confined = store_.confine(req.checkpoint_dir());
    if (!confined) return to_grpc(confined.status().with_context("Restore: checkpoint_dir "));
    const std::string& dir = *confined;
    auto guard = lock("Restore");
    if (!guard) return to_grpc(guard.status());
    int64_t lease = 0;
    if (req.lease_until_ns() != 0) {
      // On the local clock now: the lease must work without master time.
      auto corr = correction();
      if (!corr) return to_grpc(corr.status().with_context("Restore: lease: "));
      lease = req.lease_until_ns() + *corr;
    }
    set_lease(0);
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (vms_[i]) {
        return to_grpc(failed_precondition(
            cat("Restore: VM ", configs_[i].name, " is still there (Shutdown first)")));
      }
      std::error_code ec;
      const std::string from = cat(dir, "/", configs_[i].name);
      if (!fs::is_directory(from, ec)) {
        return to_grpc(
            not_found(cat("Restore: VM ", configs_[i].name, ": no checkpoint at ", from)));
      }
    }
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      const vm::VmConfig& c = configs_[i];
      std::error_code ec;
      fs::create_directories(c.run_dir, ec);
      remove_overlay(i);
      vm::RestoreReport report;
      auto r = vm::restore_checkpoint(cat(dir, "/", c.name), c, &report);
      if (!r) {
        Status s = r.status().with_context(cat("Restore: VM ", c.name, ": "));
        for (std::size_t j = 0; j < i; ++j) {
          vms_[j].reset();  // all or nothing
          remove_overlay(j);
        }
        return to_grpc(s);
      }
      vms_[i] = std::move(r).value();
      auto* restored = reply->add_vms();
      restored->set_vm(c.name);
      restored->set_state_bytes(report.state_bytes);
      restored->set_start_ns(dur_ns(report.start));
      restored->set_load_ns(dur_ns(report.load));
    }
    // Paused until a ResumeAt, or the lease (#16 defect 3).
    if (lease != 0) set_lease(lease);
    return grpc::Status::OK;
  }

  grpc::Status status(vmhost::GetStatusReply* reply) {
    auto guard = lock("GetStatus");
    if (!guard) return to_grpc(guard.status());
    reply->set_host_id(config_.host_id());
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      auto* v = reply->add_vms();
      v->set_name(configs_[i].name);
      v->set_state(vm_state(i));
      v->set_pid(vms_[i] ? vms_[i]->pid() : 0);
    }
    *reply->mutable_clock() = clock_health();
    return grpc::Status::OK;
  }

  // The "console line" trigger: reports every line of the VM's serial
  // console containing `contains`, as QEMU logs it, until cancelled.
  grpc::Status watch_console(grpc::ServerContext* context, const vmhost::WatchConsoleRequest& req,
                             grpc::ServerWriter<agent::TriggerEvent>* writer) {
    if (req.contains().empty()) {
      return to_grpc(invalid_argument("WatchConsole: contains: give the text to look for"));
    }
    const vm::VmConfig* config = nullptr;
    for (const auto& c : configs_) {
      if (c.name == req.vm()) config = &c;
    }
    if (config == nullptr) {
      return to_grpc(not_found(cat("WatchConsole: no VM '", req.vm(), "' on this host")));
    }
    const std::string path = config->serial_log();
    std::error_code ec;
    // Lines printed from now on: start at the end of what is there.
    uint64_t offset = fs::exists(path, ec) ? fs::file_size(path, ec) : 0;
    std::string partial;
    while (!context->IsCancelled() && !shutting_down_) {
      const uint64_t size = fs::exists(path, ec) ? fs::file_size(path, ec) : 0;
      if (size < offset) offset = 0;  // replaced (a new QEMU): from its start
      if (size == offset) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      std::ifstream in(path, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(offset));
      std::string chunk(size - offset, '\0');
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      chunk.resize(static_cast<size_t>(in.gcount()));
      offset += chunk.size();
      partial += chunk;
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
        std::string line = partial.substr(0, nl);
        partial.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find(req.contains()) == std::string::npos) continue;
        agent::TriggerEvent event;
        auto corr = correction();
        event.set_at_ns(SystemClock::realtime_ns() - (corr ? *corr : 0));
        event.set_where(cat("vm ", req.vm(), " console"));
        event.set_detail(line);
        if (!writer->Write(event)) return grpc::Status::CANCELLED;
      }
    }
    return grpc::Status::OK;
  }

  void shut_down() { shutting_down_ = true; }

 private:
  explicit Host(const vmhost::VmHost& config)
      : config_(config), store_(config.store(), "store", "vmhost.conf: store") {}

  // ---- The lease: resume by ourselves if the controller never does ----
  std::string lease_file(std::size_t i) const { return cat(configs_[i].run_dir, "/lease"); }
  void remove_lease_file(std::size_t i) {
    std::error_code ec;
    fs::remove(lease_file(i), ec);
  }
  // `local_ns` on this host's CLOCK_REALTIME; 0 ends the lease. Kept in
  // each stopped VM's run directory for an agent that adopts them later.
  void set_lease(int64_t local_ns) {
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (local_ns == 0) {
        remove_lease_file(i);
      } else if (vms_[i]) {
        Status s = write_file_atomically(lease_file(i), cat(local_ns, "\n"));
        if (!s) std::fprintf(stderr, "amber-vmhost: %s\n", s.to_string().c_str());
      }
    }
    if (lease_) lease_->set(local_ns);
  }
  // After adopting stopped VMs: a lease an earlier agent left behind.
  void pick_up_lease() {
    int64_t lease = 0;
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      std::ifstream in(lease_file(i));
      int64_t t = 0;
      if (vms_[i] && in >> t && t > 0) lease = lease == 0 ? t : std::min(lease, t);
    }
    if (lease == 0) return;
    std::fprintf(stderr, "amber-vmhost: an earlier agent left a lease: VMs resume at %lld\n",
                 static_cast<long long>(lease));
    lease_->set(lease);
  }
  // The lease ended (holding the operation lock): resume what is stopped,
  // on this host's own clock. The lease is for the partition that takes
  // the controller and PTP away together: master time may be untrustworthy
  // now, and waiting for it would leave the VMs paused. Only a resume that
  // worked ends the lease (and removes its files); otherwise the lease
  // tries again.
  bool lease_ended() {
    google::protobuf::RepeatedPtrField<vmhost::VmStep> steps;
    grpc::Status s = step_at("ResumeAt", SystemClock::realtime_ns(), true, &steps,
                             /*local_clock=*/true);
    std::fprintf(stderr,
                 "amber-vmhost: the stop lease ended without a resume from the controller: "
                 "%d VM(s) resumed on the local clock%s%s\n",
                 steps.size(), s.ok() ? "" : ": ",
                 s.ok() ? "" : cat(s.error_message(), " (trying again in 1 s)").c_str());
    if (s.ok()) set_lease(0);
    return s.ok();
  }

  Status boot(std::size_t i) {
    const vm::VmConfig& c = configs_[i];
    std::error_code ec;
    fs::create_directories(c.run_dir, ec);
    if (ec)
      return internal_error(cat("VM ", c.name, ": run directory ", c.run_dir, ": ", ec.message()));
    if (!c.disk.empty()) {
      remove_overlay(i);
      AMBER_RETURN_IF_ERROR(vm::create_overlay(config_.vms(int(i)).disk_base(), c.disk)
                                .with_context(cat("VM ", c.name, ": ")));
    }
    auto vm = vm::Vm::boot(c);
    if (!vm) return vm.status().with_context(cat("VM ", c.name, ": boot: "));
    vms_[i] = std::move(vm).value();
    return Status::ok();
  }

  void remove_overlay(std::size_t i) {
    std::error_code ec;
    if (!configs_[i].disk.empty()) fs::remove(configs_[i].disk, ec);
  }

  std::string vm_state(std::size_t i) {
    if (!vms_[i]) return "absent";
    if (!vms_[i]->running_process()) return cat("dead: ", vms_[i]->describe_failure());
    auto s = vms_[i]->status();
    if (!s) return cat("no answer: ", s.status().message());
    return *s;
  }

  // Local minus master time; 0 without PTP.
  Result<int64_t> correction() const {
    if (!monitor_) return int64_t{0};
    return monitor_->correction_ns();
  }

  vmhost::ClockHealth clock_health() const {
    vmhost::ClockHealth h;
    if (!monitor_) {
      h.set_trustworthy(false);
      h.set_mode(kUnsynchronized);
      h.add_reasons("no ptp_socket configured: instants are read on this host's CLOCK_REALTIME");
      return h;
    }
    auto v = monitor_->verdict();
    h.set_trustworthy(v.trustworthy);
    h.set_mode(clock_sync::sync_mode_name(
        config_.sync_mode() == "disciplined"   ? clock_sync::SyncMode::kDisciplined
        : config_.sync_mode() == "grandmaster" ? clock_sync::SyncMode::kGrandmaster
                                               : clock_sync::SyncMode::kFreeRunning));
    h.set_offset_ns(v.offset_ns);
    for (const auto& r : v.reasons) h.add_reasons(r);
    return h;
  }

  // Caller holds the lock. only_stopped (resume only): VMs already running
  // are left alone and a passed instant means now. local_clock: `at_ns` is
  // this host's CLOCK_REALTIME, and master time is not consulted (the lease).
  grpc::Status step_at(const char* what, int64_t at_ns, bool only_stopped,
                       google::protobuf::RepeatedPtrField<vmhost::VmStep>* out,
                       bool local_clock = false) {
    const bool stop = std::string_view(what) == "StopAt";
    std::vector<vm::Vm*> vms;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (only_stopped) {
        const std::string state = vms_[i] ? vm_state(i) : "absent";
        if (state == "paused" || state == "postmigrate") {
          vms.push_back(vms_[i].get());
          index.push_back(i);
        }
        continue;
      }
      if (!vms_[i]) {
        return to_grpc(failed_precondition(cat(what, ": VM ", configs_[i].name, " is absent (",
                                               stop ? "boot or " : "", "Restore first)")));
      }
      // A STOP (RESUME) event never comes from a VM already stopped (running).
      const std::string state = vm_state(i);
      if (stop ? state != "running" : (state != "paused" && state != "postmigrate")) {
        return to_grpc(
            failed_precondition(cat(what, ": VM ", configs_[i].name, " is ", state,
                                    stop ? " (expected running)" : " (expected stopped)")));
      }
      vms.push_back(vms_[i].get());
      index.push_back(i);
    }
    if (vms.empty()) return grpc::Status::OK;
    auto corr = local_clock ? Result<int64_t>(int64_t{0}) : correction();
    if (!corr) return to_grpc(corr.status().with_context(cat(what, ": ")));
    const int64_t now = SystemClock::realtime_ns() - *corr;
    if (only_stopped && at_ns <= now) at_ns = now + 1'000'000;
    if (at_ns <= now) {
      return to_grpc(failed_precondition(
          cat(what, ": instant ", at_ns, " is in the past (", (now - at_ns) / 1000, " us ago)")));
    }
    if (at_ns - now > kMaxLeadNs) {
      return to_grpc(invalid_argument(cat(what, ": instant ", at_ns, " is more than ",
                                          kMaxLeadNs / 1'000'000'000, " s ahead")));
    }
    vm::InstantWaiter& waiter = local_clock ? local_waiter_ : *waiter_;
    // This thread only (no QEMU process): the scheduler's firing wakes it.
    std::optional<vm::SchedBoost> prompt;
    if (config_.agent_realtime()) prompt.emplace(std::span<const pid_t>{});
    auto r = stop ? vm::stop_all_at(vms, from_ns(at_ns), waiter)
                  : vm::resume_all_at(vms, from_ns(at_ns), waiter);
    if (!r) return to_grpc(r.status().with_context(cat(what, ": ")));
    // QEMU stamps its events on the local clock; report them in master time.
    auto after = local_clock ? corr : correction();
    const int64_t c = after ? *after : *corr;
    for (std::size_t i = 0; i < r->size(); ++i) {
      const vm::StepReport& s = (*r)[i];
      auto* step = out->Add();
      step->set_vm(configs_[index[i]].name);
      // Against the VM's own instant: a resume aligned to its stop's
      // lateness (vm::VmConfig::align_pause) is meant to come after at_ns.
      const int64_t target = to_ns(s.requested);
      step->set_event_ns(to_ns(s.event) - c);
      step->set_lateness_ns(to_ns(s.event) - c - target);
      step->set_reply_latency_ns(dur_ns(s.reply_latency));
      step->set_lead_ns(dur_ns(s.requested - s.issued));
      const bool taken = s.taken.time_since_epoch().count() != 0;
      if (taken) step->set_clock_ns(to_ns(s.taken) - c);
      // How much longer than the network's pause (T..at_ns) the guest
      // clock stood still: the controller shifts the direction that
      // delivers to this VM by as much (DelayNodeRef.attach).
      if (taken && !stop) {
        step->set_pause_excess_ns(step->clock_ns() - at_ns - dur_ns(vms[i]->stop_lateness()));
      }
      // One line per VM and step: how early the command left, and how far
      // from the instant the guest clock and QEMU's event came.
      // And how long after the guest clock the reply is ready (what a
      // run-on waits for, besides the controller's round trip).
      const int64_t ready = SystemClock::realtime_ns() - c;
      std::fprintf(stderr,
                   "amber-vmhost: %s %s: instant %+.3f ms (aligned), sent %.3f ms before it; "
                   "clock %s%.3f ms, event %+.3f ms; reply ready %+.3f ms after the clock\n",
                   what, configs_[index[i]].name.c_str(), (target - at_ns) / 1e6,
                   step->lead_ns() / 1e6, taken ? (step->clock_ns() >= target ? "+" : "") : "? ",
                   taken ? (step->clock_ns() - target) / 1e6 : 0.0,
                   (to_ns(s.event) - c - target) / 1e6,
                   (ready - (taken ? step->clock_ns() : to_ns(s.event) - c)) / 1e6);
    }
    return grpc::Status::OK;
  }

  const vmhost::VmHost config_;
  const PathRoot store_;  // every checkpoint_dir lies inside
  std::vector<vm::VmConfig> configs_;
  std::vector<std::unique_ptr<vm::Vm>> vms_;
  SystemClock local_;
  std::unique_ptr<clock_sync::SyncMonitor> monitor_;
  std::unique_ptr<clock_sync::ActionScheduler> scheduler_;  // uses monitor_
  std::unique_ptr<vm::InstantWaiter> waiter_;
  vm::SleepUntilWaiter local_waiter_;  // the lease's: this host's own clock
  OperationLock operations_;
  std::atomic<bool> shutting_down_{false};
  std::unique_ptr<Lease> lease_;  // after the VMs are adopted; uses operations_
};

// Every call first asks `access` (access.h) whether its caller may make it.
class Service final : public vmhost::VmHostAgent::Service {
 public:
  Service(Host& host, Authorizer access) : host_(host), access_(std::move(access)) {}

  grpc::Status Prepare(grpc::ServerContext* context, const vmhost::PrepareRequest* req,
                       vmhost::PrepareReply* reply) override {
    if (Status s = access_.check(*context, "Prepare"); !s) return to_grpc(s);
    return host_.prepare(*req, reply);
  }
  grpc::Status StopAt(grpc::ServerContext* context, const vmhost::StopAtRequest* req,
                      vmhost::StopAtReply* reply) override {
    if (Status s = access_.check(*context, "StopAt"); !s) return to_grpc(s);
    return host_.stop_at(*req, reply);
  }
  grpc::Status Save(grpc::ServerContext* context, const vmhost::SaveRequest* req,
                    vmhost::SaveReply* reply) override {
    if (Status s = access_.check(*context, "Save"); !s) return to_grpc(s);
    return host_.save(*req, reply, context);
  }
  grpc::Status ResumeAt(grpc::ServerContext* context, const vmhost::ResumeAtRequest* req,
                        vmhost::ResumeAtReply* reply) override {
    if (Status s = access_.check(*context, "ResumeAt"); !s) return to_grpc(s);
    return host_.resume_at(*req, reply);
  }
  grpc::Status WatchConsole(grpc::ServerContext* context, const vmhost::WatchConsoleRequest* req,
                            grpc::ServerWriter<agent::TriggerEvent>* writer) override {
    if (Status s = access_.check(*context, "WatchConsole"); !s) return to_grpc(s);
    return host_.watch_console(context, *req, writer);
  }
  grpc::Status Shutdown(grpc::ServerContext* context, const vmhost::ShutdownRequest*,
                        vmhost::ShutdownReply* reply) override {
    if (Status s = access_.check(*context, "Shutdown"); !s) return to_grpc(s);
    return host_.shutdown(reply);
  }
  grpc::Status Restore(grpc::ServerContext* context, const vmhost::RestoreRequest* req,
                       vmhost::RestoreReply* reply) override {
    if (Status s = access_.check(*context, "Restore"); !s) return to_grpc(s);
    return host_.restore(*req, reply);
  }
  grpc::Status GetStatus(grpc::ServerContext* context, const vmhost::GetStatusRequest*,
                         vmhost::GetStatusReply* reply) override {
    if (Status s = access_.check(*context, "GetStatus"); !s) return to_grpc(s);
    return host_.status(reply);
  }

 private:
  Host& host_;
  const Authorizer access_;
};

}  // namespace

struct VmHostAgent::Impl {
  std::unique_ptr<Host> host;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

VmHostAgent::VmHostAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

VmHostAgent::~VmHostAgent() {
  if (!impl_) return;
  impl_->host->shut_down();
  stop_serving(impl_->server.get());
  impl_->host.reset();  // after the server: no call still uses the VMs
}

const std::string& VmHostAgent::address() const {
  return impl_->address;
}

Result<std::unique_ptr<VmHostAgent>> VmHostAgent::start(VmHostAgentOptions options) {
  const std::string listen = options.config.listen();
  TlsFiles tls;
  if (options.config.has_tls()) {
    const auto& t = options.config.tls();
    tls = {t.ca(), t.cert(), t.key()};
  } else {
    AMBER_RETURN_IF_ERROR(check_plaintext_address(listen));
  }
  auto access =
      Authorizer::create(vmhost::VmHostAgent::service_full_name(), access_policy(options.config));
  if (!access) return access.status();
  std::fprintf(stderr, "amber-vmhost: access: %s\n", access->describe().c_str());
  std::fprintf(stderr, "amber-vmhost: store: %s\n",
               options.config.store().empty()
                   ? "none (store): Prepare, Save and Restore are refused"
                   : options.config.store().c_str());
  auto impl = std::make_unique<Impl>();
  auto host = Host::create(options.config, options.boot);
  if (!host) return host.status();
  impl->host = std::move(host).value();
  impl->service = std::make_unique<Service>(*impl->host, *std::move(access));
  auto serving = serve(listen, tls, impl->service.get());
  if (!serving) return serving.status();
  impl->server = std::move(serving->server);
  impl->address = serving->address;
  return std::unique_ptr<VmHostAgent>(new VmHostAgent(std::move(impl)));
}

}  // namespace amber::controller
