// amber::Status <-> grpc::Status: the error codes are the same numbers.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace amber::controller {

inline grpc::Status to_grpc(const Status& s) {
  if (s.is_ok()) return grpc::Status::OK;
  return {static_cast<grpc::StatusCode>(s.code()), s.message()};
}

inline Status from_grpc(const grpc::Status& s, std::string_view context) {
  if (s.ok()) return Status::ok();
  return Status(static_cast<ErrorCode>(s.error_code()), std::string(s.error_message()))
      .with_context(context);
}

// A deadline `ns` from now for a client call.
inline void set_deadline(grpc::ClientContext& context, int64_t ns) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::nanoseconds(ns));
}

// One unary call of `method` on `stub`, its deadline `deadline_ns` from now:
//   unary(*stub, &Agent::Stub::Save, request, &reply, deadline_ns)
template <typename Stub, typename Request, typename Reply>
grpc::Status unary(Stub& stub,
                   grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
                   const Request& request, Reply* reply, int64_t deadline_ns) {
  grpc::ClientContext context;
  set_deadline(context, deadline_ns);
  return (stub.*method)(&context, request, reply);
}

// Plain-text gRPC is allowed only where nobody else can reach it: a UNIX
// socket or a loopback address. Anything else needs TLS (controller issue).
Status check_plaintext_address(const std::string& address);

// How either end of a connection notices a peer that vanished without
// closing it (host down, cable cut): while a call is open (a trigger
// stream may be quiet for hours) it pings every `time`, and closes the
// connection when a ping goes unanswered for `timeout`. The calls on it
// then end: UNAVAILABLE on the client, cancelled on the server (#16 defect
// 9: a trigger stream to a dead agent waited forever). Both ends must use
// the same `time` (a server refuses pings more frequent than it expects).
struct Keepalive {
  std::chrono::milliseconds time{10'000};
  std::chrono::milliseconds timeout{5'000};
};

struct Serving {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // as clients use it: with the chosen port when 0 was asked for
};

// Serves `service` on a plain-text address (checked as above); a stale
// UNIX socket of an earlier run is replaced, its folder created.
Result<Serving> serve_plaintext(const std::string& listen, grpc::Service* service,
                                const Keepalive& keepalive = {});

// Certificates (PEM file paths) for gRPC with TLS and mutual authentication:
// `ca` verifies the peer, `cert`/`key` present this end. All three or none.
struct TlsFiles {
  std::string ca, cert, key;
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Serves `service` on `listen`: with TLS (clients must present a
// certificate signed by tls.ca) when tls is enabled, otherwise plain text,
// which is allowed on loopback and UNIX sockets only.
Result<Serving> serve(const std::string& listen, const TlsFiles& tls, grpc::Service* service,
                      const Keepalive& keepalive = {});

// A channel to a server started by serve(): TLS with this end's
// certificate when tls is enabled, plain text otherwise.
Result<std::shared_ptr<grpc::Channel>> connect(const std::string& address, const TlsFiles& tls,
                                               const Keepalive& keepalive = {});

// Stops serving: calls in progress get 5 s to finish.
void stop_serving(grpc::Server* server);

}  // namespace amber::controller
