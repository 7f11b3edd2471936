#include "vm-checkpoint/vm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "vm-checkpoint/process.h"
#include "vm-checkpoint/sched_boost.h"

namespace amber::vm {
namespace {

namespace fs = std::filesystem;

// Guest NIC offloads off for tap: the delay node's PMD does not do them.
constexpr const char* kTapOffloads =
    ",csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,"
    "guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";

// How long before an instant the real-time boost starts.
constexpr auto kBoostLead = std::chrono::milliseconds(2);

std::string ms_text(Clock::duration d) {
  return cat(std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), " ms");
}

Status fsync_dir_of(const std::string& path) {
  fs::path parent = fs::absolute(fs::path(path)).parent_path();
  const std::string dir = parent.string();
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return internal_error(cat("open directory ", dir, ": ", std::strerror(errno)));
  int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) return internal_error(cat("fsync directory ", dir, ": ", std::strerror(errno)));
  return Status::ok();
}

// QEMU's guest RAM: the memfd of its memory backend, opened through
// /proc (the process's own descriptor, so root needs no help from QEMU).
Result<int> open_guest_ram(pid_t pid, int flags) {
  const std::string dir = cat("/proc/", pid, "/fd");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code lec;
    const std::string target = fs::read_symlink(e.path(), lec).string();
    if (lec || target.rfind("/memfd:memory-backend-memfd", 0) != 0) continue;
    int fd = ::open(e.path().c_str(), flags | O_CLOEXEC);
    if (fd < 0) {
      return internal_error(
          cat("open ", e.path().string(), " (", target, "): ", std::strerror(errno)));
    }
    return fd;
  }
  if (ec) return internal_error(cat("list ", dir, ": ", ec.message()));
  return not_found(cat("QEMU (pid ", pid, ") has no memory-backend-memfd"));
}

constexpr ssize_t kPage = 4096;

// Copies the data of `in` (its holes skipped: SEEK_DATA/SEEK_HOLE) to the
// same offsets of `out`, but for its zero pages; the bytes copied.
Result<std::uint64_t> copy_data(int in, int out, off_t size, const std::string& what) {
  std::vector<char> buf(std::size_t{1} << 20);
  std::uint64_t copied = 0;
  off_t at = 0;
  while (at < size) {
    off_t data = ::lseek(in, at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      return internal_error(cat(what, ": seek: ", std::strerror(errno)));
    }
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) hole = size;
    for (off_t o = data; o < hole;) {
      const auto want = static_cast<std::size_t>(std::min<off_t>(hole - o, buf.size()));
      const ssize_t n = ::pread(in, buf.data(), want, o);
      if (n <= 0) return internal_error(cat(what, ": read at ", o, ": ", std::strerror(errno)));
      // Runs of pages but the zero ones: `out` reads zero there already
      // (a new file's holes, a new QEMU's untouched memfd).
      auto zero = [&](ssize_t p) {
        const char* page = buf.data() + p;
        const auto len = static_cast<std::size_t>(std::min<ssize_t>(kPage, n - p));
        return page[0] == 0 && std::memcmp(page, page + 1, len - 1) == 0;
      };
      for (ssize_t p = 0; p < n;) {
        if (zero(p)) {
          p += kPage;
          continue;
        }
        ssize_t end = p + kPage;
        while (end < n && !zero(end)) end += kPage;
        end = std::min(end, n);
        for (ssize_t done = p; done < end;) {
          const ssize_t w =
              ::pwrite(out, buf.data() + done, static_cast<std::size_t>(end - done), o + done);
          if (w <= 0) {
            return internal_error(cat(what, ": write at ", o + done, ": ", std::strerror(errno)));
          }
          done += w;
        }
        copied += static_cast<std::uint64_t>(end - p);
        p = end;
      }
      o += n;
    }
    at = hole;
  }
  return copied;
}

// QEMU keeps a capability until it is set again: every save says which.
Status ignore_shared_ram(QmpClient& qmp, bool on, std::chrono::milliseconds timeout) {
  Json caps = Json::array({{{"capability", "x-ignore-shared"}, {"state", on}}});
  auto r = qmp.execute("migrate-set-capabilities", {{"capabilities", caps}}, timeout);
  return r ? Status::ok() : r.status().with_context("x-ignore-shared: ");
}

// "<what>: <error> (<why>)": the error from below, what was being done, and
// what QEMU said about it.
Status annotate(const Status& s, const std::string& what, const std::string& why) {
  return Status(s.code(), cat(what, ": ", s.message(), why.empty() ? "" : cat(" (", why, ")")));
}

Result<std::vector<StepReport>> step_all_at(std::span<Vm* const> vms, WallTime instant,
                                            InstantWaiter& waiter, const char* command,
                                            const char* event);

}  // namespace

const char* accel_name(Accel accel) {
  switch (accel) {
    case Accel::kAuto:
      return "auto";
    case Accel::kKvm:
      return "kvm";
    case Accel::kTcg:
      return "tcg";
  }
  return "?";
}

std::vector<std::string> qemu_command_line(const VmConfig& c, Accel accel, bool incoming) {
  std::vector<std::string> a = {c.qemu_binary,     "-name",    cat(c.name, ",debug-threads=on"),
                                "-machine",        "q35",      "-nodefaults",
                                "-no-user-config", "-display", "none"};
  if (accel == Accel::kKvm) {
    a.insert(a.end(), {"-accel", "kvm", "-cpu", "max"});
  } else {
    a.insert(a.end(), {"-accel", "tcg"});
  }
  // Shared guest RAM from a memfd: vhost-user back ends map it.
  a.insert(a.end(), {"-m", cat(c.memory_mib, "M"), "-smp", cat(c.vcpus), "-object",
                     cat("memory-backend-memfd,id=mem,size=", c.memory_mib, "M,share=on"), "-numa",
                     "node,memdev=mem"});
  // The RTC follows the VM's clock, which stops while the VM is stopped.
  a.insert(a.end(), {"-rtc", "base=utc,clock=vm"});
  if (!c.kernel.empty()) a.insert(a.end(), {"-kernel", c.kernel});
  if (!c.initrd.empty()) a.insert(a.end(), {"-initrd", c.initrd});
  if (!c.append.empty()) a.insert(a.end(), {"-append", c.append});
  if (!c.disk.empty()) {
    a.insert(a.end(),
             {"-drive", cat("file=", c.disk, ",if=none,id=disk0,format=qcow2,cache=writeback"),
              "-device", "virtio-blk-pci,drive=disk0"});
  }
  for (std::size_t i = 0; i < c.nics.size(); ++i) {
    const Nic& nic = c.nics[i];
    std::string net = cat("net", i);
    std::string device = cat("virtio-net-pci,netdev=", net, ",romfile=");
    if (!nic.mac.empty()) device += cat(",mac=", nic.mac);
    if (nic.rx_queue_size > 0) device += cat(",rx_queue_size=", nic.rx_queue_size);
    switch (nic.kind) {
      case Nic::Kind::kUser: {
        std::string user = cat("user,id=", net);
        for (const PortForward& f : nic.forwards) {
          user += cat(",hostfwd=", f.protocol == PortForward::Protocol::kUdp ? "udp" : "tcp",
                      ":127.0.0.1:", f.host_port, "-:", f.guest_port);
        }
        a.insert(a.end(), {"-netdev", user});
        break;
      }
      case Nic::Kind::kTap:
        a.insert(a.end(),
                 {"-netdev", cat("tap,id=", net, ",ifname=", nic.endpoint,
                                 ",script=no,downscript=no", nic.vhost_net ? ",vhost=on" : "")});
        device += kTapOffloads;
        break;
      case Nic::Kind::kVhostUser:
        a.insert(a.end(), {"-chardev", cat("socket,id=chr", net, ",path=", nic.endpoint), "-netdev",
                           cat("vhost-user,id=", net, ",chardev=chr", net)});
        // Under TCG, QEMU 7.2 crashes on MSI-X with vhost-user: no vectors.
        if (accel != Accel::kKvm) device += ",vectors=0";
        break;
    }
    a.insert(a.end(), {"-device", device});
  }
  a.insert(a.end(), {"-chardev",
                     cat("socket,id=ser0,path=", c.serial_socket(),
                         ",server=on,wait=off,logfile=", c.serial_log(), ",logappend=on"),
                     "-serial", "chardev:ser0"});
  a.insert(a.end(), {"-chardev", cat("socket,id=qmp0,path=", c.qmp_socket(), ",server=on,wait=off"),
                     "-mon", "chardev=qmp0,mode=control"});
  a.insert(a.end(), {"-pidfile", c.pid_file()});
  // QEMU's log (qemu.log) then says, to the microsecond, when its main loop
  // took each QMP command and when the VM's run state changed: the state
  // goes to "paused" just before the guest clock stops and to "running"
  // just after it starts (runstate_set), while the STOP event follows only
  // after the vCPUs and back ends have stopped, and a `cont` after a save
  // first re-activates the disks, for milliseconds on a busy host.
  a.insert(a.end(), {"-msg", "timestamp=on", "-trace", "enable=monitor_qmp_cmd_in_band", "-trace",
                     "enable=runstate_set", "-trace", "enable=vm_state_notify"});
  for (const std::string& event : c.qemu_trace)
    a.insert(a.end(), {"-trace", cat("enable=", event)});
  if (incoming) a.insert(a.end(), {"-S", "-incoming", "defer"});
  return a;
}

bool kvm_usable(const std::string& qemu_binary, std::chrono::milliseconds timeout,
                std::string* why) {
  static std::mutex mu;
  static std::optional<std::pair<bool, std::string>> cached;
  std::lock_guard lock(mu);
  if (!cached) {
    auto probe = [&]() -> std::pair<bool, std::string> {
      if (::access("/dev/kvm", R_OK | W_OK) != 0) {
        return {false, cat("/dev/kvm: ", std::strerror(errno))};
      }
      char dir_template[] = "/tmp/amb-vm-kvmprobe-XXXXXX";
      if (::mkdtemp(dir_template) == nullptr) return {false, "mkdtemp failed"};
      const std::string dir = dir_template;
      const std::string serial = cat(dir, "/serial.log");
      auto pid = spawn_process(
          {qemu_binary, "-machine", "q35", "-accel", "kvm", "-cpu", "max", "-m", "64",
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", cat("file:", serial)},
          cat(dir, "/qemu.log"));
      std::pair<bool, std::string> result{false, ""};
      if (!pid) {
        result.second = pid.status().to_string();
      } else {
        // A working KVM runs SeaBIOS, which prints its banner at once.
        const auto deadline = Clock::now() + timeout;
        while (true) {
          if (file_tail(serial, 4096).find("SeaBIOS") != std::string::npos) {
            result = {true, ""};
            break;
          }
          if (auto st = poll_exit(*pid); st.exited) {
            result.second = cat("QEMU with -accel kvm ", describe_exit(st.status), ": ",
                                file_tail(cat(dir, "/qemu.log"), 300));
            break;
          }
          if (Clock::now() >= deadline) {
            result.second = cat("guest under KVM printed nothing within ", timeout.count(),
                                " ms (stuck vCPU, e.g. nested KVM)");
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        kill_and_reap(*pid);
      }
      std::error_code ec;
      fs::remove_all(dir, ec);
      return result;
    };
    cached = probe();
  }
  if (why != nullptr) *why = cached->second;
  return cached->first;
}

double SaveReport::mb_per_s() const {
  double s = std::chrono::duration<double>(duration).count();
  return s > 0 ? static_cast<double>(file_bytes) / 1e6 / s : 0.0;
}

Result<std::unique_ptr<Vm>> Vm::start(const VmConfig& config, Accel accel, bool incoming) {
  if (config.run_dir.empty())
    return invalid_argument(cat("VM ", config.name, ": run_dir is empty"));
  std::error_code ec;
  // Whatever built the config: a comma would reach QEMU's option parser.
  std::vector<std::string> values = {config.name, config.run_dir, config.disk};
  for (const Nic& nic : config.nics) values.insert(values.end(), {nic.mac, nic.endpoint});
  for (const std::string& v : values) {
    if (v.find(',') != std::string::npos) {
      return invalid_argument(cat("VM ", config.name, ": '", v, "': no commas (QEMU options)"));
    }
  }
  fs::create_directories(config.run_dir, ec);
  if (ec) return internal_error(cat("create ", config.run_dir, ": ", ec.message()));
  // Its QMP and console sockets, disk overlay and logs: the owner's only.
  fs::permissions(config.run_dir, fs::perms::owner_all, ec);
  for (const Nic& nic : config.nics) {
    if (!nic.forwards.empty() && nic.kind != Nic::Kind::kUser) {
      return invalid_argument(cat("VM ", config.name, ": port forwards need a user-network NIC"));
    }
    for (const PortForward& f : nic.forwards) {
      if (f.host_port < 1 || f.host_port > 65535 || f.guest_port < 1 || f.guest_port > 65535) {
        return invalid_argument(cat("VM ", config.name, ": port forward ", f.host_port, " -> ",
                                    f.guest_port, ": ports are 1..65535"));
      }
    }
  }
  for (const std::string& f : {config.qmp_socket(), config.serial_socket()}) ::unlink(f.c_str());
  for (const std::string& f : {config.kernel, config.initrd, config.disk}) {
    if (!f.empty() && ::access(f.c_str(), R_OK) != 0) {
      return not_found(cat("VM ", config.name, ": ", f, ": ", std::strerror(errno)));
    }
  }
  ::unlink(config.pid_file().c_str());
  auto pid = spawn_process(qemu_command_line(config, accel, incoming), config.qemu_log(),
                           !config.outlive_owner);
  if (!pid) return pid.status();
  std::unique_ptr<Vm> vm(new Vm(config, *pid, accel));
  // Short attempts, so a QEMU that exits at once (bad option, missing
  // file) is reported at once rather than after the whole start timeout.
  const auto deadline = Clock::now() + config.start_timeout;
  auto qmp = QmpClient::connect(config.qmp_socket(), std::chrono::milliseconds(250));
  while (!qmp && qmp.status().code() == ErrorCode::kDeadlineExceeded && vm->running_process() &&
         Clock::now() < deadline) {
    qmp = QmpClient::connect(config.qmp_socket(), std::chrono::milliseconds(250));
  }
  if (!qmp) {
    return annotate(qmp.status(), cat("starting VM ", config.name, " (", accel_name(accel), ")"),
                    vm->describe_failure());
  }
  vm->qmp_ = std::move(*qmp);
  return vm;
}

Result<std::unique_ptr<Vm>> Vm::adopt(const VmConfig& config) {
  std::ifstream in(config.pid_file());
  pid_t pid = 0;
  if (!in || !(in >> pid) || pid <= 0) {
    return not_found(cat("VM ", config.name, ": no QEMU PID file at ", config.pid_file()));
  }
  if (!process_alive(pid)) {
    return not_found(
        cat("VM ", config.name, ": QEMU ", pid, " of ", config.pid_file(), " no longer runs"));
  }
  // The PID could have been reused: it must be the QEMU of this run dir.
  std::ifstream cmdline(cat("/proc/", pid, "/cmdline"));
  std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  if (args.find(config.qmp_socket()) == std::string::npos) {
    return not_found(
        cat("VM ", config.name, ": process ", pid, " is not the QEMU of ", config.run_dir));
  }
  const Accel accel =
      args.find(std::string("-accel\0kvm", 10)) != std::string::npos ? Accel::kKvm : Accel::kTcg;
  std::unique_ptr<Vm> vm(new Vm(config, pid, accel));
  auto qmp = QmpClient::connect(config.qmp_socket(), config.command_timeout);
  if (!qmp) {
    return annotate(qmp.status(), cat("adopting VM ", config.name, " (QEMU ", pid, ")"), "");
  }
  vm->qmp_ = std::move(*qmp);
  return vm;
}

Result<std::unique_ptr<Vm>> Vm::boot(const VmConfig& config) {
  Accel accel = config.accel;
  std::string reason;
  if (accel == Accel::kAuto) {
    accel = kvm_usable(config.qemu_binary, config.kvm_probe_timeout, &reason) ? Accel::kKvm
                                                                              : Accel::kTcg;
  }
  auto vm = start(config, accel, false);
  if (vm && accel == Accel::kKvm && config.accel == Accel::kAuto) {
    // The probe passed, but the real guest could still fail: check it runs.
    auto st = (*vm)->status();
    if (!st || *st != "running") {
      reason = cat("KVM start failed: ", st ? *st : st.status().to_string());
      vm = Result<std::unique_ptr<Vm>>(internal_error(reason));
    }
  }
  if (!vm && accel == Accel::kKvm && config.accel == Accel::kAuto) {
    reason = vm.status().to_string();
    accel = Accel::kTcg;
    vm = start(config, accel, false);
  }
  if (vm && !reason.empty()) (*vm)->fallback_reason_ = cat("KVM not used: ", reason);
  return vm;
}

Result<std::unique_ptr<Vm>> Vm::restore(const VmConfig& config, const std::string& state_file,
                                        RestoreReport* report, const std::string& ram_file) {
  const auto t0 = Clock::now();
  struct stat st {};
  if (::stat(state_file.c_str(), &st) != 0) {
    return not_found(cat("restore of VM ", config.name, ": state file ", state_file, ": ",
                         std::strerror(errno)));
  }
  int fd = ::open(state_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return not_found(cat("restore of VM ", config.name, ": cannot open state file ", state_file,
                         ": ", std::strerror(errno)));
  }
  // A restore must use the accelerator the state was saved under; auto
  // resolves the same way on the same host.
  Accel accel = config.accel;
  if (accel == Accel::kAuto) {
    accel = kvm_usable(config.qemu_binary, config.kvm_probe_timeout) ? Accel::kKvm : Accel::kTcg;
  }
  auto vm = start(config, accel, true);
  if (!vm) {
    ::close(fd);
    return vm.status();
  }
  const auto t1 = Clock::now();
  QmpClient& qmp = (*vm)->qmp();
  auto fail = [&](const Status& s) -> Status {
    std::string why = (*vm)->describe_failure();
    vm.value().reset();
    return annotate(s, cat("restore of VM ", config.name, " from ", state_file), why);
  };
  if (!ram_file.empty()) {
    // The stream has no RAM: the new QEMU's memfd gets the saved one first.
    if (Status s = ignore_shared_ram(qmp, true, config.command_timeout); !s) {
      ::close(fd);
      return fail(s);
    }
    int in = ::open(ram_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
      ::close(fd);
      return fail(not_found(cat("RAM file ", ram_file, ": ", std::strerror(errno))));
    }
    auto out = open_guest_ram((*vm)->pid(), O_WRONLY);
    struct stat rs {};
    struct stat ms {};
    Status s = out ? Status::ok() : out.status();
    if (s && (::fstat(in, &rs) != 0 || ::fstat(*out, &ms) != 0)) {
      s = internal_error(cat("stat ", ram_file, ": ", std::strerror(errno)));
    }
    if (s && rs.st_size != ms.st_size) {
      s = invalid_argument(cat("RAM file ", ram_file, " holds ", rs.st_size >> 20,
                               " MiB, the VM has ", ms.st_size >> 20, " MiB"));
    }
    if (s) {
      auto copied = copy_data(in, *out, rs.st_size, cat("loading ", ram_file));
      if (!copied) s = copied.status();
    }
    ::close(in);
    if (out) ::close(*out);
    if (!s) {
      ::close(fd);
      return fail(s);
    }
  }
  auto got = qmp.send("getfd", {{"fdname", "amber-load"}}, fd);
  ::close(fd);
  if (!got) return fail(got.status());
  if (auto r = got->wait(config.command_timeout); !r) return fail(r.status());
  if (auto r = qmp.execute("migrate-incoming", {{"uri", "fd:amber-load"}}, config.command_timeout);
      !r) {
    return fail(r.status());
  }
  const auto deadline = Clock::now() + config.save_timeout;
  while (true) {
    auto s = (*vm)->status();
    if (!s) return fail(s.status());
    if (*s == "paused") break;
    if (*s != "inmigrate" && *s != "prelaunch") {
      return fail(data_loss(cat("loading the state left the VM in state '", *s, "'")));
    }
    if (Clock::now() >= deadline) {
      return fail(deadline_exceeded(cat("state not loaded within ", ms_text(config.save_timeout))));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (report != nullptr) {
    report->start = t1 - t0;
    report->load = Clock::now() - t1;
    report->state_bytes = static_cast<std::uint64_t>(st.st_size);
  }
  return vm;
}

Vm::~Vm() {
  qmp_.reset();
  if (!exited_) kill_and_reap(pid_);
}

bool Vm::running_process() {
  if (exited_) return false;
  ExitState st = poll_exit(pid_);
  if (st.exited) {
    exited_ = true;
    exit_status_ = st.status;
  }
  return !exited_;
}

std::string Vm::describe_failure() {
  std::string out;
  // A QEMU that closed its monitor is usually exiting: give it a moment so
  // the message can say how it ended.
  const auto deadline = Clock::now() + std::chrono::milliseconds(1000);
  ExitState st{exited_, exit_status_};
  if (!st.exited) st = poll_exit(pid_);
  while (!st.exited && qmp_ && !qmp_->connected() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    st = poll_exit(pid_);
  }
  if (st.exited) {
    exited_ = true;
    exit_status_ = st.status;
  }
  if (exited_) out = cat("QEMU ", describe_exit(exit_status_));
  std::string tail = file_tail(config_.qemu_log(), 400);
  if (!tail.empty()) out += cat(out.empty() ? "" : "; ", "qemu.log: ", tail);
  return out;
}

Result<std::string> Vm::status() {
  auto r = qmp_->execute("query-status", Json::object(), config_.command_timeout);
  if (!r) return r.status();
  return r->value("status", "");
}

Result<StepReport> Vm::stop_at(WallTime instant, InstantWaiter& waiter) {
  Vm* self = this;
  auto r = step_all_at({&self, 1}, instant, waiter, "stop", "STOP");
  if (!r) return r.status();
  return r->front();
}

Result<StepReport> Vm::resume_at(WallTime instant, InstantWaiter& waiter) {
  Vm* self = this;
  auto r = step_all_at({&self, 1}, instant, waiter, "cont", "RESUME");
  if (!r) return r.status();
  return r->front();
}

Result<SaveReport> Vm::save_state(const std::string& path, const ProgressFn& progress) {
  auto state = status();
  if (!state) return state.status();
  if (*state == "running") {
    return failed_precondition(
        cat("save of VM ", config_.name, ": the VM is running; stop it first"));
  }
  const auto t0 = Clock::now();
  const std::string part = cat(path, ".part");
  // Guest RAM: the owner's only (#16 defect 6).
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return internal_error(cat("save: open ", part, ": ", std::strerror(errno)));
  (void)::fchmod(fd, 0600);
  auto fail = [&](const Status& s) -> Status {
    ::close(fd);
    ::unlink(part.c_str());
    std::string why = qmp_->connected() ? "" : describe_failure();
    return annotate(s, cat("save of VM ", config_.name, " to ", path), why);
  };
  const auto timeout = config_.command_timeout;
  if (auto r = qmp_->execute("migrate-set-parameters", {{"max-bandwidth", config_.max_bandwidth}},
                             timeout);
      !r) {
    return fail(r.status());
  }
  if (Status s = ignore_shared_ram(*qmp_, config_.save_ram_file, timeout); !s) return fail(s);
  auto got = qmp_->send("getfd", {{"fdname", "amber-save"}}, fd);
  if (!got) return fail(got.status());
  if (auto r = got->wait(timeout); !r) return fail(r.status());
  if (auto r = qmp_->execute("migrate", {{"uri", "fd:amber-save"}}, timeout); !r) {
    return fail(r.status());
  }
  SaveReport report;
  report.path = path;
  const auto deadline = Clock::now() + config_.save_timeout;
  while (true) {
    auto info = qmp_->execute("query-migrate", Json::object(), timeout);
    if (!info) return fail(info.status());
    std::string st = info->value("status", "");
    const Json& ram = info->value("ram", Json::object());
    SaveProgress p{ram.value("transferred", std::uint64_t{0}), ram.value("total", std::uint64_t{0}),
                   ram.value("remaining", std::uint64_t{0})};
    if (progress && ram.is_object() && !ram.empty()) progress(p);
    if (st == "completed") {
      report.ram_transferred = p.transferred;
      break;
    }
    if (st == "failed" || st == "cancelled") {
      return fail(internal_error(cat("migration ", st, ": ", info->value("error-desc", ""))));
    }
    if (Clock::now() >= deadline) {
      (void)qmp_->execute("migrate_cancel", Json::object(), timeout);
      return fail(deadline_exceeded(cat("not saved within ", ms_text(config_.save_timeout))));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (::fsync(fd) != 0)
    return fail(internal_error(cat("fsync ", part, ": ", std::strerror(errno))));
  struct stat sb {};
  ::fstat(fd, &sb);
  report.file_bytes = static_cast<std::uint64_t>(sb.st_size);
  ::close(fd);
  fd = -1;
  if (::rename(part.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(part.c_str());
    return internal_error(cat("save: rename ", part, " to ", path, ": ", std::strerror(e)));
  }
  AMBER_RETURN_IF_ERROR(fsync_dir_of(path));
  report.duration = Clock::now() - t0;
  return report;
}

Result<std::uint64_t> Vm::save_ram(const std::string& path) {
  auto in = open_guest_ram(pid_, O_RDONLY);
  if (!in) return in.status().with_context(cat("save of VM ", config_.name, "'s RAM: "));
  struct stat ms {};
  ::fstat(*in, &ms);
  // Guest RAM: the owner's only (#16 defect 6).
  int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    ::close(*in);
    return internal_error(
        cat("save of VM ", config_.name, "'s RAM: open ", path, ": ", std::strerror(errno)));
  }
  Result<std::uint64_t> copied = copy_data(*in, out, ms.st_size, cat("saving RAM to ", path));
  Status s = copied ? Status::ok() : copied.status();
  if (s && ::ftruncate(out, ms.st_size) != 0) {
    s = internal_error(cat("truncate ", path, ": ", std::strerror(errno)));
  }
  if (s && ::fsync(out) != 0) s = internal_error(cat("fsync ", path, ": ", std::strerror(errno)));
  ::close(*in);
  ::close(out);
  if (!s) {
    ::unlink(path.c_str());
    return s.with_context(cat("save of VM ", config_.name, ": "));
  }
  return *copied;
}

Status Vm::quit(std::chrono::milliseconds timeout) {
  auto pending = qmp_->send("quit");
  const auto deadline = Clock::now() + timeout;
  while (!poll_exit(pid_).exited) {
    if (Clock::now() >= deadline) {
      kill_and_reap(pid_);
      return deadline_exceeded(
          cat("VM ", config_.name, ": QEMU did not quit within ", timeout.count(), " ms; killed"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::ok();
}

namespace {

// The timestamp of the trace line "PID@SEC.USEC:..." that holds `pos`.
std::optional<WallTime> line_time(const std::string& text, std::size_t pos) {
  const std::size_t line = text.rfind('\n', pos);
  const std::size_t start = line == std::string::npos ? 0 : line + 1;
  const std::size_t sep = text.find('@', start);
  if (sep == std::string::npos || sep > pos) return std::nullopt;
  long long sec = 0, usec = 0;
  if (std::sscanf(text.c_str() + sep + 1, "%lld.%lld", &sec, &usec) != 2) return std::nullopt;
  return WallTime(std::chrono::seconds(sec) + std::chrono::microseconds(usec));
}

// When the guest clock stopped (`stop`) or started for the QMP command
// with `id`, from QEMU's trace lines in its log: the first change of run
// state to "paused" ("running") after "monitor_qmp_cmd_in_band ID" (the
// main loop took the command), else the command's own line; nullopt if
// the log does not have it.
std::optional<WallTime> clock_step_at(const std::string& log, std::uint64_t id, bool stop) {
  const std::string tail = file_tail(log, 1 << 16);
  const std::string needle = cat(":monitor_qmp_cmd_in_band ", id, "\n");
  const std::size_t at = tail.rfind(needle);
  if (at == std::string::npos) return std::nullopt;
  const std::string state = stop ? " (paused)\n" : " (running)\n";
  for (std::size_t p = tail.find(":runstate_set ", at); p != std::string::npos;
       p = tail.find(":runstate_set ", p + 1)) {
    const std::size_t end = tail.find('\n', p);
    if (end == std::string::npos) break;
    if (tail.compare(end - state.size() + 1, state.size(), state) == 0) return line_time(tail, p);
  }
  return line_time(tail, at);
}

Result<std::vector<StepReport>> step_all_at(std::span<Vm* const> vms, WallTime instant,
                                            InstantWaiter& waiter, const char* command,
                                            const char* event) {
  const bool stop = std::string_view(command) == "stop";
  std::vector<std::uint64_t> from;
  std::vector<pid_t> pids;
  std::vector<std::size_t> order(vms.size());
  std::vector<StepReport> reports(vms.size());
  bool boost = false;
  for (std::size_t i = 0; i < vms.size(); ++i) {
    from.push_back(vms[i]->qmp().next_event_seq());
    pids.push_back(vms[i]->pid());
    boost = boost || vms[i]->config().realtime_boost;
    order[i] = i;
    // A resume follows its VM's stop by the same pause as the network's.
    const bool align = !stop && vms[i]->config().align_pause;
    reports[i].requested = align ? instant + vms[i]->stop_lateness() : instant;
    reports[i].lead = vms[i]->step_lead(stop).lead();
  }
  // In the order the commands must leave.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return reports[a].requested - reports[a].lead < reports[b].requested - reports[b].lead;
  });
  WallTime first = reports[0].requested - reports[0].lead;
  for (const StepReport& r : reports) first = std::min(first, r.requested - r.lead);
  std::vector<PendingReply> pending(vms.size());
  std::vector<Clock::time_point> sent(vms.size());
  // Plain sleep until just before the first command; real-time priority
  // only for the last stretch and until QEMU answered.
  AMBER_RETURN_IF_ERROR(waiter.wait_until(first - kBoostLead));
  std::optional<SchedBoost> boosted;
  if (boost) boosted.emplace(pids);
  for (std::size_t i : order) {
    AMBER_RETURN_IF_ERROR(waiter.wait_until(reports[i].requested - reports[i].lead));
    reports[i].issued = std::chrono::system_clock::now();
    sent[i] = Clock::now();
    auto p = vms[i]->qmp().send(command);
    if (!p) return p.status().with_context(cat("VM ", vms[i]->config().name, ": "));
    pending[i] = std::move(*p);
  }
  for (std::size_t i = 0; i < vms.size(); ++i) {
    const auto timeout = vms[i]->config().command_timeout;
    auto r = pending[i].wait(timeout);
    if (!r) return r.status().with_context(cat("VM ", vms[i]->config().name, ": "));
    reports[i].reply_latency = Clock::now() - sent[i];
  }
  boosted.reset();
  for (std::size_t i = 0; i < vms.size(); ++i) {
    const auto timeout = vms[i]->config().command_timeout;
    auto e = vms[i]->qmp().wait_event(event, from[i], timeout);
    if (!e) return e.status().with_context(cat("VM ", vms[i]->config().name, ": "));
    reports[i].event = e->qemu_time;
    if (auto taken = clock_step_at(vms[i]->config().qemu_log(), pending[i].id(), stop)) {
      reports[i].taken = *taken;
    }
    // The lead aims at the guest clock (the command taken), else the event.
    const WallTime acted =
        reports[i].taken.time_since_epoch().count() ? reports[i].taken : reports[i].event;
    vms[i]->step_lead(stop).record(acted - reports[i].issued);
    if (stop) vms[i]->set_stop_lateness(acted - reports[i].requested);
  }
  return reports;
}

}  // namespace

Result<std::vector<StepReport>> stop_all_at(std::span<Vm* const> vms, WallTime instant,
                                            InstantWaiter& waiter) {
  return step_all_at(vms, instant, waiter, "stop", "STOP");
}

Result<std::vector<StepReport>> resume_all_at(std::span<Vm* const> vms, WallTime instant,
                                              InstantWaiter& waiter) {
  return step_all_at(vms, instant, waiter, "cont", "RESUME");
}

}  // namespace amber::vm
