#include "rpc/access.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <grpcpp/server_context.h>

#include <algorithm>
#include <filesystem>

#include "common/strings.h"

namespace amber::controller {
namespace {

namespace fs = std::filesystem;

struct Rule {
  std::string_view service;
  std::string_view method;
  Access access;
};

constexpr std::string_view kDelayNode = "amber.agent.DelayNodeAgent";
constexpr std::string_view kVmHost = "amber.vmhost.VmHostAgent";

// Every RPC of both agents; tests/controller/access_test.cpp checks that
// each method of the services has exactly one rule.
constexpr Rule kRules[] = {
    {kDelayNode, "Prepare", Access::kControl},
    {kDelayNode, "Freeze", Access::kControl},
    {kDelayNode, "Thaw", Access::kControl},
    {kDelayNode, "VmStopped", Access::kControl},
    {kDelayNode, "Shift", Access::kControl},
    {kDelayNode, "Hold", Access::kControl},
    {kDelayNode, "Save", Access::kControl},
    {kDelayNode, "Restore", Access::kControl},
    {kDelayNode, "EditFrames", Access::kControl},
    // A watch puts a matcher into the worker loops: it costs the experiment.
    {kDelayNode, "WatchFrames", Access::kControl},
    // Link events in experiment time: the controller keeps every node's
    // list, so only it may change them (amberctl schedule goes through it).
    {kDelayNode, "ScheduleEvents", Access::kControl},
    {kDelayNode, "ListFrames", Access::kRead},
    {kDelayNode, "GetVirtualTime", Access::kRead},
    {kDelayNode, "GetStats", Access::kRead},
    {kDelayNode, "SetLinkParams", Access::kChangeLinks},
    {kDelayNode, "ExportPcap", Access::kExport},
    {kVmHost, "Prepare", Access::kControl},
    {kVmHost, "StopAt", Access::kControl},
    {kVmHost, "Save", Access::kControl},
    {kVmHost, "ResumeAt", Access::kControl},
    {kVmHost, "Shutdown", Access::kControl},
    {kVmHost, "Restore", Access::kControl},
    {kVmHost, "GetStatus", Access::kRead},
    {kVmHost, "WatchConsole", Access::kRead},
};

bool has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += cat(out.empty() ? "" : ", ", "'", n, "'");
  return out.empty() ? "nobody" : out;
}

}  // namespace

std::optional<Access> rpc_access(std::string_view service, std::string_view method) {
  for (const Rule& r : kRules) {
    if (r.service == service && r.method == method) return r.access;
  }
  return std::nullopt;
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kNone:
      return "no role";
    case Role::kOperator:
      return "operator";
    case Role::kController:
      return "controller";
  }
  return "no role";
}

Result<Authorizer> Authorizer::create(std::string service, AccessPolicy policy) {
  for (const auto& name : policy.controllers) {
    if (name.empty()) return invalid_argument(cat(policy.controller_setting, ": an empty name"));
    if (has(policy.operators, name)) {
      return invalid_argument(cat("'", name, "' is given both ", policy.controller_setting, " and ",
                                  policy.operator_setting, ": give it one role"));
    }
  }
  for (const auto& name : policy.operators) {
    if (name.empty()) return invalid_argument(cat(policy.operator_setting, ": an empty name"));
  }
  const bool default_controller = policy.tls && policy.controllers.empty();
  if (default_controller) policy.controllers.push_back(kDefaultControllerIdentity);
  return Authorizer(std::move(service), std::move(policy), default_controller);
}

Role Authorizer::role_of(const std::optional<std::string>& identity) const {
  if (!policy_.tls) return Role::kController;
  if (!identity) return Role::kNone;
  if (has(policy_.controllers, *identity)) return Role::kController;
  if (has(policy_.operators, *identity)) return Role::kOperator;
  return Role::kNone;
}

Status Authorizer::check(const std::optional<std::string>& identity,
                         std::string_view method) const {
  const auto access = rpc_access(service_, method);
  if (!access) return permission_denied(cat(method, ": no access rule for this call"));
  const Role role = role_of(identity);
  if (role == Role::kController) return Status::ok();
  const std::string who =
      identity ? cat("certificate '", *identity, "'") : std::string("a certificate without a CN");
  if (role == Role::kNone) {
    return permission_denied(cat(method, ": ", who, " has no role on this agent (",
                                 policy_.controller_setting, ", ", policy_.operator_setting, ")"));
  }
  switch (*access) {
    case Access::kRead:
      return Status::ok();
    case Access::kChangeLinks:
      if (policy_.operators_may_change_links) return Status::ok();
      return permission_denied(cat(method, ": ", who,
                                   " has the operator role, and operators may not change links on "
                                   "this agent (--operators-may-change-links)"));
    case Access::kExport:
      if (policy_.operators_may_export) return Status::ok();
      return permission_denied(cat(method, ": ", who,
                                   " has the operator role, and operators may export only where "
                                   "the agent has an export folder (--export-dir)"));
    case Access::kControl:
      break;
  }
  return permission_denied(
      cat(method, ": needs the controller role; ", who, " has the operator role"));
}

Status Authorizer::check(const grpc::ServerContext& context, std::string_view method) const {
  return check(policy_.tls ? peer_identity(context) : std::nullopt, method);
}

std::string Authorizer::describe() const {
  if (!policy_.tls) {
    return cat("plain text: every caller is local and has the controller role",
               policy_.controllers.empty() && policy_.operators.empty()
                   ? ""
                   : " (the identities given need TLS and are ignored)");
  }
  std::string out = cat("controller role: ", list(policy_.controllers));
  if (default_controller_) {
    out += cat(" (the default: no ", policy_.controller_setting, " given)");
  }
  out += cat("; operator role: ", list(policy_.operators));
  if (!policy_.operators.empty()) {
    out += cat(" (read", policy_.operators_may_change_links ? ", change links" : "",
               policy_.operators_may_export ? ", export pcap" : "", ")");
  }
  return cat(out, "; any other certificate is refused");
}

std::optional<std::string> peer_identity(const grpc::ServerContext& context) {
  const auto auth = context.auth_context();
  if (!auth) return std::nullopt;
  const auto cn = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  if (cn.empty()) return std::nullopt;
  return std::string(cn.front().data(), cn.front().size());
}

PathRoot::PathRoot(std::string folder, std::string name, std::string setting)
    : name_(std::move(name)), setting_(std::move(setting)) {
  if (folder.empty()) return;
  // Absolute now: the messages name it so, and a later chdir cannot move it.
  std::error_code ec;
  fs::path absolute = fs::absolute(folder, ec).lexically_normal();
  if (ec) absolute = folder;
  if (!absolute.has_filename() && absolute.has_relative_path()) absolute = absolute.parent_path();
  folder_ = absolute.string();
}

Result<std::string> PathRoot::confine(const std::string& path) const {
  const std::string where = cat("the ", name_, " ", folder_, " (", setting_, ")");
  if (folder_.empty()) {
    return permission_denied(
        cat("'", path, "': no ", name_, " is configured on this agent (", setting_, ")"));
  }
  const fs::path p(path);
  if (!p.is_absolute()) {
    return permission_denied(cat("'", path, "' is not an absolute path inside ", where));
  }
  std::vector<fs::path> parts;
  for (const fs::path& part : p.relative_path()) {
    if (part == "..") {
      return permission_denied(cat("'", path, "' has a '..' component; paths stay inside ", where));
    }
    if (!part.empty() && part != ".") parts.push_back(part);
  }
  fs::path plain = p.root_path();
  for (const fs::path& part : parts) plain /= part;
  std::error_code ec;
  const fs::path root = fs::canonical(folder_, ec);
  if (ec) return unavailable(cat(where, ": ", ec.message()));
  // The longest leading part that exists, resolved; a dangling symlink
  // exists here and fails to resolve, so none is followed out later.
  fs::path existing = p.root_path();
  size_t i = 0;
  for (; i < parts.size(); ++i) {
    const fs::path next = existing / parts[i];
    if (!fs::exists(fs::symlink_status(next, ec))) break;
    existing = next;
  }
  fs::path resolved = fs::canonical(existing, ec);
  if (ec) {
    return permission_denied(
        cat("'", path, "': ", existing.string(), " cannot be resolved (", ec.message(), ")"));
  }
  for (; i < parts.size(); ++i) resolved /= parts[i];
  // Component by component: /srv/store2 is not inside /srv/store.
  if (std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end()).first !=
      root.end()) {
    const bool linked = resolved != plain;
    return permission_denied(
        cat("'", path, "' ",
            linked ? cat("(", resolved.string(), " with symlinks resolved) ") : std::string(),
            "is outside ", where));
  }
  return resolved.string();
}

}  // namespace amber::controller
