#include "rpc/grpc_status.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace amber::controller {

Status check_plaintext_address(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return Status::ok();
  // HOST:PORT with HOST a loopback address itself (127.0.0.0/8, [::1]) or
  // "localhost", never a name that merely starts like one (#16 defect 9).
  const size_t colon = address.rfind(':');
  if (colon != std::string::npos && colon + 1 < address.size()) {
    std::string host = address.substr(0, colon);
    if (host == "localhost") return Status::ok();
    in_addr v4{};
    if (::inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127) {
      return Status::ok();
    }
    in6_addr v6{};
    if (host.size() > 2 && host.front() == '[' && host.back() == ']' &&
        ::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6) == 1 &&
        IN6_IS_ADDR_LOOPBACK(&v6)) {
      return Status::ok();
    }
  }
  return invalid_argument(cat("listen address '", address,
                              "': without TLS an agent listens only on a UNIX socket "
                              "(unix:/path) or loopback (127.0.0.1:PORT, [::1]:PORT)"));
}

namespace {

Result<std::string> read_pem(const std::string& what, const std::string& path) {
  if (path.empty()) return invalid_argument(cat("TLS: the ", what, " file is not given"));
  std::ifstream in(path);
  if (!in) return not_found(cat("TLS: cannot read the ", what, " file '", path, "'"));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return invalid_argument(cat("TLS: the ", what, " file '", path, "' holds no PEM block"));
  }
  return text.str();
}

struct TlsPem {
  std::string ca, cert, key;
};

Result<TlsPem> read_tls(const TlsFiles& tls) {
  auto ca = read_pem("CA certificate", tls.ca);
  if (!ca) return ca.status();
  auto cert = read_pem("certificate", tls.cert);
  if (!cert) return cert.status();
  auto key = read_pem("private key", tls.key);
  if (!key) return key.status();
  return TlsPem{*std::move(ca), *std::move(cert), *std::move(key)};
}

int ms(std::chrono::milliseconds d) {
  return static_cast<int>(d.count());
}

grpc::ChannelArguments client_arguments(const Keepalive& keepalive) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms(keepalive.time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(keepalive.timeout));
  // Only while a call is open: an idle channel has nothing to lose.
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  // And for as long as it is open: by default a client stops pinging after
  // two pings with no data from it, so a stream quiet for longer would
  // not notice its agent vanish (trigger_stream_test).
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return args;
}

Result<Serving> start(const std::string& listen,
                      const std::shared_ptr<grpc::ServerCredentials>& credentials,
                      grpc::Service* service, const Keepalive& keepalive) {
  const bool unix_socket = listen.rfind("unix:", 0) == 0;
  if (unix_socket) {
    std::filesystem::path socket = listen.substr(5);
    std::error_code ec;
    if (socket.has_parent_path()) std::filesystem::create_directories(socket.parent_path(), ec);
    std::filesystem::remove(socket, ec);
  }
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(keepalive.time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(keepalive.timeout));
  // The client's pings are welcome at its pace (with room for jitter), not
  // taken for abuse: by default a server allows one per 5 minutes while it
  // sends nothing, and closes the connection after a few more.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             ms(keepalive.time / 2));
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterService(service);
  Serving serving;
  serving.server = builder.BuildAndStart();
  if (!serving.server || (!unix_socket && port == 0)) {
    return unavailable(
        cat("cannot listen on '", listen, "' (in use, or no permission to create it)"));
  }
  if (unix_socket) {
    // Owner and group (#16 defect 6), not whatever the umask gives.
    std::error_code ec;
    std::filesystem::permissions(
        listen.substr(5),
        std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
            std::filesystem::perms::group_read | std::filesystem::perms::group_write,
        ec);
    if (ec) {
      serving.server->Shutdown();
      return unavailable(cat("cannot set the mode of '", listen, "': ", ec.message()));
    }
  }
  serving.address =
      unix_socket ? listen : listen.substr(0, listen.rfind(':') + 1) + std::to_string(port);
  return serving;
}

}  // namespace

Result<Serving> serve_plaintext(const std::string& listen, grpc::Service* service,
                                const Keepalive& keepalive) {
  AMBER_RETURN_IF_ERROR(check_plaintext_address(listen));
  return start(listen, grpc::InsecureServerCredentials(), service, keepalive);
}

Result<Serving> serve(const std::string& listen, const TlsFiles& tls, grpc::Service* service,
                      const Keepalive& keepalive) {
  if (!tls.enabled()) return serve_plaintext(listen, service, keepalive);
  auto pem = read_tls(tls);
  if (!pem) return pem.status();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = pem->ca;
  options.pem_key_cert_pairs.push_back({pem->key, pem->cert});
  return start(listen, grpc::SslServerCredentials(options), service, keepalive);
}

Result<std::shared_ptr<grpc::Channel>> connect(const std::string& address, const TlsFiles& tls,
                                               const Keepalive& keepalive) {
  if (address.empty()) return invalid_argument("no address to connect to");
  const grpc::ChannelArguments args = client_arguments(keepalive);
  if (!tls.enabled()) {
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  auto pem = read_tls(tls);
  if (!pem) return pem.status();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pem->ca;
  options.pem_private_key = pem->key;
  options.pem_cert_chain = pem->cert;
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), args);
}

void stop_serving(grpc::Server* server) {
  if (server == nullptr) return;
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
}

}  // namespace amber::controller
