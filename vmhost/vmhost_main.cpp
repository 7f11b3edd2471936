// amber-vmhost: the VM-host agent daemon.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "vmhost/vmhost_agent.h"
#include "vmhost/vmhost_config.h"

namespace {

constexpr const char* kUsage = R"(usage: amber-vmhost --config FILE [options]

amber's VM-host agent: boots this host's endpoint VMs (QEMU) and serves the
VmHostAgent gRPC service (proto/vmhost.proto) through which the controller
stops them at a PTP-synchronized instant, saves them into a checkpoint
directory (<dir>/<vm>/: state.bin, disk.qcow2, meta.json), resumes them,
shuts them down and restores them from a checkpoint.

Options:
  --config FILE    the host: VMs, listen address, ptp4l socket (Protobuf text
                   format, message amber.vmhost.VmHost), e.g.
                     host_id: "host1"
                     listen: "unix:/run/amber/vmhost.sock"
                     run_dir: "/run/amber/vms"
                     store: "/srv/amber/store"        # checkpoints only here
                     ptp_socket: "/var/run/ptp4l"     # optional
                     vms {
                       name: "vm1" memory_mib: 256
                       kernel: "guest/vmlinuz" initrd: "guest/initramfs.cpio.gz"
                       append: "console=ttyS0 quiet"
                       disk_base: "guest/base.qcow2"
                       nics { kind: VHOST_USER endpoint: "/run/amber/vm1.sock" }
                     }
  --listen ADDRESS override the config's listen address: unix:/PATH or
                   127.0.0.1:PORT ([::1]:PORT); nothing else without TLS
  --no-boot        start no VM: wait for a Restore
  --check          load and validate the configuration, then exit
  -h, --help       this text

Without ptp_socket the agent acts on its own CLOCK_REALTIME and reports
"unsynchronized: local clock"; Prepare accepts that only when asked to.
Every checkpoint folder a call names must lie inside `store` (no "..", no
symlink out). With `tls`, a client certificate's subject CN gives its role:
controller_identity (default "controller") may call everything,
operator_identity only GetStatus and WatchConsole, any other nothing.
SIGINT, SIGTERM: stop serving, quit every VM, exit.
)";

int fail(const std::string& message) {
  std::fprintf(stderr, "amber-vmhost: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::string listen;
  bool boot = true;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (a == "--no-boot") {
      boot = false;
    } else if (a == "--check") {
      check_only = true;
    } else {
      return fail(std::string("unknown or incomplete option '") + std::string(a) +
                  "' (try --help)");
    }
  }
  if (config_path.empty()) return fail("--config FILE is required (try --help)");
  auto config = amber::controller::load_vmhost_config(config_path);
  if (!config) return fail(config.status().message());
  if (!listen.empty()) config->set_listen(listen);
  if (check_only) {
    std::printf("%s: %d VM(s), listen %s\n", config_path.c_str(), config->vms_size(),
                config->listen().c_str());
    return 0;
  }

  // Signals are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  amber::controller::VmHostAgentOptions options;
  options.config = *config;
  options.boot = boot;
  auto agent = amber::controller::VmHostAgent::start(options);
  if (!agent) return fail(agent.status().message());
  std::printf("amber-vmhost %s: %d VM(s) %s; listening on %s\n", config->host_id().c_str(),
              config->vms_size(), boot ? "booted" : "waiting for Restore",
              (*agent)->address().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  std::printf("signal %d: stopping VMs\n", sig);
  std::fflush(stdout);
  agent->reset();
  std::printf("stopped\n");
  return 0;
}
