// Authorization on the agents (#16 defect 5): which caller may call which
// RPC, and where the paths a call names may lead. Both agents ask here;
// no handler decides for itself.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace grpc {
class ServerContext;
}

namespace amber::controller {

// What an RPC does to the agent; it decides the role a caller needs.
enum class Access {
  kRead,         // status, stats, frame listings, console lines
  kChangeLinks,  // link parameters
  kExport,       // pcap files into the export folder
  kControl,      // freeze, stop, save, restore, shift, surgery, frame watches
};

// The rule for `method` of `service` ("amber.agent.DelayNodeAgent",
// "Save"); nullopt when there is none: the call is refused.
std::optional<Access> rpc_access(std::string_view service, std::string_view method);

enum class Role { kNone, kOperator, kController };
std::string_view role_name(Role role);

// Who has which role on an agent. An identity is the subject CN of the
// client's certificate (mutual TLS); without TLS every caller is local (a
// UNIX socket or loopback) and has the controller role, as before roles.
struct AccessPolicy {
  bool tls = false;
  std::vector<std::string> controllers;  // every RPC
  std::vector<std::string> operators;    // kRead; kChangeLinks and kExport where allowed
  bool operators_may_change_links = false;
  bool operators_may_export = false;  // the agent has an export folder of its own
  // How each setting is spelt where it is configured, for the messages.
  std::string controller_setting = "--controller-identity";
  std::string operator_setting = "--operator-identity";
};

// The CN a TLS deployment gets the controller role from when it names none
// (the certificate amber-make-certs and the README's guide issue to it).
inline constexpr const char* kDefaultControllerIdentity = "controller";

class Authorizer {
 public:
  // With TLS and no controller identity, kDefaultControllerIdentity has the
  // role. Refused: an empty name, or one in both lists.
  static Result<Authorizer> create(std::string service, AccessPolicy policy);

  Role role_of(const std::optional<std::string>& identity) const;
  // OK, or PERMISSION_DENIED naming the method, the identity and what is
  // missing. `identity`: the peer's CN, nullopt when it presented none.
  Status check(const std::optional<std::string>& identity, std::string_view method) const;
  // The same for the caller of a call being served.
  Status check(const grpc::ServerContext& context, std::string_view method) const;

  // For the agent's start-up line: who has which role.
  std::string describe() const;

 private:
  Authorizer(std::string service, AccessPolicy policy, bool default_controller)
      : service_(std::move(service)),
        policy_(std::move(policy)),
        default_controller_(default_controller) {}

  std::string service_;
  AccessPolicy policy_;
  bool default_controller_;
};

// The subject CN of the certificate the caller presented; nullopt when it
// presented none (plain text).
std::optional<std::string> peer_identity(const grpc::ServerContext& context);

// A folder that the paths an agent's calls name must stay inside: the
// checkpoint store or the export folder.
class PathRoot {
 public:
  // `name` says what the folder is ("store") and `setting` how it is
  // configured ("--store"), for the messages. A relative folder is taken
  // from the working directory now. An empty folder: every path is refused.
  PathRoot(std::string folder, std::string name, std::string setting);

  // `path` with the symlinks of its existing part resolved, if that lies in
  // the folder (or is it). PERMISSION_DENIED naming the path and the folder
  // otherwise: a relative path, a ".." component, a path elsewhere, or a
  // symlink that leads out. The folder is resolved on every call: it may
  // be mounted after the agent started.
  Result<std::string> confine(const std::string& path) const;

  const std::string& folder() const { return folder_; }
  bool configured() const { return !folder_.empty(); }

 private:
  std::string folder_;
  std::string name_;
  std::string setting_;
};

}  // namespace amber::controller
