// One endpoint VM: a QEMU process driven through QMP. Boot or restore,
// stop and resume at an instant, save the device and RAM state to a file by
// migration of the stopped VM. Every step reports how long it took.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "vm-checkpoint/instant.h"
#include "vm-checkpoint/qmp_client.h"
#include "vm-checkpoint/step_lead.h"

namespace amber::vm {

enum class Accel { kAuto, kKvm, kTcg };
const char* accel_name(Accel accel);

// A port of 127.0.0.1 on the host forwarded to a port of the guest (QEMU
// user networking only): the probe's management channel (guest/README.md).
struct PortForward {
  enum class Protocol { kTcp, kUdp };
  Protocol protocol = Protocol::kTcp;
  int host_port = 0;
  int guest_port = 0;
};

struct Nic {
  enum class Kind { kUser, kTap, kVhostUser };
  Kind kind = Kind::kUser;
  std::string endpoint;  // Tap: interface name. vhost-user: socket path (served by the delay node).
  std::string mac;       // Optional, "52:54:00:..".
  std::vector<PortForward> forwards;  // kUser only.
  bool vhost_net = false;             // kTap only: QEMU's vhost=on (needs /dev/vhost-net).
  int rx_queue_size = 0;              // virtio-net's rx_queue_size; 0: QEMU's default.
};

struct VmConfig {
  std::string name = "vm";
  std::string qemu_binary = "qemu-system-x86_64";
  // Holds qmp.sock, serial.sock, serial.log and qemu.log; keep it short, as
  // UNIX socket paths are limited to 107 bytes.
  std::string run_dir;
  int memory_mib = 256;
  int vcpus = 1;
  std::string kernel;
  std::string initrd;
  std::string append;
  std::string disk;  // qcow2 image the VM writes (an overlay); empty: no disk.
  std::vector<Nic> nics;
  Accel accel = Accel::kAuto;
  // QEMU trace events to turn on besides amber's own (-trace enable=NAME):
  // a diagnosis's, written to qemu.log.
  std::vector<std::string> qemu_trace;
  std::chrono::milliseconds start_timeout{10000};
  std::chrono::milliseconds kvm_probe_timeout{3000};
  std::chrono::milliseconds command_timeout{5000};
  std::chrono::milliseconds save_timeout{120000};
  // SCHED_FIFO for this thread and QEMU's main loop from 2 ms before a
  // stop/resume instant until QEMU answered (needs root). Off by default:
  // it halves the STOP skew of idle guests but did not help busy ones on an
  // oversubscribed host (see README.md).
  bool realtime_boost = false;
  // How early `stop` and `cont` leave for QEMU (step_lead.h): off, a fixed
  // lead, or the median of this VM's recent lags from command to event.
  StepLeadPolicy step_lead;
  // Resume each VM as long after the resume instant as its guest clock
  // stopped after the stop instant, so that the guest clock pauses exactly
  // as long as the delay nodes' clocks did: frames in flight then reach it
  // at the same guest time as without the pause. Off: at the instant.
  bool align_pause = true;
  std::uint64_t max_bandwidth = std::uint64_t{100} << 30;  // Bytes/s: lifts the 128 MiB/s default.
  // Save the guest's RAM (its shared memfd) as a file of its own beside a
  // state stream without it (QEMU's x-ignore-shared), copied while the VM
  // is stopped. QEMU's migration of the RAM clears every page's dirty bit,
  // so after such a save each page the guest writes costs TCG's slow path
  // once; a RAM file leaves the pages as they were (README.md, #15).
  bool save_ram_file = false;
  // QEMU keeps running when the process that started it dies (a VM-host
  // agent's crash must not kill the experiment); Vm::adopt() takes it over
  // again. Off: QEMU dies with its starting thread (tests, tools).
  bool outlive_owner = false;

  std::string qmp_socket() const { return cat(run_dir, "/qmp.sock"); }
  std::string serial_socket() const { return cat(run_dir, "/serial.sock"); }
  std::string serial_log() const { return cat(run_dir, "/serial.log"); }
  std::string qemu_log() const { return cat(run_dir, "/qemu.log"); }
  std::string pid_file() const { return cat(run_dir, "/qemu.pid"); }
};

// The QEMU command line for `config` with `accel` resolved; with `incoming`
// it waits for migrate-incoming and stays paused afterwards (-S).
std::vector<std::string> qemu_command_line(const VmConfig& config, Accel accel, bool incoming);

// Whether KVM runs a guest here: probed once per process (a VM must reach
// its firmware banner on the serial port within `timeout`), then cached.
// `why` says what failed.
bool kvm_usable(const std::string& qemu_binary, std::chrono::milliseconds timeout,
                std::string* why = nullptr);

// Timings of stop or resume at an instant. Event times are QEMU's own
// timestamps of its STOP/RESUME events.
struct StepReport {
  WallTime requested;
  WallTime issued;                  // When the command left for QEMU.
  Clock::duration lead{};           // How long before `requested` it was meant to leave.
  WallTime taken;                   // The guest clock stopped (started) then: QEMU's run
                                    // state changed for the command. Zero if its log did
                                    // not say.
  WallTime event;                   // QEMU's STOP or RESUME event.
  Clock::duration reply_latency{};  // Command sent to reply received.
  std::chrono::nanoseconds lateness() const { return event - requested; }
};

struct SaveProgress {
  std::uint64_t transferred = 0;
  std::uint64_t total = 0;  // Guest RAM size.
  std::uint64_t remaining = 0;
};
using ProgressFn = std::function<void(const SaveProgress&)>;

struct SaveReport {
  std::string path;
  std::uint64_t file_bytes = 0;
  std::uint64_t ram_transferred = 0;
  std::uint64_t ram_file_bytes = 0;  // save_ram_file: the RAM file's data (its holes aside).
  Clock::duration duration{};        // From migrate to the file durable under its name.
  double mb_per_s() const;           // file_bytes / duration, 10^6 bytes per second.
};

struct RestoreReport {
  Clock::duration start{};  // QEMU started and QMP answering.
  Clock::duration load{};   // migrate-incoming to paused.
  std::uint64_t state_bytes = 0;
  Clock::duration total() const { return start + load; }
};

class Vm {
 public:
  // Starts QEMU and its guest running. With Accel::kAuto, KVM if
  // kvm_usable(), else TCG (the fallback is logged in fallback_reason()).
  static Result<std::unique_ptr<Vm>> boot(const VmConfig& config);
  // Takes over the QEMU an earlier owner started for this config (its PID
  // file in run_dir, its QMP socket): kNotFound when none runs.
  static Result<std::unique_ptr<Vm>> adopt(const VmConfig& config);
  // Starts QEMU with -incoming defer and loads `state_file`; the VM is left
  // paused (resume_at()). With `ram_file` (a state saved with
  // save_ram_file) the guest's RAM is loaded from it first. On failure
  // nothing is left running.
  static Result<std::unique_ptr<Vm>> restore(const VmConfig& config, const std::string& state_file,
                                             RestoreReport* report = nullptr,
                                             const std::string& ram_file = "");
  ~Vm();  // Kills QEMU by its PID if it still runs.
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  Result<StepReport> stop_at(WallTime instant, InstantWaiter& waiter);
  Result<StepReport> resume_at(WallTime instant, InstantWaiter& waiter);
  // QEMU's run state: "running", "paused", "postmigrate", "inmigrate"...
  Result<std::string> status();
  // Saves the stopped VM's state to `path` atomically (written to
  // `path`.part, fsynced, renamed); if QEMU dies meanwhile no file exists
  // under `path`. The VM can be resumed afterwards.
  Result<SaveReport> save_state(const std::string& path, const ProgressFn& progress = {});
  // With save_ram_file: the stopped VM's RAM to `path` (sparse: pages the
  // guest never touched stay holes), fsynced; the bytes of data copied.
  Result<std::uint64_t> save_ram(const std::string& path);

  // Asks QEMU to quit, kills it after `timeout`.
  Status quit(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  bool running_process();
  pid_t pid() const { return pid_; }
  Accel accel() const { return accel_; }
  const std::string& fallback_reason() const { return fallback_reason_; }
  const VmConfig& config() const { return config_; }
  void set_realtime_boost(bool on) { config_.realtime_boost = on; }
  QmpClient& qmp() { return *qmp_; }
  // The lead of this VM's stops (resumes): calibrated from its own steps.
  StepLead& step_lead(bool stop) { return stop ? stop_lead_ : resume_lead_; }
  // How long after its instant the last stop took effect (the guest clock
  // stopped; QEMU's STOP event when its log did not say): with align_pause
  // the resume comes that much after its instant too. Kept in a checkpoint
  // (meta.json) for a restore.
  Clock::duration stop_lateness() const { return stop_lateness_; }
  void set_stop_lateness(Clock::duration d) { stop_lateness_ = d; }
  // Why QEMU ended or what it printed last, for error messages.
  std::string describe_failure();

 private:
  Vm(VmConfig config, pid_t pid, Accel accel)
      : config_(std::move(config)),
        pid_(pid),
        accel_(accel),
        stop_lead_(config_.step_lead),
        resume_lead_(config_.step_lead) {}
  static Result<std::unique_ptr<Vm>> start(const VmConfig& config, Accel accel, bool incoming);

  VmConfig config_;
  pid_t pid_;
  Accel accel_;
  std::string fallback_reason_;
  std::unique_ptr<QmpClient> qmp_;
  bool exited_ = false;  // Reaped: the PID must not be signalled again.
  int exit_status_ = 0;
  StepLead stop_lead_;
  Clock::duration stop_lateness_{};
  StepLead resume_lead_;
};

// Stops (resumes) every VM at one instant: the commands leave from one
// thread, each its VM's step lead before the instant (back to back without
// leads), so the spread of their events is QEMU's, not ours.
Result<std::vector<StepReport>> stop_all_at(std::span<Vm* const> vms, WallTime instant,
                                            InstantWaiter& waiter);
Result<std::vector<StepReport>> resume_all_at(std::span<Vm* const> vms, WallTime instant,
                                              InstantWaiter& waiter);

}  // namespace amber::vm
