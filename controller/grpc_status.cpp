#include "controller/grpc_status.h"

#include <chrono>
#include <filesystem>

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

Result<Serving> serve_plaintext(const std::string& listen, grpc::Service* service) {
  AMBER_RETURN_IF_ERROR(check_plaintext_address(listen));
  const bool unix_socket = listen.rfind("unix:", 0) == 0;
  if (unix_socket) {
    std::filesystem::path socket = listen.substr(5);
    std::error_code ec;
    if (socket.has_parent_path()) std::filesystem::create_directories(socket.parent_path(), ec);
    std::filesystem::remove(socket, ec);
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  Serving serving;
  serving.server = builder.BuildAndStart();
  if (!serving.server || (!unix_socket && port == 0)) {
    return unavailable(cat("cannot listen on '", listen, "' (in use, or no permission to create it)"));
  }
  serving.address =
      unix_socket ? listen : listen.substr(0, listen.rfind(':') + 1) + std::to_string(port);
  return serving;
}

void stop_serving(grpc::Server* server) {
  if (server == nullptr) return;
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
}

}  // namespace amber::controller
