#include "controller/grpc_status.h"

#include "common/strings.h"

namespace amber::controller {

Status check_plaintext_address(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return Status::ok();
  for (const char* loopback : {"127.", "localhost:", "[::1]:"}) {
    if (address.rfind(loopback, 0) == 0) return Status::ok();
  }
  return invalid_argument(cat("listen address '", address,
                              "': without TLS an agent listens only on a UNIX socket "
                              "(unix:/path) or loopback (127.0.0.1:PORT, [::1]:PORT)"));
}

}  // namespace amber::controller
