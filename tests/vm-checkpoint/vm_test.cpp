// Real QEMU guests (TCG here): stop/resume at an instant without a gap in
// the guest's time, save -> kill -> restore -> resume, branches with their
// own disks, and the faults around them.
#include "vm-checkpoint/vm.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>

#include "common/strings.h"
#include "guest_fixture.h"
#include "vm-checkpoint/checkpoint.h"
#include "vm-checkpoint/process.h"

namespace amber::vm {
namespace {

using namespace std::chrono_literals;
using testing::Console;
using testing::TempDir;

constexpr auto kBoot = 60s;  // TCG on a loaded 2-core host.

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_binary("qemu-system-x86_64") || !testing::have_binary("qemu-img")) {
      GTEST_SKIP() << "qemu-system-x86_64 or qemu-img is not installed";
    }
    std::string why;
    auto image = testing::guest_image(&why);
    if (!image) GTEST_SKIP() << why;
    image_ = *image;
    ASSERT_FALSE(dir_.path().empty());
  }

  // A small guest printing its clocks every 10 ms, with a disk overlay.
  VmConfig config(const std::string& name, bool disk = true) {
    VmConfig c;
    c.name = cat("amb-vm-", name);
    c.run_dir = dir_.sub(name);
    c.memory_mib = 128;
    c.kernel = image_.kernel;
    c.initrd = image_.initrd;
    c.append = "console=ttyS0 quiet amber.workload=counter";
    if (disk) {
      c.append += " amber.disk=1";
      c.disk = dir_.sub(cat(name, "-disk.qcow2"));
    }
    return c;
  }

  std::unique_ptr<Vm> boot_counter(const VmConfig& c) {
    std::filesystem::create_directories(c.run_dir);
    if (!c.disk.empty()) {
      EXPECT_TRUE(create_overlay(image_.base_disk, c.disk).is_ok());
    }
    auto vm = Vm::boot(c);
    EXPECT_TRUE(vm.is_ok()) << vm.status().to_string();
    if (!vm) return nullptr;
    EXPECT_TRUE(Console(c.serial_log()).wait_counter_beyond(20, kBoot))
        << "guest counter did not start: " << Console(c.serial_log()).text();
    return std::move(*vm);
  }

  static WallTime soon(std::chrono::milliseconds d) { return std::chrono::system_clock::now() + d; }

  // Resumes a restored VM and checks that its guest's counter carries on
  // where `before` (the original's console before the stop) ended.
  void resume_and_expect_counter_carries_on(Vm& vm, const VmConfig& r,
                                            const std::vector<testing::CounterLine>& before) {
    ASSERT_TRUE(vm.resume_at(soon(50ms), waiter_).is_ok());
    Console console(r.serial_log());
    ASSERT_TRUE(console.wait_counter_beyond(before.back().n + 30, 30s)) << console.text();
    const auto after = console.counter();
    ASSERT_FALSE(after.empty());
    EXPECT_GT(after.front().n, before.back().n);
    EXPECT_LE(after.front().n, before.back().n + 2) << "counter did not continue where it stopped";
    EXPECT_LT(after.front().uptime - before.back().uptime, 1.0);
  }

  TempDir dir_;
  testing::GuestImage image_;
  SleepUntilWaiter waiter_;
};

std::string state_of(Vm& vm) {
  auto s = vm.status();
  return s.is_ok() ? s.value() : s.status().to_string();
}

// The largest step of the guest's uptime between consecutive counter lines.
double max_uptime_step(const std::vector<testing::CounterLine>& lines) {
  double worst = 0;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    worst = std::max(worst, lines[i].uptime - lines[i - 1].uptime);
  }
  return worst;
}

TEST_F(VmTest, StopAndResumeAtInstantGuestTimeHasNoGap) {
  VmConfig c = config("stopcont", false);
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  // Accel::kAuto: KVM where it works, else TCG with the reason given.
  if (vm->accel() == Accel::kTcg) {
    EXPECT_NE(vm->fallback_reason().find("KVM not used"), std::string::npos);
  }
  Console console(c.serial_log());

  auto stop = vm->stop_at(soon(200ms), waiter_);
  ASSERT_TRUE(stop.is_ok()) << stop.status().to_string();
  EXPECT_GE(stop->lateness().count(), 0);
  // Generous: a loaded 2-core host delays QEMU's main loop; the benchmark
  // measures the real figure.
  EXPECT_LT(stop->lateness(), 250ms);
  EXPECT_EQ(state_of(*vm), "paused");
  // QEMU's log says when its main loop took the command: the guest clock
  // stopped then, before the STOP event. The VM keeps that lateness.
  ASSERT_NE(stop->taken.time_since_epoch().count(), 0) << "no trace line in " << c.qemu_log();
  EXPECT_GE(stop->taken, stop->issued);
  EXPECT_LE(stop->taken, stop->event);
  EXPECT_EQ(vm->stop_lateness(), stop->taken - stop->requested);
  const auto before = console.counter();
  ASSERT_FALSE(before.empty());

  // Host time passes; the guest must neither print nor perceive it.
  constexpr auto kStopped = 4s;
  std::this_thread::sleep_for(kStopped);
  EXPECT_EQ(console.counter().size(), before.size()) << "guest ran while stopped";

  // With the pause aligned (the default), the resume comes as long after
  // its instant as the stop came after its own: here a stop 300 ms late.
  vm->set_stop_lateness(300ms);
  const WallTime instant = soon(100ms);
  auto resume = vm->resume_at(instant, waiter_);
  ASSERT_TRUE(resume.is_ok()) << resume.status().to_string();
  EXPECT_EQ(resume->requested, instant + 300ms);
  EXPECT_GE(resume->event, instant + 300ms);
  EXPECT_GE(resume->event - stop->event, kStopped);
  ASSERT_TRUE(console.wait_counter_beyond(before.back().n + 50, 30s));
  const auto after = console.counter();
  const auto& last_before = before.back();
  const auto& first_after = after[before.size()];
  EXPECT_EQ(first_after.n, last_before.n + 1);
  // Bound: 1 s of guest time between two 10 ms ticks on a loaded TCG host,
  // against 4 s of host time stopped.
  EXPECT_LT(first_after.uptime - last_before.uptime, 1.0);
  EXPECT_LT(max_uptime_step(after), 1.0);
  EXPECT_LE(first_after.epoch - last_before.epoch, 1) << "guest wall clock jumped";
}

TEST_F(VmTest, SaveKillRestoreResumeGuestCarriesOn) {
  VmConfig c = config("orig");
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  ASSERT_TRUE(
      testing::run_in_guest(c, "echo kept > /mnt/kept.txt; sync; echo W-$((40+2))", "W-42", 30s));
  auto stop = vm->stop_at(soon(100ms), waiter_);
  ASSERT_TRUE(stop.is_ok()) << stop.status().to_string();
  const auto before = Console(c.serial_log()).counter();
  vm->set_stop_lateness(7ms);  // the checkpoint keeps it for the restored VM's resume

  std::vector<SaveProgress> progress;
  const std::string ckpt = dir_.sub("ckpt");
  auto saved = save_checkpoint(*vm, ckpt, [&](const SaveProgress& p) { progress.push_back(p); });
  ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
  EXPECT_GT(saved->save.file_bytes, 1u << 20);
  EXPECT_TRUE(std::filesystem::exists(ckpt + "/disk.qcow2"));
  EXPECT_FALSE(std::filesystem::exists(ckpt + ".tmp"));
  ASSERT_FALSE(progress.empty());
  EXPECT_GE(progress.back().total, 128u << 20);

  // QEMU gone for good: the restore runs in a new process.
  const pid_t old_pid = vm->pid();
  vm.reset();
  EXPECT_NE(::kill(old_pid, 0), 0);

  VmConfig r = config("restored");
  RestoreReport report;
  auto restored = restore_checkpoint(ckpt, r, &report);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  EXPECT_EQ(state_of(**restored), "paused");
  EXPECT_GT(report.state_bytes, 0u);
  EXPECT_EQ((*restored)->stop_lateness(), 7ms);
  resume_and_expect_counter_carries_on(**restored, r, before);
  if (HasFatalFailure()) return;
  Console console(r.serial_log());
  EXPECT_TRUE(
      testing::run_in_guest(r, "cat /mnt/kept.txt /mnt/base.txt; echo R-$((40+3))", "R-43", 30s));
  const std::string text = console.text();
  EXPECT_NE(text.find("\nkept"), std::string::npos) << text;
  EXPECT_NE(text.find("amber base image"), std::string::npos);

  // A truncated copy of the state is refused with a clear error, leaving
  // nothing running.
  const std::string cut = dir_.sub("cut.bin");
  std::filesystem::copy_file(ckpt + "/state.bin", cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 2);
  VmConfig bad = config("cut", false);
  auto refused = Vm::restore(bad, cut);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find(cut), std::string::npos)
      << refused.status().to_string();
  EXPECT_FALSE(testing::process_mentioning(bad.run_dir));
}

// save_ram_file: the RAM leaves QEMU's stream for a sparse file of its own,
// and the restored guest carries on from it.
TEST_F(VmTest, RamFileBesideTheStateRestoresTheGuest) {
  VmConfig c = config("ramfile");
  c.save_ram_file = true;
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  ASSERT_TRUE(
      testing::run_in_guest(c, "echo kept > /mnt/kept.txt; sync; echo W-$((40+2))", "W-42", 30s));
  ASSERT_TRUE(vm->stop_at(soon(100ms), waiter_).is_ok());
  const auto before = Console(c.serial_log()).counter();
  const std::string ckpt = dir_.sub("ramfile-ckpt");
  auto saved = save_checkpoint(*vm, ckpt);
  ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
  // The stream holds devices and firmware, not the 128 MiB of RAM.
  EXPECT_LT(saved->save.file_bytes, 16u << 20);
  EXPECT_EQ(std::filesystem::file_size(ckpt + "/ram.bin"), 128u << 20);
  EXPECT_GT(saved->save.ram_file_bytes, 1u << 20);
  EXPECT_LE(saved->save.ram_file_bytes, 128u << 20);
  vm.reset();

  // A RAM file of another size is refused, naming it; nothing runs on.
  const std::string other = dir_.sub("other-ckpt");
  std::filesystem::copy(ckpt, other, std::filesystem::copy_options::recursive);
  std::filesystem::permissions(other + "/ram.bin", std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::filesystem::resize_file(other + "/ram.bin", 64u << 20);
  VmConfig bad = config("ramfile-bad");
  auto refused = restore_checkpoint(other, bad);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("ram.bin holds 64 MiB, the VM has 128 MiB"),
            std::string::npos)
      << refused.status().to_string();
  EXPECT_FALSE(testing::process_mentioning(bad.run_dir));

  VmConfig r = config("ramfile-restored");
  auto restored = restore_checkpoint(ckpt, r);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  resume_and_expect_counter_carries_on(**restored, r, before);
  if (HasFatalFailure()) return;
  Console console(r.serial_log());
  EXPECT_TRUE(testing::run_in_guest(r, "cat /mnt/kept.txt; echo R-$((40+3))", "R-43", 30s));
  EXPECT_NE(console.text().find("\nkept"), std::string::npos) << console.text();

  // QEMU keeps a migration capability: the restored VM, configured to save
  // its RAM in the stream, must not leave it out.
  ASSERT_TRUE((*restored)->stop_at(soon(50ms), waiter_).is_ok());
  auto again = save_checkpoint(**restored, dir_.sub("ramfile-again"));
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_GT(again->save.file_bytes, 32u << 20);
  EXPECT_FALSE(std::filesystem::exists(dir_.sub("ramfile-again") + "/ram.bin"));
}

TEST_F(VmTest, TwoBranchesOfOneCheckpointHaveIndependentDisks) {
  VmConfig c = config("trunk");
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  ASSERT_TRUE(vm->stop_at(soon(50ms), waiter_).is_ok());
  const std::string ckpt = dir_.sub("ckpt");
  ASSERT_TRUE(save_checkpoint(*vm, ckpt).is_ok());
  vm.reset();

  VmConfig a = config("branch-a");
  VmConfig b = config("branch-b");
  auto va = restore_checkpoint(ckpt, a);
  auto vb = restore_checkpoint(ckpt, b);
  ASSERT_TRUE(va.is_ok()) << va.status().to_string();
  ASSERT_TRUE(vb.is_ok()) << vb.status().to_string();
  ASSERT_TRUE((*va)->resume_at(soon(50ms), waiter_).is_ok());
  ASSERT_TRUE((*vb)->resume_at(soon(50ms), waiter_).is_ok());
  ASSERT_TRUE(testing::run_in_guest(a, "echo only-a > /mnt/branch.txt; sync; echo A-$((50+1))",
                                    "A-51", 30s));
  ASSERT_TRUE(testing::run_in_guest(b, "echo only-b > /mnt/branch.txt; sync; echo B-$((50+2))",
                                    "B-52", 30s));
  ASSERT_TRUE(testing::run_in_guest(a, "cat /mnt/branch.txt; echo A-$((50+3))", "A-53", 30s));
  ASSERT_TRUE(testing::run_in_guest(b, "cat /mnt/branch.txt; echo B-$((50+4))", "B-54", 30s));
  const std::string ta = Console(a.serial_log()).text();
  const std::string tb = Console(b.serial_log()).text();
  EXPECT_NE(ta.find("\nonly-a"), std::string::npos);
  EXPECT_EQ(ta.find("\nonly-b"), std::string::npos);
  EXPECT_NE(tb.find("\nonly-b"), std::string::npos);
  EXPECT_EQ(tb.find("\nonly-a"), std::string::npos);
  // A checkpoint of a branch stands alone: restored after the checkpoint it
  // branched from is gone, it still has its own writes and the base's files.
  ASSERT_TRUE((*va)->stop_at(soon(20ms), waiter_).is_ok());
  const std::string ckpt_a = dir_.sub("ckpt-a");
  auto saved_a = save_checkpoint(**va, ckpt_a);
  ASSERT_TRUE(saved_a.is_ok()) << saved_a.status().to_string();
  va->reset();
  vb->reset();
  auto chain = run_tool({"qemu-img", "info", "--backing-chain", ckpt_a + "/disk.qcow2"}, 20000ms);
  ASSERT_TRUE(chain.is_ok()) << chain.status().to_string();
  EXPECT_EQ(chain->find(ckpt + "/"), std::string::npos) << *chain;
  const std::string moved = dir_.sub("ckpt-moved");
  std::filesystem::rename(ckpt, moved);
  VmConfig a2 = config("branch-a2");
  auto va2 = restore_checkpoint(ckpt_a, a2);
  ASSERT_TRUE(va2.is_ok()) << va2.status().to_string();
  ASSERT_TRUE((*va2)->resume_at(soon(20ms), waiter_).is_ok());
  ASSERT_TRUE(testing::run_in_guest(a2, "cat /mnt/branch.txt /mnt/base.txt; echo C-$((50+5))",
                                    "C-55", 30s));
  const std::string t2 = Console(a2.serial_log()).text();
  EXPECT_NE(t2.find("\nonly-a"), std::string::npos) << t2;
  EXPECT_NE(t2.find("\namber base image"), std::string::npos) << t2;
  va2->reset();
  std::filesystem::rename(moved, ckpt);
  // The checkpoint's disk and the shared base are untouched by either branch.
  for (const std::string& image : {ckpt + "/disk.qcow2", image_.base_disk}) {
    auto check = run_tool({"qemu-img", "check", "-q", image}, 20000ms);
    EXPECT_TRUE(check.is_ok()) << image << ": " << check.status().to_string();
  }
  struct stat st {};
  ASSERT_EQ(::stat((ckpt + "/disk.qcow2").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u) << "checkpoint disk must be read-only";
}

TEST_F(VmTest, QemuDyingDuringSaveLeavesNoCheckpoint) {
  VmConfig c = config("dies", false);
  c.max_bandwidth = 4 << 20;  // Slow enough to be killed half-way.
  std::filesystem::create_directories(c.run_dir);
  auto vm = Vm::boot(c);
  ASSERT_TRUE(vm.is_ok()) << vm.status().to_string();
  ASSERT_TRUE(Console(c.serial_log()).wait_for("amber: guest ready", kBoot));
  ASSERT_TRUE((*vm)->stop_at(soon(10ms), waiter_).is_ok());
  const pid_t pid = (*vm)->pid();
  bool killed = false;
  const std::string ckpt = dir_.sub("ckpt");
  auto saved = save_checkpoint(**vm, ckpt, [&](const SaveProgress& p) {
    if (!killed && p.transferred > 0) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ASSERT_FALSE(saved.is_ok());
  EXPECT_EQ(saved.status().code(), ErrorCode::kUnavailable) << saved.status().to_string();
  EXPECT_NE(saved.status().message().find("killed by signal 9"), std::string::npos)
      << saved.status().to_string();
  EXPECT_FALSE(std::filesystem::exists(ckpt));
  EXPECT_FALSE(std::filesystem::exists(ckpt + ".tmp"));
}

TEST_F(VmTest, RestoreFromMissingOrCorruptStateFailsClearly) {
  VmConfig c = config("corrupt", false);
  auto missing = Vm::restore(c, dir_.sub("absent.bin"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent.bin"), std::string::npos);

  const std::string garbage = dir_.sub("garbage.bin");
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 100000; ++i) out.put(static_cast<char>(i * 7919 % 251));
  }
  const auto t0 = Clock::now();
  auto corrupt = Vm::restore(c, garbage);
  ASSERT_FALSE(corrupt.is_ok());
  EXPECT_LT(Clock::now() - t0, 10s);
  const std::string msg = corrupt.status().to_string();
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;
  EXPECT_NE(msg.find("QEMU exited"), std::string::npos) << msg;
  EXPECT_FALSE(testing::process_mentioning(c.run_dir));

  auto no_ckpt = restore_checkpoint(dir_.sub("no-such-ckpt"), c);
  EXPECT_EQ(no_ckpt.status().code(), ErrorCode::kNotFound);
}

TEST_F(VmTest, QemuThatCannotStartIsReportedAtOnce) {
  VmConfig c = config("nostart", false);
  c.accel = Accel::kTcg;
  c.nics = {{Nic::Kind::kVhostUser, dir_.sub("nobody-serves.sock"), "", {}}};
  const auto t0 = Clock::now();
  auto vm = Vm::boot(c);
  ASSERT_FALSE(vm.is_ok());
  EXPECT_LT(Clock::now() - t0, 3s) << "waited for the whole start timeout";
  const std::string msg = vm.status().to_string();
  EXPECT_NE(msg.find("QEMU exited"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nobody-serves.sock"), std::string::npos) << msg;
  EXPECT_FALSE(testing::process_mentioning(c.run_dir));
}

TEST_F(VmTest, KvmProbeIsCachedAndFast) {
  std::string why;
  const auto t0 = Clock::now();
  const bool kvm = kvm_usable("qemu-system-x86_64", 3000ms, &why);
  const auto t1 = Clock::now();
  EXPECT_EQ(kvm_usable("qemu-system-x86_64", 3000ms), kvm);
  EXPECT_LT(Clock::now() - t1, 10ms) << "the probe result must be cached";
  EXPECT_LT(t1 - t0, 5s);
  if (!kvm) {
    EXPECT_FALSE(why.empty());
  }
  std::cout << "KVM usable: " << (kvm ? "yes" : cat("no (", why, ")")) << "\n";
}

// A helper process (the vhost-user server) killed by its PID on every exit.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() { kill_and_reap(pid_); }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;

 private:
  pid_t pid_;
};

class NetnsGuard {
 public:
  explicit NetnsGuard(std::string name) : name_(std::move(name)) {
    ok_ = run_tool({"ip", "netns", "add", name_}, 5000ms).is_ok();
  }
  ~NetnsGuard() {
    if (ok_) (void)run_tool({"ip", "netns", "delete", name_}, 5000ms);
  }
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  bool ok_ = false;
};

// The guest's rx counter printed as "RX=<n>" after pinging through its NIC.
long ping_and_count_rx(const VmConfig& c, const std::string& peer, int tag) {
  const std::string marker = cat("P-", tag * 2);
  if (!testing::run_in_guest(c,
                             cat("ping -c 2 -W 1 ", peer, " >/dev/null 2>&1; echo RX=$(cat ",
                                 "/sys/class/net/eth0/statistics/rx_packets) P-$((", tag, "*2))"),
                             marker, 30s)) {
    ADD_FAILURE() << "no " << marker
                  << " from the guest: " << Console(c.serial_log()).text().substr(0, 3000);
    return -1;
  }
  static const std::regex re(R"(RX=(\d+) P-(\d+))");
  long rx = -1;
  const std::string text = Console(c.serial_log()).text();
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    if ((*it)[2] == std::to_string(tag * 2)) rx = std::stol((*it)[1]);
  }
  if (rx < 0) ADD_FAILURE() << "no RX= line: " << text.substr(0, 3000);
  return rx;
}

// vhost-user served by DPDK (as the delay node serves it), frames looped
// back by testpmd; the VM is checkpointed and restored with it attached.
TEST_F(VmTest, VhostUserAttachmentSurvivesSaveAndRestore) {
  if (!testing::have_binary("dpdk-testpmd")) GTEST_SKIP() << "dpdk-testpmd is not installed";
  if (!std::filesystem::exists("/dev/hugepages") || ::geteuid() != 0) {
    GTEST_SKIP() << "needs root and hugetlbfs on /dev/hugepages";
  }
  const std::string sock = dir_.sub("vhost.sock");
  const std::string prefix = cat("amb-vm-", std::filesystem::path(dir_.path()).filename().string());
  // testpmd leaves its runtime directory even with --in-memory; removed
  // after the process (destroyed after server_guard below).
  struct RuntimeDirGuard {
    std::string path;
    ~RuntimeDirGuard() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } runtime_dir{cat("/var/run/dpdk/", prefix)};
  auto server = spawn_process(
      {"dpdk-testpmd", "-l", "0,1", "-n", "1", "--in-memory", "--no-pci", "--file-prefix", prefix,
       "--vdev", cat("net_vhost0,iface=", sock, ",client=0"), "-m", "128", "--",
       "--forward-mode=io", "--auto-start", "--total-num-mbufs=2048", "--stats-period", "5"},
      dir_.sub("testpmd.log"));
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  ChildGuard server_guard(*server);
  const auto deadline = Clock::now() + 20s;
  while (!std::filesystem::exists(sock) && Clock::now() < deadline) {
    ASSERT_FALSE(poll_exit(*server).exited) << file_tail(dir_.sub("testpmd.log"));
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(std::filesystem::exists(sock)) << file_tail(dir_.sub("testpmd.log"));

  VmConfig c = config("vhost", false);
  c.append += " amber.ip=10.77.0.2/24";
  c.nics = {{Nic::Kind::kVhostUser, sock, "52:54:00:77:00:02", {}}};
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  const long rx1 = ping_and_count_rx(c, "10.77.0.3", 21);
  EXPECT_GT(rx1, 0) << "no frame came back through vhost-user";

  ASSERT_TRUE(vm->stop_at(soon(20ms), waiter_).is_ok());
  const std::string ckpt = dir_.sub("ckpt");
  auto saved = save_checkpoint(*vm, ckpt);
  ASSERT_TRUE(saved.is_ok()) << saved.status().to_string();
  vm.reset();

  VmConfig r = config("vhost-restored", false);
  r.append = c.append;
  r.nics = c.nics;
  auto restored = restore_checkpoint(ckpt, r);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  ASSERT_TRUE((*restored)->resume_at(soon(20ms), waiter_).is_ok());
  const long rx2 = ping_and_count_rx(r, "10.77.0.3", 22);
  EXPECT_GT(rx2, rx1) << "the restored guest's NIC got nothing through vhost-user";
}

// A tap device (the other attachment), moved into a namespace of the test's
// own, answering ping from there.
TEST_F(VmTest, TapAttachmentAnswersPingFromANamespace) {
  if (::geteuid() != 0 || !testing::have_binary("ip")) GTEST_SKIP() << "needs root and iproute2";
  const std::string id = std::filesystem::path(dir_.path()).filename().string().substr(7);
  NetnsGuard ns(cat("amb-vm-ns-", id));
  ASSERT_TRUE(ns.ok());
  const std::string tap = cat("amb-vm-t", id);
  VmConfig c = config("tap", false);
  c.append += " amber.ip=10.78.0.2/24";
  c.nics = {{Nic::Kind::kTap, tap, "52:54:00:78:00:02", {}}};
  std::filesystem::create_directories(c.run_dir);
  auto vm = Vm::boot(c);
  ASSERT_TRUE(vm.is_ok()) << vm.status().to_string();
  for (const auto& cmd : std::vector<std::vector<std::string>>{
           {"ip", "link", "set", tap, "netns", ns.name()},
           {"ip", "-n", ns.name(), "addr", "add", "10.78.0.1/24", "dev", tap},
           {"ip", "-n", ns.name(), "link", "set", tap, "up"}}) {
    auto r = run_tool(cmd, 5000ms);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  ASSERT_TRUE(Console(c.serial_log()).wait_for("amber: guest ready", kBoot));
  bool answered = false;
  const auto deadline = Clock::now() + 30s;
  while (!answered && Clock::now() < deadline) {
    answered =
        run_tool({"ip", "netns", "exec", ns.name(), "ping", "-c", "1", "-W", "1", "10.78.0.2"},
                 5000ms)
            .is_ok();
  }
  ASSERT_TRUE(answered) << "guest behind tap " << tap << " did not answer";
  // The image's iperf3 (with its libraries) serves one test over the tap.
  ASSERT_TRUE(testing::run_in_guest(c, "iperf3 -s -1 -D; echo I-$((2*9))", "I-18", 30s));
  Result<std::string> iperf = internal_error("not run");
  for (int attempt = 0; attempt < 5 && !iperf.is_ok(); ++attempt) {
    iperf = run_tool({"ip", "netns", "exec", ns.name(), "iperf3", "-c", "10.78.0.2", "-t", "1"},
                     20000ms);
  }
  ASSERT_TRUE(iperf.is_ok()) << iperf.status().to_string();
  EXPECT_NE(iperf->find("receiver"), std::string::npos) << *iperf;
}

// A free port of 127.0.0.1 for both TCP and UDP (as far as one can tell).
int free_loopback_port() {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(t, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port = ntohs(a.sin_port);
    }
    ::close(t);
    int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool udp_free = port > 0 && ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(u);
    if (udp_free) return port;
  }
  return -1;
}

// One request to the guest probe's UDP clock (guest/probe.c): its
// CLOCK_MONOTONIC in ns, or -1 without an answer within `wait`.
int64_t probe_clock(int port, std::chrono::milliseconds wait) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const uint32_t req[4] = {0x434d4241u, 7, 0, 0};
  int64_t mono = -1;
  if (::sendto(fd, req, sizeof req, 0, reinterpret_cast<sockaddr*>(&a), sizeof a) == sizeof req) {
    pollfd p{fd, POLLIN, 0};
    unsigned char rep[64];
    if (::poll(&p, 1, static_cast<int>(wait.count())) == 1 &&
        ::recv(fd, rep, sizeof rep, 0) >= 32) {
      std::memcpy(&mono, rep + 16, sizeof mono);
    }
  }
  ::close(fd);
  return mono;
}

int64_t probe_clock_retrying(int port, std::chrono::seconds total) {
  const auto deadline = Clock::now() + total;
  int64_t mono = -1;
  while (mono < 0 && Clock::now() < deadline) mono = probe_clock(port, 500ms);
  return mono;
}

// The guest probe's management channel (guest/README.md): a user-network
// NIC with loopback forwards reaches the probe's UDP clock across a
// stop/cont and a save -> kill -> restore, and the guest's clock skips the
// time the VM was stopped.
TEST_F(VmTest, ManagementForwardsReachTheProbeAcrossStopAndRestore) {
  const int port = free_loopback_port();
  ASSERT_GT(port, 0);
  VmConfig c = config("mgmt", false);
  c.append += " amber.mgmt=10.0.2.15/24";
  Nic mgmt;
  mgmt.forwards = {{PortForward::Protocol::kTcp, port, 7700},
                   {PortForward::Protocol::kUdp, port, 7700}};
  c.nics = {Nic{}, mgmt};  // eth0 stands in for the experiment NIC, eth1 manages
  auto vm = boot_counter(c);
  ASSERT_TRUE(vm);
  const int64_t g1 = probe_clock_retrying(port, 60s);
  ASSERT_GT(g1, 0) << "no clock answer through udp 127.0.0.1:" << port << ": "
                   << Console(c.serial_log()).text();
  const auto h1 = Clock::now();

  ASSERT_TRUE(vm->stop_at(soon(20ms), waiter_).is_ok());
  EXPECT_LT(probe_clock(port, 300ms), 0) << "a stopped guest answered";
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(vm->resume_at(soon(20ms), waiter_).is_ok());
  const int64_t g2 = probe_clock_retrying(port, 10s);
  const auto h2 = Clock::now();
  ASSERT_GT(g2, g1);
  EXPECT_LT(std::chrono::nanoseconds(g2 - g1), h2 - h1 - 800ms) << "the pause showed in guest time";

  ASSERT_TRUE(vm->stop_at(soon(20ms), waiter_).is_ok());
  const std::string ckpt = dir_.sub("ckpt");
  ASSERT_TRUE(save_checkpoint(*vm, ckpt).is_ok());
  vm.reset();  // frees the forwarded ports for the restored QEMU
  VmConfig r = config("mgmt-restored", false);
  r.append = c.append;
  r.nics = c.nics;
  auto restored = restore_checkpoint(ckpt, r);
  ASSERT_TRUE(restored.is_ok()) << restored.status().to_string();
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE((*restored)->resume_at(soon(20ms), waiter_).is_ok());
  const int64_t g3 = probe_clock_retrying(port, 10s);
  const auto h3 = Clock::now();
  ASSERT_GT(g3, g2) << "no clock answer after the restore";
  EXPECT_LT(std::chrono::nanoseconds(g3 - g2), h3 - h2 - 400ms);
}

}  // namespace
}  // namespace amber::vm
