#include "controller/vmhost_client.h"

#include <algorithm>
#include <filesystem>

#include "common/strings.h"
#include "common/units.h"
#include "controller/agent_calls.h"
#include "controller/experiment_steps.h"
#include "rpc/files.h"

namespace amber::controller {
namespace fs = std::filesystem;
namespace {

// Files of a VM saved by an agent that sent no digests, checksummed here
// (the store is shared).
Status digest_tree(const std::string& root, const std::string& rel, Piece* piece) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(cat(root, "/", rel), ec), end; !ec && it != end;
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    auto sha = sha256_file(it->path());
    if (!sha) return sha.status();
    StoredFile* f = piece->add_files();
    f->set_path(fs::relative(it->path(), root).string());
    f->set_bytes(it->file_size());
    f->set_sha256(*sha);
  }
  if (ec) return unavailable(cat(root, "/", rel, ": ", ec.message()));
  return Status::ok();
}

// The worst lateness of the VMs, and each VM's STOP or RESUME event.
AgentStep vm_events(const google::protobuf::RepeatedPtrField<vmhost::VmStep>& vms) {
  AgentStep step;
  int64_t late = 0;
  for (const auto& vm : vms) {
    late = std::max(late, vm.lateness_ns());
    (*step.mutable_vm_event_ns())[vm.vm()] = vm.event_ns();
    if (vm.clock_ns() != 0) (*step.mutable_vm_clock_ns())[vm.vm()] = vm.clock_ns();
    if (vm.pause_excess_ns() != 0) {
      (*step.mutable_vm_pause_excess_ns())[vm.vm()] = vm.pause_excess_ns();
    }
  }
  step.set_lateness_ns(late);
  return step;
}

}  // namespace

VmHostClient::VmHostClient(config::VmHostRef ref, std::unique_ptr<Stub> stub,
                           const Durations& durations)
    : ref_(std::move(ref)),
      stub_(std::move(stub)),
      step_deadline_ns_(durations.step_deadline_ns),
      save_deadline_ns_(durations.save_deadline_ns),
      watch_deadline_ns_(durations.watch_deadline_ns),
      what_(cat("vm host ", ref_.id())) {}

Result<Prepared> VmHostClient::prepare(const std::string& dir, bool allow_unsynchronized) {
  vmhost::GetStatusReply status;
  if (auto s = unary(*stub_, &Stub::GetStatus, {}, &status, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  for (const auto& vm : ref_.vm()) {
    auto found = std::find_if(status.vms().begin(), status.vms().end(),
                              [&](const vmhost::VmState& v) { return v.name() == vm; });
    if (found == status.vms().end()) {
      return failed_precondition(cat(what_, ": VM '", vm, "' of the topology is not on this host"));
    }
    if (found->state() != "running") {
      return failed_precondition(
          cat(what_, ": VM '", vm, "' is ", found->state(), ", not running"));
    }
  }
  vmhost::PrepareRequest req;
  req.set_checkpoint_dir(dir + "/vms");
  req.set_allow_unsynchronized(allow_unsynchronized);
  vmhost::PrepareReply reply;
  const int64_t t0 = steady_ns();
  auto s = unary(*stub_, &Stub::Prepare, req, &reply, step_deadline_ns_);
  const Prepared prepared{reply.estimated_state_bytes(), steady_ns() - t0};
  if (!s.ok()) return agent_error(what_, s);
  if (!reply.ready()) {
    return failed_precondition(cat(what_, " is not ready: ", join(reply.reasons())));
  }
  return prepared;
}

Result<AgentStep> VmHostClient::stop_at(int64_t at_ns, int64_t lease_until_ns, int64_t ahead_ns) {
  vmhost::StopAtRequest req;
  req.set_at_ns(at_ns);
  req.set_lease_until_ns(lease_until_ns);
  vmhost::StopAtReply reply;
  if (auto s = unary(*stub_, &Stub::StopAt, req, &reply, ahead_ns + step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return vm_events(reply.vms());
}

Result<Saved> VmHostClient::save(const std::string& dir) {
  vmhost::SaveRequest req;
  req.set_checkpoint_dir(dir + "/vms");
  vmhost::SaveReply reply;
  if (auto s = unary(*stub_, &Stub::Save, req, &reply, save_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  Saved saved;
  uint64_t bytes = 0;
  for (const auto& vm : reply.vms()) {
    Piece& piece = saved.pieces.emplace_back();
    piece.set_kind("vm");
    piece.set_name(vm.vm());
    piece.set_agent(what_);
    for (const auto& file : vm.files()) {
      StoredFile* f = piece.add_files();
      f->set_path(cat("vms/", file.path()));
      f->set_bytes(file.bytes());
      f->set_sha256(file.sha256());
    }
    if (vm.files().empty()) {
      if (Status s = digest_tree(dir, cat("vms/", vm.vm()), &piece); !s) {
        return s.with_context(cat(what_, ": "));
      }
    }
    for (const auto& f : piece.files()) bytes += f.bytes();
  }
  saved.step.set_bytes(bytes);
  return saved;
}

Result<Resumed> VmHostClient::resume_at(int64_t at_ns, int64_t ahead_ns) {
  vmhost::ResumeAtRequest req;
  req.set_at_ns(at_ns);
  vmhost::ResumeAtReply reply;
  auto s = unary(*stub_, &Stub::ResumeAt, req, &reply, ahead_ns + step_deadline_ns_);
  const bool late = instant_passed(s);
  if (late) {
    req.set_only_stopped(true);  // now
    s = unary(*stub_, &Stub::ResumeAt, req, &reply, step_deadline_ns_);
  }
  if (!s.ok()) return agent_error(what_, s);
  return Resumed{vm_events(reply.vms()), late};
}

Status VmHostClient::roll_back(int64_t at_ns, int64_t ahead_ns) {
  vmhost::ResumeAtRequest req;
  req.set_at_ns(at_ns);
  req.set_only_stopped(true);
  vmhost::ResumeAtReply reply;
  if (auto s = unary(*stub_, &Stub::ResumeAt, req, &reply, ahead_ns + step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return Status::ok();
}

Status VmHostClient::shutdown() {
  vmhost::ShutdownReply reply;
  if (auto s = unary(*stub_, &Stub::Shutdown, {}, &reply, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return Status::ok();
}

Status VmHostClient::find_pieces(const Manifest& manifest) const {
  for (const auto& vm : ref_.vm()) {
    auto piece = std::find_if(manifest.pieces().begin(), manifest.pieces().end(),
                              [&](const Piece& p) { return p.kind() == "vm" && p.name() == vm; });
    if (piece == manifest.pieces().end()) {
      return failed_precondition(
          cat("checkpoint ", manifest.id(), " holds no state of VM '", vm, "' (", what_, ")"));
    }
  }
  return Status::ok();
}

Result<bool> VmHostClient::running() {
  vmhost::GetStatusReply status;
  if (auto s = unary(*stub_, &Stub::GetStatus, {}, &status, step_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  bool present = false;
  for (const auto& vm : status.vms()) present |= vm.state() != "absent";
  return present;
}

Status VmHostClient::load(const std::string& dir, int64_t lease_until_ns) {
  vmhost::RestoreRequest req;
  req.set_checkpoint_dir(dir + "/vms");
  req.set_lease_until_ns(lease_until_ns);
  vmhost::RestoreReply reply;
  if (auto s = unary(*stub_, &Stub::Restore, req, &reply, save_deadline_ns_); !s.ok()) {
    return agent_error(what_, s);
  }
  return Status::ok();
}

AgentStatus VmHostClient::status() {
  AgentStatus a;
  a.set_kind("vm host");
  a.set_id(ref_.id());
  a.set_address(ref_.address());
  vmhost::GetStatusReply status;
  const int64_t t0 = steady_ns();
  auto s = unary(*stub_, &Stub::GetStatus, {}, &status, 2'000'000'000);
  a.set_round_trip_ns(steady_ns() - t0);
  a.set_reachable(s.ok());
  if (!s.ok()) {
    a.set_error(s.error_message());
    return a;
  }
  const auto& c = status.clock();
  a.set_clock_trustworthy(c.trustworthy());
  a.set_clock(c.trustworthy() ? cat(c.mode(), ", offset ", format_duration_ns(c.offset_ns()))
                              : cat(c.mode(), ": not trustworthy: ", join(c.reasons())));
  bool paused = false;
  for (const auto& vm : status.vms()) {
    a.add_vms(cat(vm.name(), " ", vm.state()));
    paused |= vm.state() == "paused" || vm.state() == "postmigrate";
  }
  a.set_frozen(paused);
  return a;
}

Result<std::unique_ptr<TriggerStream>> VmHostClient::watch(const config::Trigger& trigger,
                                                           const std::string& pattern) {
  if (!trigger.has_console() || trigger.console().vm_host() != ref_.id()) {
    return invalid_argument(cat("trigger '", trigger.name(), "' does not watch ", what_));
  }
  vmhost::WatchConsoleRequest req;
  req.set_vm(trigger.console().vm());
  req.set_contains(pattern);
  return std::unique_ptr<TriggerStream>(std::make_unique<TriggerCall>(
      [&](grpc::ClientContext* context) { return stub_->WatchConsole(context, req); },
      watch_deadline_ns_));
}

}  // namespace amber::controller
