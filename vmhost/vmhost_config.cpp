#include "vmhost/vmhost_config.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/strings.h"
#include "common/units.h"
#include "config/text_format.h"
#include "proto/vmhost.grpc.pb.h"

namespace amber::controller {
namespace {

using google::protobuf::TextFormat;

// The guest's receive ring on a TAP NIC unless the config says otherwise:
// QEMU's largest (its default is 256).
constexpr int kTapRxQueueSize = 1024;

// "file:line:column: " of a repeated field's entry, or "file: " when
// unknown.
std::string where(const std::string& origin, const TextFormat::ParseInfoTree& tree,
                  const char* field_name, int index) {
  return config::Locator(origin, &tree).at(vmhost::VmHost::descriptor(), field_name, index);
}

std::string where_top(const std::string& origin, const TextFormat::ParseInfoTree& tree,
                      const char* field_name) {
  return where(origin, tree, field_name, -1);
}

}  // namespace

Result<vmhost::VmHost> parse_vmhost_config(const std::string& text, const std::string& origin) {
  vmhost::VmHost host;
  TextFormat::ParseInfoTree tree;
  AMBER_RETURN_IF_ERROR(config::parse_text_message(text, origin, &host, &tree));
  if (host.listen().empty()) {
    return invalid_argument(cat(origin, ": listen: give unix:/PATH or 127.0.0.1:PORT"));
  }
  if (host.has_tls() &&
      (host.tls().ca().empty() || host.tls().cert().empty() || host.tls().key().empty())) {
    return invalid_argument(
        cat(where_top(origin, tree, "tls"), "tls: give all three of ca, cert and key"));
  }
  if (!host.store().empty() && host.store()[0] != '/') {
    return invalid_argument(cat(where_top(origin, tree, "store"), "store '", host.store(),
                                "': give an absolute path (the topology's store)"));
  }
  if (auto access =
          Authorizer::create(vmhost::VmHostAgent::service_full_name(), access_policy(host));
      !access) {
    return invalid_argument(cat(origin, ": ", access.status().message()));
  }
  if (host.run_dir().empty()) {
    return invalid_argument(cat(origin, ": run_dir: give a directory for the VMs' sockets/logs"));
  }
  if (!host.sync_mode().empty() && host.sync_mode() != "free_running" &&
      host.sync_mode() != "disciplined" && host.sync_mode() != "grandmaster") {
    return invalid_argument(cat(where_top(origin, tree, "sync_mode"), "sync_mode '",
                                host.sync_mode(),
                                "': expected free_running, disciplined or grandmaster"));
  }
  if (!host.pause_alignment().empty() && host.pause_alignment() != "on" &&
      host.pause_alignment() != "off") {
    return invalid_argument(cat(where_top(origin, tree, "pause_alignment"), "pause_alignment '",
                                host.pause_alignment(), "': expected on or off"));
  }
  if (auto lead = step_lead_policy(host); !lead) {
    return invalid_argument(cat(where_top(origin, tree, "step_lead"), lead.status().message()));
  }
  if (host.vms_size() == 0) return invalid_argument(cat(origin, ": no vms { ... } configured"));
  std::set<std::string> names;
  std::set<std::pair<int, int>> host_ports;  // (protocol, port): one VM each on this host
  for (int i = 0; i < host.vms_size(); ++i) {
    const vmhost::VmSpec& vm = host.vms(i);
    const std::string at = where(origin, tree, "vms", i);
    if (vm.name().empty()) return invalid_argument(cat(at, "vms: name is missing"));
    if (vm.name().find('/') != std::string::npos || vm.name() == "." || vm.name() == "..") {
      return invalid_argument(cat(at, "VM '", vm.name(), "': name must be a plain file name"));
    }
    // QEMU's option parser splits at commas: one in a name, MAC or endpoint
    // would add options of the caller's choosing (#16 defect 9).
    if (vm.name().find(',') != std::string::npos) {
      return invalid_argument(cat(at, "VM '", vm.name(), "': name: no commas"));
    }
    for (const auto& nic : vm.nics()) {
      if (nic.endpoint().find(',') != std::string::npos) {
        return invalid_argument(
            cat(at, "VM '", vm.name(), "': endpoint '", nic.endpoint(), "': no commas"));
      }
      if (nic.mac().find(',') != std::string::npos) {
        return invalid_argument(cat(at, "VM '", vm.name(), "': mac '", nic.mac(), "': no commas"));
      }
    }
    if (!names.insert(vm.name()).second) {
      return invalid_argument(cat(at, "VM '", vm.name(), "': name used twice"));
    }
    if (vm.memory_mib() <= 0) {
      return invalid_argument(cat(at, "VM '", vm.name(), "': memory_mib must be positive"));
    }
    if (vm.vcpus() < 0) return invalid_argument(cat(at, "VM '", vm.name(), "': vcpus < 0"));
    if (vm.kernel().empty()) {
      return invalid_argument(cat(at, "VM '", vm.name(), "': kernel is missing"));
    }
    if (!vm.accel().empty() && vm.accel() != "auto" && vm.accel() != "kvm" && vm.accel() != "tcg") {
      return invalid_argument(
          cat(at, "VM '", vm.name(), "': accel '", vm.accel(), "': expected auto, kvm or tcg"));
    }
    for (const std::string& event : vm.qemu_trace()) {
      // A name or pattern, never another option: QEMU reads "-trace VALUE"
      // as a list of key=value pairs.
      const bool ok = !event.empty() && std::all_of(event.begin(), event.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '*';
      });
      if (!ok) {
        return invalid_argument(cat(at, "VM '", vm.name(), "': qemu_trace '", event,
                                    "': a trace event name or pattern (a-z, 0-9, _ and *; "
                                    "see qemu-system-x86_64 -trace help)"));
      }
    }
    for (const auto& nic : vm.nics()) {
      if (nic.kind() != vmhost::NicSpec::USER && nic.endpoint().empty()) {
        return invalid_argument(cat(at, "VM '", vm.name(),
                                    "': a tap or vhost-user NIC needs its endpoint "
                                    "(interface name or socket path)"));
      }
      if (nic.vhost_net() && nic.kind() != vmhost::NicSpec::TAP) {
        return invalid_argument(cat(at, "VM '", vm.name(), "': vhost_net needs a TAP NIC"));
      }
      if (const int n = nic.rx_queue_size();
          n != 0 && (n < 256 || n > 1024 || (n & (n - 1)) != 0)) {
        return invalid_argument(cat(at, "VM '", vm.name(), "': rx_queue_size ", n,
                                    ": a power of two from 256 to 1024 (0: the default)"));
      }
      if (nic.forwards_size() > 0 && nic.kind() != vmhost::NicSpec::USER) {
        return invalid_argument(
            cat(at, "VM '", vm.name(), "': forwards need a USER NIC (QEMU user networking)"));
      }
      for (const auto& f : nic.forwards()) {
        if (f.host_port() < 1 || f.host_port() > 65535 || f.guest_port() < 1 ||
            f.guest_port() > 65535) {
          return invalid_argument(cat(at, "VM '", vm.name(), "': forward ", f.host_port(), " -> ",
                                      f.guest_port(), ": ports are 1..65535"));
        }
        if (!host_ports.insert({f.protocol(), f.host_port()}).second) {
          return invalid_argument(
              cat(at, "VM '", vm.name(), "': host port ", f.host_port(), " is forwarded twice"));
        }
      }
    }
  }
  return host;
}

Result<vmhost::VmHost> load_vmhost_config(const std::string& path) {
  auto text = config::read_text_file(path, "VM host configuration");
  if (!text) return text.status();
  return parse_vmhost_config(*text, path);
}

AccessPolicy access_policy(const vmhost::VmHost& host) {
  AccessPolicy policy;
  policy.tls = host.has_tls();
  policy.controllers.assign(host.controller_identity().begin(), host.controller_identity().end());
  policy.operators.assign(host.operator_identity().begin(), host.operator_identity().end());
  policy.controller_setting = "controller_identity";
  policy.operator_setting = "operator_identity";
  return policy;
}

Result<vm::StepLeadPolicy> step_lead_policy(const vmhost::VmHost& host) {
  vm::StepLeadPolicy p;
  const std::string& text = host.step_lead();
  if (text == "off") return p;
  if (text.empty() || text == "auto") {
    p.mode = vm::StepLeadPolicy::Mode::kAuto;
    return p;
  }
  auto d = parse_duration_ns(text);
  if (!d || *d < 0 || *d > 100'000'000) {
    return invalid_argument(
        cat("step_lead '", text, "': expected auto, off or a duration from 0 to 100ms"));
  }
  p.mode = vm::StepLeadPolicy::Mode::kFixed;
  p.fixed = std::chrono::nanoseconds(*d);
  return p;
}

vm::VmConfig to_vm_config(const vmhost::VmHost& host, const vmhost::VmSpec& spec) {
  vm::VmConfig c;
  if (auto lead = step_lead_policy(host)) c.step_lead = *lead;
  c.realtime_boost = host.realtime_boost();
  c.align_pause = host.pause_alignment() != "off";
  c.save_ram_file = host.save_ram_file();
  c.name = spec.name();
  c.run_dir = cat(host.run_dir(), "/", spec.name());
  c.memory_mib = spec.memory_mib();
  c.vcpus = spec.vcpus() > 0 ? spec.vcpus() : 1;
  c.kernel = spec.kernel();
  c.initrd = spec.initrd();
  c.append = spec.append();
  if (!spec.disk_base().empty()) c.disk = cat(c.run_dir, "/disk.qcow2");
  for (const auto& n : spec.nics()) {
    vm::Nic nic;
    nic.kind = n.kind() == vmhost::NicSpec::TAP          ? vm::Nic::Kind::kTap
               : n.kind() == vmhost::NicSpec::VHOST_USER ? vm::Nic::Kind::kVhostUser
                                                         : vm::Nic::Kind::kUser;
    nic.endpoint = n.endpoint();
    nic.mac = n.mac();
    nic.vhost_net = n.vhost_net();
    // QEMU's tap back end drops the frame it holds for a full guest ring
    // when the VM stops: a deeper ring by default (NicSpec.rx_queue_size).
    nic.rx_queue_size = n.rx_queue_size() != 0             ? n.rx_queue_size()
                        : n.kind() == vmhost::NicSpec::TAP ? kTapRxQueueSize
                                                           : 0;
    for (const auto& f : n.forwards()) {
      nic.forwards.push_back({f.protocol() == vmhost::NicSpec::PortForward::UDP
                                  ? vm::PortForward::Protocol::kUdp
                                  : vm::PortForward::Protocol::kTcp,
                              f.host_port(), f.guest_port()});
    }
    c.nics.push_back(nic);
  }
  c.qemu_trace.assign(spec.qemu_trace().begin(), spec.qemu_trace().end());
  c.accel = spec.accel() == "kvm"   ? vm::Accel::kKvm
            : spec.accel() == "tcg" ? vm::Accel::kTcg
                                    : vm::Accel::kAuto;
  return c;
}

}  // namespace amber::controller
