// Optional supervision of linuxptp daemons: an agent either starts ptp4l and
// phc2sys itself with a given configuration, or attaches to running ones by
// their management socket (then nothing here is used).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace amber::clock_sync {

struct ProcessOptions {
  // argv[0] is the program: a path, or a name looked up in PATH, /usr/sbin
  // and /sbin (linuxptp installs there).
  std::vector<std::string> argv;
  // Network namespace (a name under /var/run/netns) to run in; empty: ours.
  std::string netns;
  // stdout and stderr go here (appended); empty: /dev/null.
  std::string log_path;
};

// A child process owned by PID: stopped by the destructor.
class SupervisedProcess {
 public:
  static Result<std::unique_ptr<SupervisedProcess>> start(const ProcessOptions& options);
  ~SupervisedProcess();
  SupervisedProcess(const SupervisedProcess&) = delete;
  SupervisedProcess& operator=(const SupervisedProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  // Reaps the child if it exited; false once it has.
  bool running();
  // SIGTERM, then SIGKILL after timeout_ns; reaps the child.
  Status stop(int64_t timeout_ns = 2'000'000'000);
  // SIGKILL and reap: a crash, as tests need one.
  Status kill();

 private:
  SupervisedProcess(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  Status wait_exit(int64_t timeout_ns);

  pid_t pid_;
  std::string name_;
  bool reaped_ = false;
};

struct Ptp4lOptions {
  std::string binary = "ptp4l";
  std::string interface;
  // --uds_address: every instance needs its own (the default is shared by
  // all namespaces on a machine).
  std::string uds_path;
  std::string config_file;            // -f, optional
  bool software_timestamping = true;  // -S
  bool layer2 = true;                 // -2, no IP addresses needed
  bool slave_only = false;            // -s
  // --free_running=1: measure the offset without steering the clock.
  bool free_running = false;
  std::vector<std::string> extra_args;  // e.g. "--logSyncInterval=-2"
  std::string netns;
  std::string log_path;
  // start_ptp4l waits this long for the management socket to appear.
  int64_t ready_timeout_ns = 5'000'000'000;
};

std::vector<std::string> ptp4l_argv(const Ptp4lOptions& options);

// Starts ptp4l and waits until its management socket exists.
Result<std::unique_ptr<SupervisedProcess>> start_ptp4l(const Ptp4lOptions& options);

struct Phc2sysOptions {
  std::string binary = "phc2sys";
  // What to synchronize, as phc2sys takes it: e.g. {"-a", "-r"} (follow
  // ptp4l's port states, also discipline CLOCK_REALTIME) or
  // {"-s", "eth0", "-c", "CLOCK_REALTIME", "-O", "0"}.
  std::vector<std::string> args = {"-a", "-r"};
  // ptp4l's --uds_address, which phc2sys queries (-z).
  std::string uds_path;
  std::string netns;
  std::string log_path;
};

std::vector<std::string> phc2sys_argv(const Phc2sysOptions& options);

// Starts phc2sys. It steers a clock machine-wide: never in a test.
Result<std::unique_ptr<SupervisedProcess>> start_phc2sys(const Phc2sysOptions& options);

}  // namespace amber::clock_sync
