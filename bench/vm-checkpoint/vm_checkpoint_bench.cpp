// Timings of one VM checkpoint cycle on real QEMU, for bench/vm_checkpoint.sh:
// stop latency (requested instant -> QEMU's STOP event), save time and rate
// of a guest whose RAM is dirtied, restore time, resume latency, and the
// skew of STOP events when several VMs stop at one instant.
//
//   vm_checkpoint_bench GUEST_DIR WORK_DIR [memory MiB] [fill MiB] [runs] [vms]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "vm-checkpoint/vm.h"

namespace {

using namespace amber;
using namespace amber::vm;
using namespace std::chrono_literals;

double ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct Series {
  std::string name, unit;
  std::vector<double> v;
  void print() const {
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    if (s.empty()) return;
    std::printf("  %-34s %10.3f %10.3f %10.3f  %s  (n=%zu)\n", name.c_str(), s[s.size() / 2],
                s.front(), s.back(), unit.c_str(), s.size());
  }
};

bool wait_in_log(const std::string& path, const std::string& needle, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

int fail(const Status& s) {
  std::fprintf(stderr, "vm_checkpoint_bench: %s\n", s.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s GUEST_DIR WORK_DIR [memory MiB] [fill MiB] [runs] [vms]\n",
                 argv[0]);
    return 2;
  }
  const std::string guest = argv[1];
  const std::string work = argv[2];
  const int memory = argc > 3 ? std::atoi(argv[3]) : 256;
  const int fill = argc > 4 ? std::atoi(argv[4]) : 160;
  const int runs = argc > 5 ? std::atoi(argv[5]) : 5;
  const int nvms = argc > 6 ? std::atoi(argv[6]) : 4;

  auto config = [&](const std::string& name, const std::string& workload) {
    VmConfig c;
    c.name = cat("amb-vm-bench-", name);
    c.run_dir = cat(work, "/", name);
    c.memory_mib = memory;
    c.kernel = cat(guest, "/vmlinuz");
    c.initrd = cat(guest, "/initramfs.cpio.gz");
    c.append = cat("console=ttyS0 quiet ", workload);
    return c;
  };
  SleepUntilWaiter waiter;
  auto soon = [](std::chrono::milliseconds d) { return std::chrono::system_clock::now() + d; };

  Series stop_lat{"stop latency (instant -> STOP)", "ms", {}};
  Series save_time{"save time", "ms", {}};
  Series save_rate{"save rate", "MB/s", {}};
  Series save_size{"state file size", "MB", {}};
  Series restore_time{"restore time (start + load)", "ms", {}};
  Series resume_lat{"resume latency (instant -> RESUME)", "ms", {}};
  std::string accel;

  {
    VmConfig c = config("single", cat("amber.fill=", fill, " amber.workload=counter"));
    auto vm = Vm::boot(c);
    if (!vm) return fail(vm.status());
    accel = accel_name((*vm)->accel());
    if (!wait_in_log(c.serial_log(), "amber: filled", 120s)) {
      return fail(deadline_exceeded("guest did not fill its RAM"));
    }
    std::string state;
    for (int i = 0; i < runs; ++i) {
      auto stop = (*vm)->stop_at(soon(100ms), waiter);
      if (!stop) return fail(stop.status());
      stop_lat.v.push_back(ms(stop->lateness()));
      state = cat(work, "/state-", i, ".bin");
      auto saved = (*vm)->save_state(state);
      if (!saved) return fail(saved.status());
      save_time.v.push_back(ms(saved->duration));
      save_rate.v.push_back(saved->mb_per_s());
      save_size.v.push_back(static_cast<double>(saved->file_bytes) / 1e6);
      auto resume = (*vm)->resume_at(soon(100ms), waiter);
      if (!resume) return fail(resume.status());
      resume_lat.v.push_back(ms(resume->lateness()));
      if (i + 1 < runs) std::filesystem::remove(state);
      std::this_thread::sleep_for(200ms);
    }
    vm->reset();
    for (int i = 0; i < runs; ++i) {
      VmConfig r = config(cat("restored-", i), cat("amber.fill=", fill, " amber.workload=counter"));
      RestoreReport report;
      auto restored = Vm::restore(r, state, &report);
      if (!restored) return fail(restored.status());
      restore_time.v.push_back(ms(report.total()));
      auto resume = (*restored)->resume_at(soon(100ms), waiter);
      if (!resume) return fail(resume.status());
      resume_lat.v.push_back(ms(resume->lateness()));
    }
  }

  // Several VMs stopped at one instant, idle and busy guests, with and
  // without the real-time boost (alternating, so load drift hits both).
  std::vector<Series> skews;
  for (const char* workload : {"none", "counter"}) {
    Series plain{
        cat("STOP skew, ", nvms, " ", workload == std::string("none") ? "idle" : "busy", " VMs"),
        "ms",
        {}};
    Series boosted{cat(plain.name, ", RT boost"), "ms", {}};
    std::vector<std::unique_ptr<Vm>> vms;
    std::vector<Vm*> raw;
    for (int i = 0; i < nvms; ++i) {
      VmConfig c = config(cat("multi-", workload, "-", i), cat("amber.workload=", workload));
      auto vm = Vm::boot(c);
      if (!vm) return fail(vm.status());
      raw.push_back(vm->get());
      vms.push_back(std::move(*vm));
    }
    for (Vm* vm : raw) {
      if (!wait_in_log(vm->config().serial_log(), "amber: guest ready", 120s)) {
        return fail(deadline_exceeded(cat(vm->config().name, " did not boot")));
      }
    }
    std::this_thread::sleep_for(1s);
    for (int i = 0; i < 2 * runs; ++i) {
      const bool boost = i % 2 == 1;
      for (Vm* vm : raw) vm->set_realtime_boost(boost);
      auto stops = stop_all_at(raw, soon(200ms), waiter);
      if (!stops) return fail(stops.status());
      auto [lo, hi] = std::minmax_element(stops->begin(), stops->end(),
                                          [](auto& a, auto& b) { return a.event < b.event; });
      (boost ? boosted : plain).v.push_back(ms(hi->event - lo->event));
      if (!boost) {
        for (const StepReport& s : *stops) stop_lat.v.push_back(ms(s.lateness()));
      }
      auto resumed = resume_all_at(raw, soon(10ms), waiter);
      if (!resumed) return fail(resumed.status());
      std::this_thread::sleep_for(300ms);
    }
    skews.push_back(plain);
    skews.push_back(boosted);
  }

  std::printf("vm-checkpoint: %d MiB guest (%d MiB of RAM dirtied), %s, %d runs\n", memory, fill,
              accel.c_str(), runs);
  std::printf("  %-34s %10s %10s %10s\n", "metric", "median", "min", "max");
  for (const Series* s :
       {&stop_lat, &save_time, &save_rate, &save_size, &restore_time, &resume_lat}) {
    s->print();
  }
  for (const Series& s : skews) s.print();
  return 0;
}
