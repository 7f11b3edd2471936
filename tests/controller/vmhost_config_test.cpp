// amber-vmhost's configuration loader: what it accepts, and errors that
// name the file and line.
#include "vmhost/vmhost_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace amber::controller {
namespace {

constexpr const char* kGood = R"(host_id: "h1"
listen: "unix:/tmp/amb-vmh.sock"
run_dir: "/tmp/amb-vmh-run"
vms {
  name: "a"
  memory_mib: 128
  kernel: "/g/vmlinuz"
  initrd: "/g/initrd"
  append: "console=ttyS0"
  disk_base: "/g/base.qcow2"
  accel: "tcg"
  nics { kind: VHOST_USER endpoint: "/run/amber/a.sock" mac: "52:54:00:00:00:01" }
  nics {
    kind: USER
    forwards { host_port: 17700 guest_port: 7700 }
    forwards { protocol: UDP host_port: 17700 guest_port: 7700 }
  }
}
vms {
  name: "b"
  memory_mib: 256
  kernel: "/g/vmlinuz"
}
)";

TEST(VmHostConfig, GoodConfigMapsToVmConfigs) {
  auto c = parse_vmhost_config(kGood, "good.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  ASSERT_EQ(c->vms_size(), 2);
  vm::VmConfig a = to_vm_config(*c, c->vms(0));
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.run_dir, "/tmp/amb-vmh-run/a");
  EXPECT_EQ(a.disk, "/tmp/amb-vmh-run/a/disk.qcow2");
  EXPECT_EQ(a.memory_mib, 128);
  EXPECT_EQ(a.vcpus, 1);
  EXPECT_EQ(a.accel, vm::Accel::kTcg);
  ASSERT_EQ(a.nics.size(), 2u);
  EXPECT_EQ(a.nics[0].kind, vm::Nic::Kind::kVhostUser);
  EXPECT_EQ(a.nics[0].endpoint, "/run/amber/a.sock");
  EXPECT_TRUE(a.nics[0].forwards.empty());
  EXPECT_EQ(a.nics[1].kind, vm::Nic::Kind::kUser);
  ASSERT_EQ(a.nics[1].forwards.size(), 2u);
  EXPECT_EQ(a.nics[1].forwards[0].protocol, vm::PortForward::Protocol::kTcp);
  EXPECT_EQ(a.nics[1].forwards[1].protocol, vm::PortForward::Protocol::kUdp);
  EXPECT_EQ(a.nics[1].forwards[1].host_port, 17700);
  EXPECT_EQ(a.nics[1].forwards[1].guest_port, 7700);
  vm::VmConfig b = to_vm_config(*c, c->vms(1));
  EXPECT_TRUE(b.disk.empty());
  EXPECT_EQ(b.accel, vm::Accel::kAuto);
  // No step_lead: calibrated (auto); no real-time boost; pauses aligned.
  EXPECT_EQ(a.step_lead.mode, vm::StepLeadPolicy::Mode::kAuto);
  EXPECT_FALSE(a.realtime_boost);
  EXPECT_TRUE(a.align_pause);
}

TEST(VmHostConfig, StepLeadAndBoost) {
  auto with = [](const std::string& lines) {
    return parse_vmhost_config(lines + kGood, "lead.conf");
  };
  auto a = with("step_lead: \"auto\"\nrealtime_boost: true\n");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  vm::VmConfig va = to_vm_config(*a, a->vms(0));
  EXPECT_EQ(va.step_lead.mode, vm::StepLeadPolicy::Mode::kAuto);
  EXPECT_TRUE(va.realtime_boost);
  auto f = with("step_lead: \"1500us\"\n");
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  auto off = with("pause_alignment: \"off\"\nstep_lead: \"off\"\n");
  ASSERT_TRUE(off.is_ok()) << off.status().to_string();
  EXPECT_FALSE(to_vm_config(*off, off->vms(0)).align_pause);
  EXPECT_EQ(to_vm_config(*off, off->vms(0)).step_lead.mode, vm::StepLeadPolicy::Mode::kOff);
  vm::VmConfig vf = to_vm_config(*f, f->vms(1));
  EXPECT_EQ(vf.step_lead.mode, vm::StepLeadPolicy::Mode::kFixed);
  EXPECT_EQ(vf.step_lead.fixed, std::chrono::microseconds(1500));
}

TEST(VmHostConfig, TapNicMayUseVhostNet) {
  auto c = parse_vmhost_config(
      "listen: \"unix:/tmp/x.sock\"\nrun_dir: \"/tmp/r\"\n"
      "vms { name: \"a\" memory_mib: 1 kernel: \"k\"\n"
      "  nics { kind: TAP endpoint: \"tb-t1\" vhost_net: true }\n"
      "  nics { kind: TAP endpoint: \"tb-t2\" } }\n",
      "tap.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  vm::VmConfig a = to_vm_config(*c, c->vms(0));
  ASSERT_EQ(a.nics.size(), 2u);
  EXPECT_EQ(a.nics[0].kind, vm::Nic::Kind::kTap);
  EXPECT_TRUE(a.nics[0].vhost_net);
  EXPECT_FALSE(a.nics[1].vhost_net);
  // A deeper receive ring by default on a tap (NicSpec.rx_queue_size).
  EXPECT_EQ(a.nics[0].rx_queue_size, 1024);
}

TEST(VmHostConfig, RxQueueSizeIsKeptOrDefaulted) {
  auto c = parse_vmhost_config(
      "listen: \"unix:/tmp/x.sock\"\nrun_dir: \"/tmp/r\"\n"
      "vms { name: \"a\" memory_mib: 1 kernel: \"k\"\n"
      "  nics { kind: TAP endpoint: \"tb-t1\" rx_queue_size: 256 }\n"
      "  nics { kind: VHOST_USER endpoint: \"/s\" } }\n",
      "rxq.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  vm::VmConfig a = to_vm_config(*c, c->vms(0));
  EXPECT_EQ(a.nics[0].rx_queue_size, 256);
  EXPECT_EQ(a.nics[1].rx_queue_size, 0);  // QEMU's own default
}

TEST(VmHostConfig, QemuTraceEventsReachTheVm) {
  auto c = parse_vmhost_config(
      "listen: \"unix:/tmp/x.sock\"\nrun_dir: \"/tmp/r\"\n"
      "vms { name: \"a\" memory_mib: 1 kernel: \"k\" qemu_trace: \"virtqueue_flush\" "
      "qemu_trace: \"virtio_*\" }\n",
      "trace.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(to_vm_config(*c, c->vms(0)).qemu_trace,
            (std::vector<std::string>{"virtqueue_flush", "virtio_*"}));
}

TEST(VmHostConfig, RolesAndStore) {
  auto c = parse_vmhost_config(
      "listen: \"h1.testbed:7401\"\nrun_dir: \"/tmp/r\"\nstore: \"/srv/amber/store\"\n"
      "tls { ca: \"/c\" cert: \"/e\" key: \"/k\" }\n"
      "controller_identity: \"ctl\"\noperator_identity: \"alice\"\noperator_identity: \"bob\"\n"
      "vms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
      "roles.conf");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->store(), "/srv/amber/store");
  const AccessPolicy p = access_policy(*c);
  EXPECT_TRUE(p.tls);
  EXPECT_EQ(p.controllers, std::vector<std::string>{"ctl"});
  EXPECT_EQ(p.operators, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_FALSE(p.operators_may_change_links);
}

struct Bad {
  std::string text;
  std::string expected;  // a substring of the message, with file:line
};

TEST(VmHostConfig, ErrorsNameFileAndLine) {
  const std::string head = "listen: \"unix:/tmp/x.sock\"\nrun_dir: \"/tmp/r\"\n";
  const Bad cases[] = {
      {head + "vms {\n  name: \"a\"\n  memroy_mib: 1\n}\n", "bad.conf:5:"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n" +
           "vms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:4:1: VM 'a': name used twice"},
      {head + "vms { name: \"a\" memory_mib: 1 }\n", "bad.conf:3:1: VM 'a': kernel is missing"},
      {head + "\nvms { name: \"a\" kernel: \"k\" }\n", "bad.conf:4:1: VM 'a': memory_mib"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" accel: \"xen\" }\n",
       "bad.conf:3:1: VM 'a': accel 'xen'"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { kind: TAP } }\n",
       "bad.conf:3:1: VM 'a': a tap or vhost-user NIC needs its endpoint"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { kind: VHOST_USER " +
           "endpoint: \"s\" vhost_net: true } }\n",
       "bad.conf:3:1: VM 'a': vhost_net needs a TAP NIC"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { kind: TAP " +
           "endpoint: \"t\" rx_queue_size: 300 } }\n",
       "bad.conf:3:1: VM 'a': rx_queue_size 300: a power of two from 256 to 1024"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" qemu_trace: \"x,file=/etc/y\" }\n",
       "bad.conf:3:1: VM 'a': qemu_trace 'x,file=/etc/y': a trace event name or pattern"},
      {head + "vms { memory_mib: 1 kernel: \"k\" }\n", "bad.conf:3:1: vms: name is missing"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { kind: TAP endpoint: \"t\" " +
           "forwards { host_port: 1 guest_port: 2 } } }\n",
       "bad.conf:3:1: VM 'a': forwards need a USER NIC"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { " +
           "forwards { host_port: 70000 guest_port: 2 } } }\n",
       "bad.conf:3:1: VM 'a': forward 70000 -> 2: ports are 1..65535"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { " +
           "forwards { host_port: 5 guest_port: 2 } } }\n" +
           "vms { name: \"b\" memory_mib: 1 kernel: \"k\" nics { " +
           "forwards { host_port: 5 guest_port: 2 } } }\n",
       "bad.conf:4:1: VM 'b': host port 5 is forwarded twice"},
      {head + "vms { name: \"../x\" memory_mib: 1 kernel: \"k\" }\n", "plain file name"},
      // #16 defect 9: a comma would reach QEMU's option parser.
      {head + "vms { name: \"a,b\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: VM 'a,b': name: no commas"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { kind: TAP " +
           "endpoint: \"t,script=/x\" } }\n",
       "bad.conf:3:1: VM 'a': endpoint 't,script=/x': no commas"},
      {head + "vms { name: \"a\" memory_mib: 1 kernel: \"k\" nics { mac: \"52:54:00:00:00:01,x\" } "
              "}\n",
       "bad.conf:3:1: VM 'a': mac '52:54:00:00:00:01,x': no commas"},
      {head + "sync_mode: \"sloppy\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: sync_mode 'sloppy'"},
      {"run_dir: \"/tmp/r\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf: listen"},
      {head, "bad.conf: no vms"},
      {head + "vms { name: \"a\" memory_mib: \"lots\" }\n", "bad.conf:3:"},
      {head + "step_lead: \"soon\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: step_lead 'soon': expected auto, off or a duration"},
      {head + "step_lead: \"1s\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: step_lead '1s'"},
      {head + "pause_alignment: \"sometimes\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: pause_alignment 'sometimes': expected on or off"},
      {head + "store: \"store\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "bad.conf:3:1: store 'store': give an absolute path"},
      {head + "controller_identity: \"ctl\"\noperator_identity: \"ctl\"\n" +
           "vms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "'ctl' is given both controller_identity and operator_identity"},
      {head + "operator_identity: \"\"\nvms { name: \"a\" memory_mib: 1 kernel: \"k\" }\n",
       "operator_identity: an empty name"},
  };
  for (const Bad& bad : cases) {
    auto c = parse_vmhost_config(bad.text, "bad.conf");
    ASSERT_FALSE(c.is_ok()) << bad.text;
    EXPECT_EQ(c.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad.expected), std::string::npos)
        << "expected '" << bad.expected << "' in: " << c.status().message();
  }
}

TEST(VmHostConfig, LoadsFileAndNamesMissingOne) {
  char path[] = "/tmp/amb-vmh-conf-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << "listen: \"127.0.0.1:0\"\nrun_dir: \"/tmp/r\"\nvms { name: \"a\" kernel: \"k\" }\n";
  }
  auto c = load_vmhost_config(path);
  std::remove(path);
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find(std::string(path) + ":3:1: VM 'a': memory_mib"),
            std::string::npos)
      << c.status().message();

  auto missing = load_vmhost_config("/nonexistent/amb-vmh.conf");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/amb-vmh.conf"), std::string::npos);
}

}  // namespace
}  // namespace amber::controller
