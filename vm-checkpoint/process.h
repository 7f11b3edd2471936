// Child processes of the library (QEMU, qemu-img): started with fork/exec,
// tied to this process's life (PR_SET_PDEATHSIG) unless asked to outlive
// it, killed only by their PID. A process adopted from an earlier owner is
// not our child: the functions below handle it by PID as well.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace amber::vm {

// Starts argv[0] (searched in PATH) with stdout and stderr appended to
// `log_path`. Tied (the default): call from a long-lived thread, the child
// is killed when the thread that started it exits. Not tied: the child
// runs in its own session and outlives this process (a daemon's VMs survive
// its crash and are adopted again).
Result<pid_t> spawn_process(const std::vector<std::string>& argv, const std::string& log_path,
                            bool tied = true);

// Non-blocking: the exit status if the child has exited (and reaps it).
// For a process that is not our child: exited once it is gone or a zombie.
struct ExitState {
  bool exited = false;
  int status = 0;  // As from waitpid().
};
ExitState poll_exit(pid_t pid);
std::string describe_exit(int wait_status);

// Whether `pid` names a live process (not a zombie).
bool process_alive(pid_t pid);

// SIGKILL and reap (or, not our child, wait until it is gone); harmless if
// already reaped.
void kill_and_reap(pid_t pid);

// Runs a tool to completion within `timeout`; its output on failure goes into
// the error message.
Result<std::string> run_tool(const std::vector<std::string>& argv,
                             std::chrono::milliseconds timeout);

// The last `max_bytes` of a text file (for error messages from logs).
std::string file_tail(const std::string& path, std::size_t max_bytes = 600);

}  // namespace amber::vm
