// Child processes of the library (QEMU, qemu-img): started with fork/exec,
// tied to this process's life (PR_SET_PDEATHSIG), killed only by their PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace amber::vm {

// Starts argv[0] (searched in PATH) with stdout and stderr appended to
// `log_path`. Call from a long-lived thread: the child is killed when the
// thread that started it exits.
Result<pid_t> spawn_process(const std::vector<std::string>& argv, const std::string& log_path);

// Non-blocking: the exit status if the child has exited (and reaps it).
struct ExitState {
  bool exited = false;
  int status = 0;  // As from waitpid().
};
ExitState poll_exit(pid_t pid);
std::string describe_exit(int wait_status);

// SIGKILL and reap; harmless if already reaped.
void kill_and_reap(pid_t pid);

// Runs a tool to completion within `timeout`; its output on failure goes into
// the error message.
Result<std::string> run_tool(const std::vector<std::string>& argv,
                             std::chrono::milliseconds timeout);

// The last `max_bytes` of a text file (for error messages from logs).
std::string file_tail(const std::string& path, std::size_t max_bytes = 600);

}  // namespace amber::vm
