// Starting and stopping supervised processes by PID, and the errors when
// that cannot be done.
#include "clock-sync/ptp_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace amber::clock_sync {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/amb-cs-sup-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool alive(pid_t pid) {
  return kill(pid, 0) == 0;
}

TEST(SupervisedProcess, StartsAndStopsByPid) {
  auto p = SupervisedProcess::start({{"sleep", "30"}, "", ""});
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  const pid_t pid = p.value()->pid();
  EXPECT_TRUE(p.value()->running());
  EXPECT_TRUE(alive(pid));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(p.value()->stop().is_ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_FALSE(p.value()->running());
  EXPECT_FALSE(alive(pid)) << "not reaped";
}

TEST(SupervisedProcess, DestructorStopsTheChild) {
  pid_t pid;
  {
    auto p = SupervisedProcess::start({{"sleep", "30"}, "", ""});
    ASSERT_TRUE(p.is_ok());
    pid = p.value()->pid();
  }
  EXPECT_FALSE(alive(pid));
}

TEST(SupervisedProcess, WritesItsOutputToTheLog) {
  TempDir dir;
  const std::string log = dir.path() + "/out.log";
  auto p = SupervisedProcess::start({{"sh", "-c", "echo amber-was-here"}, "", log});
  ASSERT_TRUE(p.is_ok());
  for (int i = 0; i < 200 && p.value()->running(); ++i) usleep(10'000);
  EXPECT_FALSE(p.value()->running());
  std::ifstream in(log);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "amber-was-here");
}

TEST(SupervisedProcess, ClearErrorsForWhatCannotStart) {
  auto missing = SupervisedProcess::start({{"amb-cs-no-such-program"}, "", ""});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "program amb-cs-no-such-program not found in PATH, /usr/sbin or /sbin");

  auto no_ns = SupervisedProcess::start({{"sleep", "1"}, "amb-cs-no-such-ns", ""});
  ASSERT_FALSE(no_ns.is_ok());
  EXPECT_NE(no_ns.status().message().find("network namespace amb-cs-no-such-ns"),
            std::string::npos);

  EXPECT_EQ(SupervisedProcess::start({}).status().code(), ErrorCode::kInvalidArgument);
}

TEST(Ptp4l, CommandLines) {
  Ptp4lOptions o;
  o.interface = "veth0";
  o.uds_path = "/tmp/x.sock";
  o.slave_only = true;
  o.free_running = true;
  o.extra_args = {"--logSyncInterval=-2"};
  const std::vector<std::string> want = {"ptp4l",
                                         "-i",
                                         "veth0",
                                         "-m",
                                         "-q",
                                         "--uds_address=/tmp/x.sock",
                                         "-S",
                                         "-2",
                                         "-s",
                                         "--free_running=1",
                                         "--logSyncInterval=-2"};
  EXPECT_EQ(ptp4l_argv(o), want);
  Phc2sysOptions p;
  p.uds_path = "/tmp/x.sock";
  const std::vector<std::string> phc = {"phc2sys", "-m", "-q", "-z", "/tmp/x.sock", "-a", "-r"};
  EXPECT_EQ(phc2sys_argv(p), phc);
}

TEST(Ptp4l, StartFailureQuotesItsLog) {
  if (system("{ command -v ptp4l || test -x /usr/sbin/ptp4l; } >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "ptp4l (linuxptp) is not installed";
  }
  TempDir dir;
  Ptp4lOptions o;
  o.interface = "amb-cs-nonexistent0";
  o.uds_path = dir.path() + "/ptp4l.sock";
  o.log_path = dir.path() + "/ptp4l.log";
  auto p = start_ptp4l(o);
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.status().message().find("ptp4l on amb-cs-nonexistent0 exited during start-up"),
            std::string::npos)
      << p.status().message();
  EXPECT_EQ(start_ptp4l({}).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace amber::clock_sync
