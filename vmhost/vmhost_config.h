// amber-vmhost's configuration: a VmHost message (proto/vmhost.proto) in
// Protobuf text format, checked as a whole; every error names the file and
// line. Also turns each VmSpec into vm-checkpoint's VmConfig.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "proto/vmhost.pb.h"
#include "rpc/access.h"
#include "vm-checkpoint/vm.h"

namespace amber::controller {

// `origin` names the text in messages ("vmhost.conf").
Result<vmhost::VmHost> parse_vmhost_config(const std::string& text, const std::string& origin);
Result<vmhost::VmHost> load_vmhost_config(const std::string& path);

// Who may call what on this host: its tls block and identities.
AccessPolicy access_policy(const vmhost::VmHost& host);

// The step lead the configuration asks for (step_lead: auto, off, a duration).
Result<vm::StepLeadPolicy> step_lead_policy(const vmhost::VmHost& host);

// The VM's QEMU configuration: run directory <run_dir>/<name>, disk overlay
// <run_dir>/<name>/disk.qcow2 when the spec has a disk base.
vm::VmConfig to_vm_config(const vmhost::VmHost& host, const vmhost::VmSpec& spec);

}  // namespace amber::controller
