#include "clock-sync/ptp_supervisor.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace amber::clock_sync {
namespace {

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void sleep_ns(int64_t ns) {
  const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  nanosleep(&ts, nullptr);
}

bool is_executable(const std::string& path) {
  return access(path.c_str(), X_OK) == 0;
}

Result<std::string> resolve_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (is_executable(program)) return program;
    return not_found(cat("program ", program, " does not exist or is not executable"));
  }
  std::string dirs;
  if (const char* path = std::getenv("PATH")) dirs = path;
  dirs.append(":/usr/sbin:/sbin:/usr/bin:/bin");
  std::stringstream ss(dirs);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = cat(dir, '/', program);
    if (is_executable(candidate)) return candidate;
  }
  return not_found(cat("program ", program, " not found in PATH, /usr/sbin or /sbin"));
}

std::string tail_of(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (all.size() > 400) all = all.substr(all.size() - 400);
  return all;
}

}  // namespace

Result<std::unique_ptr<SupervisedProcess>> SupervisedProcess::start(const ProcessOptions& options) {
  if (options.argv.empty()) return invalid_argument("start process: empty argv");
  auto program = resolve_program(options.argv[0]);
  if (!program) return program.status();

  // Everything the child needs is prepared here: after fork only
  // async-signal-safe calls are allowed.
  std::vector<char*> argv;
  for (const auto& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  int netns_fd = -1;
  if (!options.netns.empty()) {
    const std::string ns_path = cat("/var/run/netns/", options.netns);
    netns_fd = open(ns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) {
      return not_found(
          cat("network namespace ", options.netns, " (", ns_path, "): ", std::strerror(errno)));
    }
  }
  const std::string log = options.log_path.empty() ? "/dev/null" : options.log_path;
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    const int err = errno;
    if (netns_fd >= 0) close(netns_fd);
    return unavailable(cat("open log ", log, ": ", std::strerror(err)));
  }
  // The child reports a failed setns/exec through this pipe; a successful
  // exec closes it.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    const int err = errno;
    close(log_fd);
    if (netns_fd >= 0) close(netns_fd);
    return internal_error(cat("pipe2: ", std::strerror(err)));
  }
  const pid_t pid = fork();
  if (pid == 0) {
    int err = 0;
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) err = errno;
    if (err == 0) {
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      const int null_fd = open("/dev/null", O_RDONLY);
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
      execv(program->c_str(), argv.data());
      err = errno;
    }
    (void)!write(report[1], &err, sizeof err);
    _exit(127);
  }
  const int fork_errno = errno;
  close(report[1]);
  close(log_fd);
  if (netns_fd >= 0) close(netns_fd);
  if (pid < 0) {
    close(report[0]);
    return internal_error(cat("fork: ", std::strerror(fork_errno)));
  }
  int child_err = 0;
  ssize_t got;
  do {
    got = read(report[0], &child_err, sizeof child_err);
  } while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got == static_cast<ssize_t>(sizeof child_err)) {
    waitpid(pid, nullptr, 0);
    return unavailable(cat("start ", *program,
                           options.netns.empty() ? "" : cat(" in netns ", options.netns), ": ",
                           std::strerror(child_err)));
  }
  return std::unique_ptr<SupervisedProcess>(new SupervisedProcess(pid, *program));
}

SupervisedProcess::~SupervisedProcess() {
  (void)stop();
}

bool SupervisedProcess::running() {
  if (reaped_) return false;
  if (waitpid(pid_, nullptr, WNOHANG) == pid_) reaped_ = true;
  return !reaped_;
}

Status SupervisedProcess::wait_exit(int64_t timeout_ns) {
  const int64_t deadline = monotonic_ns() + timeout_ns;
  while (running()) {
    if (monotonic_ns() >= deadline) {
      return deadline_exceeded(cat(name_, " (pid ", static_cast<long>(pid_),
                                   ") did not exit within ", timeout_ns / 1'000'000, " ms"));
    }
    sleep_ns(5'000'000);
  }
  return Status::ok();
}

Status SupervisedProcess::stop(int64_t timeout_ns) {
  if (!running()) return Status::ok();
  ::kill(pid_, SIGTERM);
  if (wait_exit(timeout_ns).is_ok()) return Status::ok();
  return kill();
}

Status SupervisedProcess::kill() {
  if (!running()) return Status::ok();
  ::kill(pid_, SIGKILL);
  return wait_exit(2'000'000'000);
}

std::vector<std::string> ptp4l_argv(const Ptp4lOptions& o) {
  std::vector<std::string> argv{o.binary, "-i", o.interface,
                                "-m",     "-q", cat("--uds_address=", o.uds_path)};
  if (!o.config_file.empty()) {
    argv.push_back("-f");
    argv.push_back(o.config_file);
  }
  if (o.software_timestamping) argv.push_back("-S");
  if (o.layer2) argv.push_back("-2");
  if (o.slave_only) argv.push_back("-s");
  if (o.free_running) argv.push_back("--free_running=1");
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  return argv;
}

Result<std::unique_ptr<SupervisedProcess>> start_ptp4l(const Ptp4lOptions& options) {
  if (options.interface.empty()) return invalid_argument("ptp4l: no interface given");
  if (options.uds_path.empty()) {
    return invalid_argument("ptp4l: no --uds_address given (the default is shared machine-wide)");
  }
  unlink(options.uds_path.c_str());  // so that its appearance means this instance is up
  auto process = SupervisedProcess::start({ptp4l_argv(options), options.netns, options.log_path});
  if (!process) return process.status();
  const int64_t deadline = monotonic_ns() + options.ready_timeout_ns;
  for (;;) {
    struct stat st;
    if (stat(options.uds_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return process;
    if (!(*process)->running()) {
      return unavailable(cat("ptp4l on ", options.interface,
                             " exited during start-up; log: ", tail_of(options.log_path)));
    }
    if (monotonic_ns() >= deadline) {
      return deadline_exceeded(cat("ptp4l on ", options.interface, ": management socket ",
                                   options.uds_path, " did not appear within ",
                                   options.ready_timeout_ns / 1'000'000, " ms"));
    }
    sleep_ns(10'000'000);
  }
}

std::vector<std::string> phc2sys_argv(const Phc2sysOptions& o) {
  std::vector<std::string> argv{o.binary, "-m", "-q"};
  if (!o.uds_path.empty()) {
    argv.push_back("-z");
    argv.push_back(o.uds_path);
  }
  argv.insert(argv.end(), o.args.begin(), o.args.end());
  return argv;
}

Result<std::unique_ptr<SupervisedProcess>> start_phc2sys(const Phc2sysOptions& options) {
  return SupervisedProcess::start({phc2sys_argv(options), options.netns, options.log_path});
}

}  // namespace amber::clock_sync
