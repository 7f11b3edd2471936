// amber-vmhost as a process with two small TCG VMs, driven over gRPC on a
// UNIX socket: status, prepare, stop at an instant, save, resume, shutdown,
// then a second process restores the checkpoint and the guests carry on.
// Also the faults: an instant in the past, a save into a missing directory,
// a listen address beyond loopback.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clock-sync/ptp_supervisor.h"
#include "common/strings.h"
#include "proto/vmhost.grpc.pb.h"
#include "rpc/grpc_status.h"
#include "tests/vm-checkpoint/guest_fixture.h"

namespace amber::controller {
namespace {

using namespace std::chrono_literals;
using vm::testing::Console;
using vm::testing::TempDir;
namespace fs = std::filesystem;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One amber-vmhost process, killed by its PID when the test ends.
class AgentProcess {
 public:
  AgentProcess(const std::vector<std::string>& args, std::string log) : log_(std::move(log)) {
    std::vector<char*> argv;
    std::vector<std::string> all = {AMBER_VMHOST_BIN};
    all.insert(all.end(), args.begin(), args.end());
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~AgentProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const { return read_file(log_); }

  // The exit status once the process ended within `timeout`; -1 if not.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited_ && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      } else {
        std::this_thread::sleep_for(20ms);
      }
    }
    return exited_ ? exit_code_ : -1;
  }
  int terminate(std::chrono::milliseconds timeout) {
    if (!exited_) ::kill(pid_, SIGTERM);
    return wait_exit(timeout);
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
};

// The tiny client the controller will replace.
class Client {
 public:
  explicit Client(const std::string& address)
      : Client(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())) {}
  explicit Client(const std::shared_ptr<grpc::Channel>& channel)
      : stub_(vmhost::VmHostAgent::NewStub(channel)) {}

  template <typename Req, typename Reply, typename Call>
  grpc::Status call(Call method, const Req& req, Reply* reply,
                    std::chrono::milliseconds timeout = 60s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    return (stub_.get()->*method)(&ctx, req, reply);
  }

  grpc::Status status(vmhost::GetStatusReply* reply, std::chrono::milliseconds timeout = 10s) {
    return call(&vmhost::VmHostAgent::Stub::GetStatus, vmhost::GetStatusRequest(), reply, timeout);
  }
  grpc::Status stop_at(int64_t at, vmhost::StopAtReply* reply, int64_t lease_until = 0) {
    vmhost::StopAtRequest req;
    req.set_at_ns(at);
    req.set_lease_until_ns(lease_until);
    return call(&vmhost::VmHostAgent::Stub::StopAt, req, reply);
  }
  grpc::Status resume_at(int64_t at, vmhost::ResumeAtReply* reply) {
    vmhost::ResumeAtRequest req;
    req.set_at_ns(at);
    return call(&vmhost::VmHostAgent::Stub::ResumeAt, req, reply);
  }
  grpc::Status save(const std::string& dir, vmhost::SaveReply* reply) {
    vmhost::SaveRequest req;
    req.set_checkpoint_dir(dir);
    return call(&vmhost::VmHostAgent::Stub::Save, req, reply, 120s);
  }
  grpc::Status restore(const std::string& dir, vmhost::RestoreReply* reply) {
    vmhost::RestoreRequest req;
    req.set_checkpoint_dir(dir);
    return call(&vmhost::VmHostAgent::Stub::Restore, req, reply, 120s);
  }
  grpc::Status prepare(const std::string& dir, bool allow_unsync, vmhost::PrepareReply* reply) {
    vmhost::PrepareRequest req;
    req.set_checkpoint_dir(dir);
    req.set_allow_unsynchronized(allow_unsync);
    return call(&vmhost::VmHostAgent::Stub::Prepare, req, reply);
  }
  grpc::Status shutdown(vmhost::ShutdownReply* reply) {
    return call(&vmhost::VmHostAgent::Stub::Shutdown, vmhost::ShutdownRequest(), reply);
  }

  // Waits until the agent answers (it boots its VMs first).
  bool wait_ready(AgentProcess& process, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (process.wait_exit(0ms) >= 0) return false;
      vmhost::GetStatusReply reply;
      if (status(&reply, 500ms).ok()) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

 private:
  std::unique_ptr<vmhost::VmHostAgent::Stub> stub_;
};

std::vector<std::string> states(const vmhost::GetStatusReply& reply) {
  std::vector<std::string> out;
  for (const auto& v : reply.vms()) out.push_back(v.name() + "=" + v.state());
  return out;
}

class VmHostAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (QEMU, sockets under /tmp)";
    if (!vm::testing::have_binary("qemu-system-x86_64")) GTEST_SKIP() << "QEMU missing";
    std::string why;
    auto image = vm::testing::guest_image(&why);
    if (!image) GTEST_SKIP() << why;
    image_ = *image;
    ASSERT_FALSE(dir_.path().empty());
  }

  // A config file for this host: VMs "a" and "b", counter workload, disks.
  std::string write_config(const std::string& tag, const std::string& listen,
                           const std::vector<std::string>& vms = {"a", "b"},
                           const std::string& extra = "") {
    std::string text = cat("host_id: \"amb-vmh-", tag, "\"\nlisten: \"", listen, "\"\nrun_dir: \"",
                           dir_.sub(tag), "\"\nstore: \"", dir_.path(), "\"\n", extra);
    for (const std::string& name : vms) {
      text += cat("vms {\n  name: \"", name, "\"\n  memory_mib: 128\n  kernel: \"", image_.kernel,
                  "\"\n  initrd: \"", image_.initrd,
                  "\"\n  append: \"console=ttyS0 quiet amber.workload=counter amber.disk=1\"\n"
                  "  disk_base: \"",
                  image_.base_disk, "\"\n  accel: \"tcg\"\n}\n");
    }
    const std::string path = dir_.sub(tag + ".conf");
    std::ofstream(path) << text;
    return path;
  }

  vm::VmConfig guest(const std::string& tag, const std::string& name) {
    vm::VmConfig c;
    c.run_dir = cat(dir_.sub(tag), "/", name);
    return c;
  }

  vm::testing::GuestImage image_;
  TempDir dir_;
};

TEST_F(VmHostAgentTest, StopSaveResumeShutdownThenRestoreInNewProcess) {
  const std::string sock1 = "unix:" + dir_.sub("agent1.sock");
  AgentProcess agent1({"--config", write_config("h1", sock1)}, dir_.sub("agent1.log"));
  Client c1(sock1);
  ASSERT_TRUE(c1.wait_ready(agent1, 60s)) << agent1.log();

  vmhost::GetStatusReply st;
  ASSERT_TRUE(c1.status(&st).ok());
  ASSERT_EQ(st.vms_size(), 2);
  std::vector<pid_t> qemu_pids;
  for (const auto& v : st.vms()) {
    EXPECT_EQ(v.state(), "running") << v.name();
    EXPECT_GT(v.pid(), 0);
    qemu_pids.push_back(v.pid());
  }
  EXPECT_FALSE(st.clock().trustworthy());
  EXPECT_EQ(st.clock().mode(), "unsynchronized: local clock");

  const Console console_a(guest("h1", "a").serial_log());
  const Console console_b(guest("h1", "b").serial_log());
  ASSERT_TRUE(console_a.wait_counter_beyond(0, 60s)) << console_a.text();
  ASSERT_TRUE(console_b.wait_counter_beyond(0, 60s)) << console_b.text();
  // Something on a's disk that must come back with the restore.
  ASSERT_TRUE(vm::testing::run_in_guest(
      guest("h1", "a"), "echo amb-vmh-kept > /mnt/kept.txt; sync; echo W-$((40+2))", "W-42", 30s));

  const std::string ckpt = dir_.sub("ckpt");
  fs::create_directories(ckpt);
  vmhost::PrepareReply prep;
  ASSERT_TRUE(c1.prepare(ckpt, false, &prep).ok());
  EXPECT_FALSE(prep.ready());
  ASSERT_EQ(prep.reasons_size(), 1);
  EXPECT_NE(prep.reasons(0).find("unsynchronized: local clock"), std::string::npos)
      << prep.reasons(0);
  prep.Clear();
  ASSERT_TRUE(c1.prepare(ckpt, true, &prep).ok());
  EXPECT_TRUE(prep.ready()) << (prep.reasons_size() ? prep.reasons(0) : "");
  EXPECT_GE(prep.estimated_state_bytes(), uint64_t{256} << 20);
  EXPECT_GT(prep.free_bytes(), prep.estimated_state_bytes());
  prep.Clear();
  ASSERT_TRUE(c1.prepare(dir_.sub("nowhere"), true, &prep).ok());
  EXPECT_FALSE(prep.ready());

  // An instant already past is refused, and nothing stops.
  vmhost::StopAtReply stop;
  grpc::Status past = c1.stop_at(now_ns() - 1'000'000, &stop);
  EXPECT_EQ(past.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(past.error_message().find("past"), std::string::npos) << past.error_message();
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=running", "b=running"}));

  const int64_t at = now_ns() + 200'000'000;
  grpc::Status stopped = c1.stop_at(at, &stop);
  ASSERT_TRUE(stopped.ok()) << stopped.error_message();
  ASSERT_EQ(stop.vms_size(), 2);
  for (const auto& s : stop.vms()) {
    // QEMU's STOP event after the instant, and not absurdly late.
    EXPECT_GE(s.lateness_ns(), 0) << s.vm();
    EXPECT_LT(s.lateness_ns(), 100'000'000) << s.vm();
    EXPECT_EQ(s.event_ns() - at, s.lateness_ns());
    std::printf("StopAt %s: lateness %.1f us, reply %.1f us\n", s.vm().c_str(),
                s.lateness_ns() / 1e3, s.reply_latency_ns() / 1e3);
  }
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=paused", "b=paused"}));
  const long stopped_at_n = console_a.counter().back().n;
  grpc::Status twice = c1.stop_at(now_ns() + 100'000'000, &stop);
  EXPECT_EQ(twice.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(twice.error_message().find("VM a is paused (expected running)"), std::string::npos)
      << twice.error_message();

  // Saving into a missing directory or onto a file: clear errors, VMs still stopped.
  vmhost::SaveReply save;
  grpc::Status missing = c1.save(dir_.sub("missing"), &save);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(missing.error_message().find(dir_.sub("missing") + ": does not exist"),
            std::string::npos)
      << missing.error_message();
  std::ofstream(dir_.sub("a-file")) << "x";
  grpc::Status onto_file = c1.save(dir_.sub("a-file"), &save);
  EXPECT_EQ(onto_file.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(onto_file.error_message().find("not a directory"), std::string::npos);
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=paused", "b=paused"}));

  grpc::Status saved = c1.save(ckpt, &save);
  ASSERT_TRUE(saved.ok()) << saved.error_message();
  ASSERT_EQ(save.vms_size(), 2);
  for (const auto& v : save.vms()) {
    EXPECT_EQ(v.dir(), ckpt + "/" + v.vm());
    EXPECT_GT(v.state_bytes(), uint64_t{1} << 20);
    EXPECT_GT(v.total_ns(), 0);
    EXPECT_TRUE(fs::exists(v.dir() + "/state.bin"));
    EXPECT_TRUE(fs::exists(v.dir() + "/disk.qcow2"));
    // Guest RAM and disk: the owner's only (#16 defect 6).
    using fs::perms;
    EXPECT_EQ(fs::status(v.dir()).permissions(), perms::owner_all) << v.dir();
    EXPECT_EQ(fs::status(v.dir() + "/state.bin").permissions(),
              perms::owner_read | perms::owner_write);
    EXPECT_EQ(fs::status(v.dir() + "/disk.qcow2").permissions(), perms::owner_read);
    EXPECT_EQ(fs::status(v.dir() + "/meta.json").permissions(),
              perms::owner_read | perms::owner_write);
    std::printf("Save %s: %.1f MB in %.0f ms (state %.0f ms, disk %.0f ms)\n", v.vm().c_str(),
                v.state_bytes() / 1e6, v.total_ns() / 1e6, v.state_duration_ns() / 1e6,
                v.disk_copy_ns() / 1e6);
  }
  // Saving the same checkpoint twice is refused: a checkpoint is never overwritten.
  vmhost::SaveReply again;
  EXPECT_EQ(c1.save(ckpt, &again).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  vmhost::ResumeAtReply resume;
  grpc::Status resumed = c1.resume_at(now_ns() + 200'000'000, &resume);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();
  ASSERT_EQ(resume.vms_size(), 2);
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=running", "b=running"}));
  EXPECT_TRUE(console_a.wait_counter_beyond(stopped_at_n + 5, 30s));

  // A save whose caller gave up (a deadline shorter than the save) stops
  // before the next VM and removes what it wrote (#16 defect 9: it went on
  // and left the VMs' state in a checkpoint the controller had removed).
  // A VM saved meanwhile is "postmigrate" (QEMU saves it again only after
  // a resume, as the controller's rollback does).
  ASSERT_TRUE(c1.stop_at(now_ns() + 200'000'000, &stop).ok());
  const std::string abandoned = dir_.sub("abandoned");
  fs::create_directories(abandoned);
  vmhost::SaveRequest cut_short;
  cut_short.set_checkpoint_dir(abandoned);
  save.Clear();
  grpc::Status gave_up = c1.call(&vmhost::VmHostAgent::Stub::Save, cut_short, &save, 50ms);
  EXPECT_EQ(gave_up.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << gave_up.error_message();
  st.Clear();
  ASSERT_TRUE(c1.status(&st, 120s).ok());  // after the Save: it holds the agent's lock
  EXPECT_TRUE(fs::is_empty(abandoned)) << fs::directory_iterator(abandoned)->path();
  resume.Clear();
  resumed = c1.resume_at(now_ns() + 200'000'000, &resume);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=running", "b=running"}));

  vmhost::ShutdownReply down;
  grpc::Status shut = c1.shutdown(&down);
  ASSERT_TRUE(shut.ok()) << shut.error_message();
  EXPECT_EQ(down.stopped_size(), 2);
  st.Clear();
  ASSERT_TRUE(c1.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=absent", "b=absent"}));
  for (pid_t pid : qemu_pids) EXPECT_NE(::kill(pid, 0), 0) << "QEMU " << pid << " still runs";
  EXPECT_EQ(agent1.terminate(10s), 0) << agent1.log();

  // A fresh agent with other run directories restores the checkpoint.
  const std::string sock2 = "unix:" + dir_.sub("agent2.sock");
  AgentProcess agent2({"--config", write_config("h2", sock2), "--no-boot"}, dir_.sub("agent2.log"));
  Client c2(sock2);
  ASSERT_TRUE(c2.wait_ready(agent2, 30s)) << agent2.log();
  st.Clear();
  ASSERT_TRUE(c2.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=absent", "b=absent"}));
  grpc::Status no_vms = c2.stop_at(now_ns() + 200'000'000, &stop);
  EXPECT_EQ(no_vms.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(no_vms.error_message().find("VM a is absent"), std::string::npos);
  vmhost::RestoreReply restore;
  grpc::Status nothing = c2.restore(dir_.sub("missing"), &restore);
  EXPECT_EQ(nothing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(nothing.error_message().find("VM a: no checkpoint at"), std::string::npos);

  restore.Clear();
  grpc::Status restored = c2.restore(ckpt, &restore);
  ASSERT_TRUE(restored.ok()) << restored.error_message();
  ASSERT_EQ(restore.vms_size(), 2);
  st.Clear();
  ASSERT_TRUE(c2.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=paused", "b=paused"}));
  resume.Clear();
  resumed = c2.resume_at(now_ns() + 200'000'000, &resume);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();
  st.Clear();
  ASSERT_TRUE(c2.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=running", "b=running"}));

  // The guest carries on from where it was stopped, with its disk.
  const Console restored_a(guest("h2", "a").serial_log());
  ASSERT_TRUE(restored_a.wait_counter_beyond(stopped_at_n + 10, 30s)) << restored_a.text();
  const auto after = restored_a.counter();
  EXPECT_GT(after.front().n, stopped_at_n);
  EXPECT_LE(after.front().n, stopped_at_n + 2) << "counter did not continue where it stopped";
  ASSERT_TRUE(vm::testing::run_in_guest(guest("h2", "a"), "cat /mnt/kept.txt; echo R-$((40+3))",
                                        "R-43", 30s));
  EXPECT_NE(restored_a.text().find("\namb-vmh-kept"), std::string::npos);
  const Console restored_b(guest("h2", "b").serial_log());
  EXPECT_TRUE(restored_b.wait_counter_beyond(0, 30s)) << restored_b.text();

  st.Clear();
  ASSERT_TRUE(c2.status(&st).ok());
  EXPECT_EQ(agent2.terminate(15s), 0) << agent2.log();
  for (const auto& v : st.vms()) EXPECT_NE(::kill(v.pid(), 0), 0) << "QEMU of " << v.name();
  EXPECT_FALSE(vm::testing::process_mentioning(dir_.sub("h2")));
}

TEST_F(VmHostAgentTest, ListenBeyondLoopbackIsRefusedBeforeAnyVmBoots) {
  const std::string config = write_config("h3", "unix:" + dir_.sub("agent3.sock"));
  AgentProcess agent({"--config", config, "--listen", "0.0.0.0:7461"}, dir_.sub("agent3.log"));
  EXPECT_EQ(agent.wait_exit(10s), 1);
  const std::string log = agent.log();
  EXPECT_NE(log.find("listen address '0.0.0.0:7461'"), std::string::npos) << log;
  EXPECT_NE(log.find("loopback"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir_.sub("h3")));
}

// amber-vmhost with mutual TLS and roles, its VM not booted (no QEMU
// needed): which certificate may call what, and where a checkpoint_dir may
// lead (#16 defect 5). Certificates from scripts/make-certs.sh.
class VmHostAgentAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!vm::testing::have_binary("openssl")) GTEST_SKIP() << "openssl missing";
    ASSERT_FALSE(dir_.path().empty());
    certs_ = dir_.sub("certs");
    const std::string make = cat(AMBER_SOURCE_DIR, "/scripts/make-certs.sh ", certs_,
                                 " controller h1 alice mallory >/dev/null");
    ASSERT_EQ(std::system(make.c_str()), 0) << make;
    store_ = dir_.sub("store");
    fs::create_directories(store_ + "/e2e/c0001/vms");
    fs::create_directories(dir_.sub("outside"));
    fs::create_directory_symlink(dir_.sub("outside"), store_ + "/e2e/out");
    const std::string config = dir_.sub("h1.conf");
    std::ofstream(config) << cat(
        "host_id: \"h1\"\nlisten: \"127.0.0.1:0\"\nrun_dir: \"", dir_.sub("run"), "\"\n",
        "store: \"", store_, "\"\n", "tls { ca: \"", certs_, "/ca.pem\" cert: \"", certs_,
        "/h1.pem\" key: \"", certs_, "/h1.key\" }\n",
        "controller_identity: \"controller\"\noperator_identity: \"alice\"\n",
        "vms { name: \"a\" memory_mib: 64 kernel: \"/nonexistent/vmlinuz\" }\n");
    agent_ = std::make_unique<AgentProcess>(
        std::vector<std::string>{"--config", config, "--no-boot"}, dir_.sub("h1.log"));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (address_.empty() && std::chrono::steady_clock::now() < deadline) {
      ASSERT_LT(agent_->wait_exit(0ms), 0) << agent_->log();
      const std::string log = agent_->log();
      const size_t at = log.find("listening on ");
      if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
        address_ = log.substr(at + 13, log.find('\n', at) - at - 13);
      } else {
        std::this_thread::sleep_for(50ms);
      }
    }
    ASSERT_FALSE(address_.empty()) << agent_->log();
  }

  // A client presenting the certificate made for `name`.
  Client as(const std::string& name) {
    auto channel = connect(address_, {cat(certs_, "/ca.pem"), cat(certs_, "/", name, ".pem"),
                                      cat(certs_, "/", name, ".key")});
    EXPECT_TRUE(channel.is_ok()) << channel.status().to_string();
    return Client(*channel);
  }

  static void expect_denied(const grpc::Status& s, const std::string& says) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_NE(s.error_message().find(says), std::string::npos) << s.error_message();
  }

  TempDir dir_;
  std::string certs_, store_, address_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(VmHostAgentAccessTest, OperatorsReadOnlyAndOtherCertificatesNothing) {
  EXPECT_NE(agent_->log().find("operator role: 'alice'"), std::string::npos) << agent_->log();
  Client alice = as("alice");
  vmhost::GetStatusReply status;
  grpc::Status read = alice.status(&status);
  ASSERT_TRUE(read.ok()) << read.error_message();
  EXPECT_EQ(status.host_id(), "h1");
  const std::string ckpt = store_ + "/e2e/c0001/vms";
  vmhost::StopAtReply stop;
  expect_denied(alice.stop_at(now_ns() + 1'000'000'000, &stop),
                "certificate 'alice' has the operator role");
  vmhost::SaveReply save;
  expect_denied(alice.save(ckpt, &save), "Save");
  vmhost::RestoreReply restore;
  expect_denied(alice.restore(ckpt, &restore), "Restore");
  vmhost::PrepareReply prepare;
  expect_denied(alice.prepare(ckpt, true, &prepare), "Prepare");
  vmhost::ShutdownReply shutdown;
  expect_denied(alice.shutdown(&shutdown), "Shutdown");

  // Signed by the same CA, but named nowhere: not even a status.
  Client mallory = as("mallory");
  expect_denied(mallory.status(&status), "'mallory' has no role");
  expect_denied(mallory.shutdown(&shutdown), "'mallory' has no role");
  // Another agent's certificate is no controller either.
  expect_denied(as("h1").save(ckpt, &save), "'h1' has no role");

  vmhost::GetStatusReply by_controller;
  EXPECT_TRUE(as("controller").status(&by_controller).ok());
}

TEST_F(VmHostAgentAccessTest, CheckpointFoldersStayInsideTheStore) {
  Client controller = as("controller");
  const std::string outside = dir_.sub("outside");
  vmhost::SaveReply save;
  vmhost::RestoreReply restore;
  vmhost::PrepareReply prepare;
  expect_denied(controller.save(outside, &save), "'" + outside + "' is outside the store");
  expect_denied(controller.restore(outside, &restore), "is outside the store " + store_);
  expect_denied(controller.prepare(outside, true, &prepare), outside);
  expect_denied(controller.restore(store_ + "/../outside", &restore), "'..'");
  expect_denied(controller.save(store_ + "/e2e/out", &save), "with symlinks resolved");
  expect_denied(controller.restore("/etc", &restore), "outside the store");
  EXPECT_TRUE(fs::is_empty(outside));
  // Inside the store the calls go on to their own checks.
  const std::string ckpt = store_ + "/e2e/c0001/vms";
  grpc::Status s = controller.restore(ckpt, &restore);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = controller.save(ckpt, &save);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  s = controller.prepare(ckpt, true, &prepare);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// Two namespaces joined by a veth pair, for a real ptp4l master and a
// free-running slave (it measures, never steers this machine's clock).
constexpr const char* kMasterNs = "amb-vmh-t-m";
constexpr const char* kSlaveNs = "amb-vmh-t-s";
constexpr const char* kMasterIf = "amb-vmh-m0";
constexpr const char* kSlaveIf = "amb-vmh-s0";

int sh(const std::string& command) {
  const int rc = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string output_of(const std::string& command) {
  std::string out;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    ::pclose(p);
  }
  return out;
}

// Removes our namespaces, first killing (by PID) what a crashed run left in them.
void remove_namespaces() {
  for (const char* ns : {kMasterNs, kSlaveNs}) {
    std::stringstream pids(output_of(cat("ip netns pids ", ns, " 2>/dev/null")));
    long pid;
    while (pids >> pid) ::kill(static_cast<pid_t>(pid), SIGKILL);
    sh(cat("ip netns del ", ns));
  }
}

class PtpPair {
 public:
  explicit PtpPair(const std::string& dir) {
    remove_namespaces();
    if (sh(cat("ip netns add ", kMasterNs)) != 0 || sh(cat("ip netns add ", kSlaveNs)) != 0 ||
        sh(cat("ip link add ", kMasterIf, " netns ", kMasterNs, " type veth peer name ", kSlaveIf,
               " netns ", kSlaveNs)) != 0 ||
        sh(cat("ip -n ", kMasterNs, " link set ", kMasterIf, " up")) != 0 ||
        sh(cat("ip -n ", kSlaveNs, " link set ", kSlaveIf, " up")) != 0) {
      error_ = "could not build namespaces amb-vmh-t-m/-s";
      return;
    }
    const std::vector<std::string> fast = {"--logSyncInterval=-2", "--logMinDelayReqInterval=-2",
                                           "--logAnnounceInterval=-2",
                                           "--announceReceiptTimeout=3"};
    clock_sync::Ptp4lOptions master;
    master.interface = kMasterIf;
    master.netns = kMasterNs;
    master.uds_path = dir + "/ptp-master.sock";
    master.extra_args = fast;
    master.log_path = dir + "/ptp-master.log";
    auto m = clock_sync::start_ptp4l(master);
    if (!m) {
      error_ = m.status().to_string();
      return;
    }
    master_ = std::move(m).value();
    clock_sync::Ptp4lOptions slave;
    slave.interface = kSlaveIf;
    slave.netns = kSlaveNs;
    slave.uds_path = dir + "/ptp-slave.sock";
    slave.slave_only = true;
    slave.free_running = true;
    slave.extra_args = fast;
    slave.log_path = dir + "/ptp-slave.log";
    auto s = clock_sync::start_ptp4l(slave);
    if (!s) {
      error_ = s.status().to_string();
      return;
    }
    slave_ = std::move(s).value();
    slave_socket_ = slave.uds_path;
  }
  ~PtpPair() {
    slave_.reset();
    master_.reset();
    remove_namespaces();
  }
  PtpPair(const PtpPair&) = delete;
  PtpPair& operator=(const PtpPair&) = delete;
  const std::string& error() const { return error_; }
  const std::string& slave_socket() const { return slave_socket_; }
  void kill_master() { (void)master_->kill(); }

 private:
  std::string error_;
  std::string slave_socket_;
  std::unique_ptr<clock_sync::SupervisedProcess> master_, slave_;
};

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

TEST_F(VmHostAgentTest, WithPtpStopsAtMasterTimeAndRefusesWhenClockIsLost) {
  if (sh("{ command -v ptp4l || test -x /usr/sbin/ptp4l; }") != 0) {
    GTEST_SKIP() << "ptp4l (linuxptp) is not installed";
  }
  PtpPair ptp(dir_.path());
  ASSERT_EQ(ptp.error(), "");
  const std::string sock = "unix:" + dir_.sub("agent4.sock");
  // A loaded 2-core machine delays software timestamps by tens of us at times.
  const std::string clock = cat("ptp_socket: \"", ptp.slave_socket(),
                                "\"\nsync_mode: \"free_running\"\nmax_offset_step_ns: 300000\n"
                                "max_sample_age_ns: 1000000000\n");
  AgentProcess agent({"--config", write_config("h4", sock, {"a"}, clock)}, dir_.sub("agent4.log"));
  Client client(sock);
  ASSERT_TRUE(client.wait_ready(agent, 60s)) << agent.log();

  vmhost::GetStatusReply st;
  ASSERT_TRUE(wait_for(
      [&] {
        st.Clear();
        return client.status(&st).ok() && st.clock().trustworthy();
      },
      30s))
      << "clock never trustworthy: " << st.clock().DebugString();
  EXPECT_EQ(st.clock().mode(), "free-running");
  EXPECT_EQ(st.clock().reasons_size(), 0);

  const std::string ckpt = dir_.sub("ckpt4");
  fs::create_directories(ckpt);
  vmhost::PrepareReply prep;
  ASSERT_TRUE(client.prepare(ckpt, false, &prep).ok());
  EXPECT_TRUE(prep.ready()) << (prep.reasons_size() ? prep.reasons(0) : "");

  // Both ends share one kernel clock: master time is local time within
  // timestamping noise, so "now" here is master time too.
  vmhost::StopAtReply stop;
  const int64_t at = now_ns() + 300'000'000;
  grpc::Status stopped = client.stop_at(at, &stop);
  ASSERT_TRUE(stopped.ok()) << stopped.error_message();
  ASSERT_EQ(stop.vms_size(), 1);
  EXPECT_GE(stop.vms(0).lateness_ns(), -1'000'000);
  EXPECT_LT(stop.vms(0).lateness_ns(), 100'000'000);
  std::printf("StopAt via clock-sync: lateness %.1f us\n", stop.vms(0).lateness_ns() / 1e3);
  vmhost::ResumeAtReply resume;
  ASSERT_TRUE(client.resume_at(now_ns() + 200'000'000, &resume).ok());

  // The master dies: the verdict turns (freshness), Prepare says why, and
  // an instant is refused rather than taken on an untrusted clock.
  ptp.kill_master();
  ASSERT_TRUE(wait_for(
      [&] {
        st.Clear();
        return client.status(&st).ok() && !st.clock().trustworthy();
      },
      15s));
  EXPECT_GT(st.clock().reasons_size(), 0);
  prep.Clear();
  ASSERT_TRUE(client.prepare(ckpt, true, &prep).ok());
  EXPECT_FALSE(prep.ready());
  ASSERT_GE(prep.reasons_size(), 1);
  EXPECT_NE(prep.reasons(0).find("clock: master time not trustworthy"), std::string::npos)
      << prep.reasons(0);
  grpc::Status refused = client.stop_at(now_ns() + 300'000'000, &stop);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("not trustworthy"), std::string::npos)
      << refused.error_message();
  st.Clear();
  ASSERT_TRUE(client.status(&st).ok());
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=running"}));
  EXPECT_EQ(agent.terminate(10s), 0) << agent.log();
}

// #16 defect 2: the lease is for the partition that takes the controller
// and PTP away together. Its resume once needed master time, failed, and
// the lease was deleted anyway: the VMs stayed paused for good.
TEST_F(VmHostAgentTest, WithPtpLostWhileStoppedTheLeaseResumesOnTheLocalClock) {
  if (sh("{ command -v ptp4l || test -x /usr/sbin/ptp4l; }") != 0) {
    GTEST_SKIP() << "ptp4l (linuxptp) is not installed";
  }
  PtpPair ptp(dir_.path());
  ASSERT_EQ(ptp.error(), "");
  const std::string sock = "unix:" + dir_.sub("agent5.sock");
  const std::string clock = cat("ptp_socket: \"", ptp.slave_socket(),
                                "\"\nsync_mode: \"free_running\"\nmax_offset_step_ns: 300000\n"
                                "max_sample_age_ns: 1000000000\n");
  AgentProcess agent({"--config", write_config("h5", sock, {"a"}, clock)}, dir_.sub("agent5.log"));
  Client client(sock);
  ASSERT_TRUE(client.wait_ready(agent, 60s)) << agent.log();
  vmhost::GetStatusReply st;
  ASSERT_TRUE(wait_for(
      [&] {
        st.Clear();
        return client.status(&st).ok() && st.clock().trustworthy();
      },
      30s))
      << "clock never trustworthy: " << st.clock().DebugString();

  vmhost::StopAtReply stop;
  const int64_t at = now_ns() + 300'000'000;
  const int64_t lease = at + 8'000'000'000;
  grpc::Status stopped = client.stop_at(at, &stop, lease);
  ASSERT_TRUE(stopped.ok()) << stopped.error_message();
  const std::string lease_file = dir_.sub("h5") + "/a/lease";
  EXPECT_TRUE(fs::exists(lease_file));

  // PTP goes while the VM is stopped and the controller is gone.
  ptp.kill_master();
  ASSERT_TRUE(wait_for(
      [&] {
        st.Clear();
        return client.status(&st).ok() && !st.clock().trustworthy();
      },
      15s));
  ASSERT_LT(now_ns(), lease) << "the clock stayed trustworthy until the lease ended";
  EXPECT_EQ(states(st), (std::vector<std::string>{"a=paused"}));

  // The lease ends: the VM runs again, on the local clock, and only then
  // is the lease gone.
  ASSERT_TRUE(wait_for(
      [&] {
        st.Clear();
        return client.status(&st).ok() && states(st) == std::vector<std::string>{"a=running"};
      },
      std::chrono::milliseconds((lease - now_ns()) / 1'000'000) + 10s))
      << "the VM stayed paused after its lease: " << states(st)[0] << "\n"
      << agent.log();
  EXPECT_GE(now_ns(), lease);
  EXPECT_FALSE(fs::exists(lease_file));
  EXPECT_NE(agent.log().find("resumed on the local clock"), std::string::npos) << agent.log();
  EXPECT_EQ(agent.terminate(10s), 0) << agent.log();
}

TEST(VmHostAgentCli, HelpAndMissingConfig) {
  {
    AgentProcess help({"--help"}, "/tmp/amb-vmh-help.log");
    EXPECT_EQ(help.wait_exit(5s), 0);
    const std::string text = help.log();
    EXPECT_NE(text.find("--no-boot"), std::string::npos);
    EXPECT_NE(text.find("ptp_socket"), std::string::npos);
  }
  {
    AgentProcess bad({"--config", "/nonexistent/amb-vmh.conf"}, "/tmp/amb-vmh-help.log");
    EXPECT_EQ(bad.wait_exit(5s), 1);
    EXPECT_NE(bad.log().find("/nonexistent/amb-vmh.conf"), std::string::npos);
  }
  std::remove("/tmp/amb-vmh-help.log");
}

}  // namespace
}  // namespace amber::controller
