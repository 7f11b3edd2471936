// amber-delaynode: the DPDK delay node daemon.
#include <dirent.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <sched.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

#include "common/units.h"
#include "config/loader.h"
#include "dataplane/delay_node.h"
#include "dataplane/telemetry.h"
#include "delaynode/delaynode_agent.h"

namespace {

constexpr const char* kUsage = R"(usage: amber-delaynode [EAL options] -- --config FILE [options]

amber's delay node: forwards frames between pairs of DPDK ports through
emulated links (bandwidth, delay, jitter, queue, loss), one pipe per
direction, holding every in-flight frame in its own queues.

EAL options select cores and ports, e.g.
  -l 0-1 --vdev net_af_packet0,iface=veth0 --vdev net_af_packet1,iface=veth1
  -l 0 --vdev net_vhost0,iface=/run/amber/vm1.sock --vdev net_tap0
(physical NICs bound to vfio-pci appear by PCI address). Links name ports
by their DPDK name (net_af_packet0, 0000:3b:00.0, ...). With several lcores
the link directions are spread over the worker lcores.

Options after --:
  --config FILE          the links (Protobuf text format; see config/examples/)
  --stats-interval SECS  print counters every SECS seconds (default: only on
                         SIGUSR1 and at exit)
  --agent ADDRESS        serve the gRPC agent (freeze, thaw, save, restore,
                         frames, stats, link changes, frame watches; see
                         amberctl) on unix:/PATH or 127.0.0.1:PORT; any
                         other address (HOST:PORT) needs the three --tls-*
  --tls-ca FILE          PEM: the CA whose certificates clients must present
  --tls-cert FILE        PEM: this agent's certificate (chain)
  --tls-key FILE         PEM: its private key (mutual TLS; scripts/make-certs.sh
                         makes a test CA and certificates)
  --controller-identity NAME
                         with TLS: a client whose certificate's subject CN
                         is NAME may call everything (repeatable; default
                         "controller")
  --operator-identity NAME
                         with TLS: a client with CN NAME may read (stats,
                         frames) and, where allowed below, change links and
                         export pcap (repeatable); any other CN is refused.
                         Without TLS every caller is local and may do all
  --operators-may-change-links
                         let operators change link parameters (amberctl set)
  --store DIR            the checkpoint store as this node sees it: images
                         are saved and restored only inside it (no "..", no
                         symlink out); without, save and restore are refused
  --export-dir DIR       pcap exports go only inside DIR, and operators may
                         ask for them (default: inside the store, for the
                         controller role only)
  --ptp-socket PATH      ptp4l's management socket (--uds_address): the agent
                         reads instants as master time, refuses them while
                         the clock is not trustworthy, reports clock health
  --ptp-mode MODE        free-running (amber applies ptp4l's offset),
                         disciplined (default) or grandmaster
  --worker-priority N    run the workers (the lcores that move frames) at
                         SCHED_FIFO priority N (default 0: as the EAL made
                         them). On a host shared with the guests, vCPUs
                         catching up after a resume otherwise take the
                         workers' cores and frames leave late; an idle
                         worker sleeps, so the guests keep what it leaves;
                         but a worker that polls hard then holds its core
                         and the control plane waits
  --worker-nice N        or keep them at SCHED_OTHER with nice N (-20..19;
                         default 0): a larger share of a core shared with
                         the guests, never all of it
  --idle-wait MODE       how an idle worker waits for frames: "timer"
                         (default) looks at its ports every idle_sleep
                         (10us); "ports" waits on its af_packet sockets,
                         woken by a frame or a command and otherwise
                         sleeping to the next departure: next to no CPU
                         when idle, so on a host shared with guests they
                         keep the core; a frame that finds it asleep is
                         stamped once the kernel has woken it (tens of
                         microseconds in a VM). Workers with a port of
                         another driver (vhost, ring, tap) always use timer
  --vhost-priority N     run DPDK's vhost-user message thread at SCHED_FIFO
                         priority N (default 10; 0 leaves it as it is). QEMU
                         stops and restarts a VM's rings on every stop and
                         resume; a prompt answer keeps the restart, during
                         which the guest's clock already runs, short
  --agent-priority N     serve the agent's operations at SCHED_FIFO
                         priority N (default 0: as started). A run-on
                         (topology run_on) ends when the controller passes
                         on a VM's stop: on a host whose guests keep the
                         CPUs busy, an agent thread at SCHED_OTHER can wait
                         milliseconds for one
  --check                load and validate the configuration, size the
                         mempool, then exit
  -h, --help             this text

At run time:
  SIGUSR1                print counters
  SIGINT, SIGTERM        stop cleanly: ports stopped, frames freed, final counters
  dpdk-telemetry.py      /amber/stats, /amber/links,
                         /amber/set,LINK,a_to_b,rate=200Mbit,delay=30ms
                         (add -f PREFIX when the EAL runs with --file-prefix PREFIX)
)";

std::atomic<amber::dataplane::DelayNode*> g_node{nullptr};
std::atomic<bool> g_print{false};
std::atomic<bool> g_stopping{false};

void on_signal(int sig) {
  if (sig == SIGUSR1) {
    g_print.store(true);
    return;
  }
  g_stopping.store(true);
  if (auto* node = g_node.load()) node->stop();
}

void print_stats(amber::dataplane::DelayNode& node, const char* when) {
  auto stats = node.stats();
  if (!stats) {
    std::fprintf(stderr, "amber-delaynode: stats: %s\n", stats.status().to_string().c_str());
    return;
  }
  for (const std::string& line : amber::dataplane::format_stats(*stats)) {
    std::printf("[%s] %s\n", when, line.c_str());
  }
  std::fflush(stdout);
}

// Sets every thread of this process named `name` to SCHED_FIFO `priority`.
// Returns how many, or -errno of the first refusal.
int raise_threads(const char* name, int priority) {
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return -errno;
  int raised = 0;
  while (dirent* e = readdir(tasks)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string thread_name;
    if (!std::getline(comm, thread_name) || thread_name != name) continue;
    sched_param param{};
    param.sched_priority = priority;
    if (sched_setscheduler(std::atoi(e->d_name), SCHED_FIFO, &param) != 0) {
      raised = -errno;
      break;
    }
    ++raised;
  }
  closedir(tasks);
  return raised;
}

// `text` as a whole decimal integer within [lo, hi] into *out.
bool int_in(const char* text, long lo, long hi, int* out) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value < lo || value > hi) return false;
  *out = static_cast<int>(value);
  return true;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "amber-delaynode: %s\n", message.c_str());
  rte_eal_cleanup();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  int consumed = rte_eal_init(argc, argv);
  if (consumed < 0) {
    std::fprintf(stderr, "amber-delaynode: EAL initialization failed: %s\n%s",
                 rte_strerror(rte_errno), "(try --help)\n");
    return 1;
  }
  argc -= consumed;
  argv += consumed;
  std::string config_path;
  int stats_interval = 0;
  bool check_only = false;
  int vhost_priority = 10;
  int worker_priority = 0;
  int worker_nice = 0;
  bool wait_on_ports = false;
  amber::controller::AgentOptions agent_options;
  std::string agent_address;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--stats-interval" && i + 1 < argc) {
      stats_interval = std::atoi(argv[++i]);
      if (stats_interval <= 0) return fail("--stats-interval: give a positive number of seconds");
    } else if (a == "--agent" && i + 1 < argc) {
      agent_address = argv[++i];
    } else if (a == "--ptp-socket" && i + 1 < argc) {
      agent_options.ptp_socket = argv[++i];
    } else if (a == "--ptp-mode" && i + 1 < argc) {
      agent_options.ptp_mode = argv[++i];
    } else if (a == "--tls-ca" && i + 1 < argc) {
      agent_options.tls.ca = argv[++i];
    } else if (a == "--tls-cert" && i + 1 < argc) {
      agent_options.tls.cert = argv[++i];
    } else if (a == "--tls-key" && i + 1 < argc) {
      agent_options.tls.key = argv[++i];
    } else if (a == "--controller-identity" && i + 1 < argc) {
      agent_options.access.controllers.push_back(argv[++i]);
    } else if (a == "--operator-identity" && i + 1 < argc) {
      agent_options.access.operators.push_back(argv[++i]);
    } else if (a == "--operators-may-change-links") {
      agent_options.access.operators_may_change_links = true;
    } else if (a == "--store" && i + 1 < argc) {
      agent_options.store = argv[++i];
    } else if (a == "--export-dir" && i + 1 < argc) {
      agent_options.export_dir = argv[++i];
    } else if (a == "--worker-priority" && i + 1 < argc) {
      if (!int_in(argv[++i], 0, 99, &worker_priority)) {
        return fail("--worker-priority: give 0 (leave them) or a SCHED_FIFO priority 1..99");
      }
    } else if (a == "--worker-nice" && i + 1 < argc) {
      if (!int_in(argv[++i], -20, 19, &worker_nice)) {
        return fail("--worker-nice: give a nice value -20..19 (0 leaves them)");
      }
    } else if (a == "--idle-wait" && i + 1 < argc) {
      const std::string_view mode = argv[++i];
      if (mode != "ports" && mode != "timer") {
        return fail(
            "--idle-wait: give \"ports\" (wait on af_packet sockets) or \"timer\" "
            "(look every idle_sleep)");
      }
      wait_on_ports = mode == "ports";
    } else if (a == "--agent-priority" && i + 1 < argc) {
      if (!int_in(argv[++i], 0, 99, &agent_options.realtime_priority)) {
        return fail("--agent-priority: give 0 (leave them) or a SCHED_FIFO priority 1..99");
      }
    } else if (a == "--vhost-priority" && i + 1 < argc) {
      if (!int_in(argv[++i], 0, 99, &vhost_priority)) {
        return fail("--vhost-priority: give 0 (leave it) or a SCHED_FIFO priority 1..99");
      }
    } else if (a == "--check") {
      check_only = true;
    } else {
      return fail(std::string("unknown or incomplete option '") + std::string(a) +
                  "' (try --help)");
    }
  }
  if (config_path.empty()) return fail("--config FILE is required (try --help)");

  auto config = amber::config::load_node_config(config_path);
  if (!config) return fail(config.status().message());
  config->worker_priority = worker_priority;
  config->worker_nice = worker_nice;
  config->wait_on_ports = wait_on_ports;
  auto created = amber::dataplane::DelayNode::create(*config);
  if (!created) return fail(created.status().message());
  auto& node = *created;

  std::printf(
      "amber-delaynode %s: %zu link(s) on %zu worker(s), idle sleep %s\n", config->node_id.c_str(),
      config->links.size(), node->worker_count(),
      config->idle_sleep_ns ? amber::format_duration_ns(config->idle_sleep_ns).c_str() : "off");
  for (const auto& link : config->links) {
    std::printf("  %s: %s <-> %s\n    a_to_b: %s\n    b_to_a: %s\n", link.name.c_str(),
                link.port_a.c_str(), link.port_b.c_str(),
                amber::link::describe(link.a_to_b).c_str(),
                amber::link::describe(link.b_to_a).c_str());
  }
  std::printf("  frame pool: %s\n", node->sizing().describe().c_str());
  if (wait_on_ports) {
    const size_t waiting = node->workers_waiting_on_ports();
    std::printf("  idle: %zu of %zu worker(s) wait on their af_packet sockets%s\n", waiting,
                node->worker_count(),
                waiting < node->worker_count()
                    ? "; the others have a port without one and look every idle_sleep"
                    : "");
  }
  if (vhost_priority > 0) {
    // DPDK names it so; it exists once a net_vhost port was probed.
    const int raised = raise_threads("vhost-events", vhost_priority);
    if (raised > 0) {
      std::printf("  vhost-user messages: SCHED_FIFO %d\n", vhost_priority);
    } else if (raised < 0) {
      std::fprintf(stderr,
                   "amber-delaynode: warning: cannot run the vhost-user thread at SCHED_FIFO %d "
                   "(%s); VM stops and resumes may take longer (--vhost-priority 0 silences "
                   "this)\n",
                   vhost_priority, std::strerror(-raised));
    }
  }
  std::fflush(stdout);
  if (check_only) {
    node.reset();
    rte_eal_cleanup();
    return 0;
  }

  std::unique_ptr<amber::controller::DelayNodeAgent> agent;
  if (!agent_address.empty()) {
    agent_options.listen = agent_address;
    auto started = amber::controller::DelayNodeAgent::start(*node, agent_options);
    if (!started) return fail(started.status().message());
    agent = std::move(started).value();
    std::printf("agent listening on %s\n", agent->address().c_str());
  }
  g_node.store(node.get());
  amber::dataplane::register_telemetry(node.get());
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGUSR1, on_signal);

  std::thread control([&] {
    auto last = std::chrono::steady_clock::now();
    while (!g_stopping.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      bool due = stats_interval > 0 &&
                 std::chrono::steady_clock::now() - last >= std::chrono::seconds(stats_interval);
      if ((g_print.exchange(false) || due) && node->running()) {
        print_stats(*node, "stats");
        last = std::chrono::steady_clock::now();
      }
    }
  });
  std::printf("running (SIGUSR1: counters, SIGINT/SIGTERM: stop)\n");
  std::fflush(stdout);
  node->run();
  g_stopping.store(true);
  control.join();
  agent.reset();
  print_stats(*node, "final");
  g_node.store(nullptr);
  node.reset();  // ports stopped, frames freed, pool released
  rte_eal_cleanup();
  std::printf("stopped\n");
  return 0;
}
