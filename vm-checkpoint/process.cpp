#include "vm-checkpoint/process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/strings.h"

namespace amber::vm {

Result<pid_t> spawn_process(const std::vector<std::string>& argv, const std::string& log_path,
                            bool tied) {
  if (argv.empty()) return invalid_argument("spawn_process: empty command line");
  // Everything the child needs is prepared before fork: only async-signal-safe
  // calls happen between fork and exec.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return internal_error(cat("open ", log_path, ": ", std::strerror(errno)));
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(log);
    return internal_error(cat("fork for ", argv[0], ": ", std::strerror(e)));
  }
  if (pid == 0) {
    if (tied) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
    } else {
      ::setsid();  // no signal to the owner's process group reaches it
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execvp(args[0], args.data());
    static const char kMsg[] = "exec failed\n";
    [[maybe_unused]] ssize_t n = ::write(2, kMsg, sizeof kMsg - 1);
    ::_exit(127);
  }
  ::close(log);
  return pid;
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream stat(cat("/proc/", pid, "/stat"));
  std::string text;
  if (!stat || !std::getline(stat, text)) return false;
  // "PID (comm) S ...": the state follows the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return false;
  const char state = text[close + 2];
  return state != 'Z' && state != 'X';
}

ExitState poll_exit(pid_t pid) {
  int status = 0;
  pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return {true, status};
  if (r < 0 && errno == ECHILD) return {!process_alive(pid), 0};
  return {};
}

std::string describe_exit(int wait_status) {
  if (WIFEXITED(wait_status)) return cat("exited with status ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return cat("killed by signal ", WTERMSIG(wait_status));
  return "ended";
}

void kill_and_reap(pid_t pid) {
  if (pid <= 0) return;
  if (poll_exit(pid).exited) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno == EINTR) continue;
    // Not our child: its parent reaps it; wait until it is gone.
    for (int i = 0; i < 500 && process_alive(pid); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return;
  }
}

std::string file_tail(const std::string& path, std::size_t max_bytes) {
  // Only the tail is read: a VM's qemu.log grows with every QMP command
  // for as long as the VM lives, and the VM host reads it right after each
  // stop and resume, at real-time priority with agent_realtime.
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  const std::streamoff size = in.tellg();
  if (size <= 0) return {};
  const std::streamoff from = size > static_cast<std::streamoff>(max_bytes)
                                  ? size - static_cast<std::streamoff>(max_bytes)
                                  : 0;
  std::string s(static_cast<std::size_t>(size - from), '\0');
  in.seekg(from);
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<std::size_t>(in.gcount()));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

Result<std::string> run_tool(const std::vector<std::string>& argv,
                             std::chrono::milliseconds timeout) {
  char log_template[] = "/tmp/amb-vm-tool-XXXXXX";
  int fd = ::mkstemp(log_template);
  if (fd < 0) return internal_error(cat("mkstemp: ", std::strerror(errno)));
  ::close(fd);
  const std::string log_path = log_template;
  auto pid = spawn_process(argv, log_path);
  if (!pid) {
    ::unlink(log_path.c_str());
    return pid.status();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ExitState st;
  while (!(st = poll_exit(*pid)).exited) {
    if (std::chrono::steady_clock::now() >= deadline) {
      kill_and_reap(*pid);
      ::unlink(log_path.c_str());
      return deadline_exceeded(cat(argv[0], " did not finish within ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string output = file_tail(log_path, 1 << 16);
  ::unlink(log_path.c_str());
  if (!WIFEXITED(st.status) || WEXITSTATUS(st.status) != 0) {
    return internal_error(cat(argv[0], " ", describe_exit(st.status), ": ", output));
  }
  return output;
}

}  // namespace amber::vm
