#include "vm-checkpoint/qmp_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace amber::vm {
namespace {

constexpr std::size_t kMaxEvents = 4096;
constexpr std::size_t kMaxLine = 64 << 20;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

WallTime event_time(const Json& message) {
  const Json& ts = message.value("timestamp", Json::object());
  auto s = ts.value("seconds", std::int64_t{0});
  auto us = ts.value("microseconds", std::int64_t{0});
  return WallTime(std::chrono::seconds(s) + std::chrono::microseconds(us));
}

// Reads one '\n'-terminated line before `deadline`, keeping extra bytes in `buf`.
Result<std::string> read_line(int fd, std::string& buf, Clock::time_point deadline,
                              const std::string& path) {
  while (true) {
    auto nl = buf.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      return line;
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return deadline_exceeded(cat("QMP socket ", path, ": no answer in time"));
    char chunk[4096];
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return unavailable(cat("QMP socket ", path, ": closed by QEMU during handshake"));
    buf.append(chunk, static_cast<std::size_t>(n));
  }
}

Status write_all(int fd, const std::string& text, int pass_fd, const std::string& path) {
  std::size_t off = 0;
  while (off < text.size()) {
    iovec iov{const_cast<char*>(text.data() + off), text.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (pass_fd >= 0 && off == 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return unavailable(cat("QMP socket ", path, ": write failed: ", std::strerror(errno)));
    }
    off += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status error_from_reply(const std::string& command, const Json& error) {
  std::string cls = error.value("class", "GenericError");
  std::string desc = error.value("desc", "");
  std::string message = cat("QMP command '", command, "' failed: ", cls, ": ", desc);
  if (cls == "CommandNotFound") return Status(ErrorCode::kUnimplemented, message);
  return failed_precondition(message);
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::connect(const std::string& socket_path,
                                                      Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return invalid_argument(cat("QMP socket path too long (", socket_path.size(),
                                " bytes, at most ", sizeof addr.sun_path - 1, "): ", socket_path));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  int fd = -1;
  int last_errno = 0;
  while (true) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return internal_error(cat("socket(AF_UNIX): ", std::strerror(errno)));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    last_errno = errno;
    ::close(fd);
    fd = -1;
    if (Clock::now() >= deadline) {
      return deadline_exceeded(
          cat("QMP socket ", socket_path, ": cannot connect in time: ", std::strerror(last_errno)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  std::string buf;
  auto fail = [&](Status s) {
    ::close(fd);
    return s;
  };
  Json greeting;
  while (true) {
    auto line = read_line(fd, buf, deadline, socket_path);
    if (!line) return fail(line.status().with_context("waiting for the QMP greeting: "));
    greeting = Json::parse(*line, nullptr, false);
    if (!greeting.is_discarded() && greeting.contains("QMP")) break;
    if (greeting.is_discarded()) {
      return fail(data_loss(cat("QMP socket ", socket_path, ": greeting is not JSON: ", *line)));
    }
  }
  Status w = write_all(fd,
                       R"({"execute":"qmp_capabilities","id":0})"
                       "\n",
                       -1, socket_path);
  if (!w) return fail(w);
  while (true) {
    auto line = read_line(fd, buf, deadline, socket_path);
    if (!line) return fail(line.status().with_context("negotiating QMP capabilities: "));
    Json reply = Json::parse(*line, nullptr, false);
    if (reply.is_discarded()) continue;
    if (reply.contains("error")) return fail(error_from_reply("qmp_capabilities", reply["error"]));
    if (reply.contains("return")) break;
  }
  int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) return fail(internal_error(cat("eventfd: ", std::strerror(errno))));
  std::unique_ptr<QmpClient> client(new QmpClient(fd, socket_path, wake));
  client->greeting_ = std::move(greeting);
  client->initial_input_ = std::move(buf);
  client->reader_ = std::thread([c = client.get()] { c->reader_loop(); });
  return client;
}

QmpClient::QmpClient(int fd, std::string socket_path, int wake_fd)
    : fd_(fd), socket_path_(std::move(socket_path)), wake_fd_(wake_fd) {}

QmpClient::~QmpClient() {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
  ::close(wake_fd_);
}

void QmpClient::reader_loop() {
  std::string buf = std::move(initial_input_);
  drain_lines(buf);
  char chunk[65536];
  while (true) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      close_with(
          internal_error(cat("QMP socket ", socket_path_, ": poll: ", std::strerror(errno))));
      return;
    }
    if (p[1].revents != 0) {
      close_with(Status(ErrorCode::kCancelled, cat("QMP client of ", socket_path_, " closed")));
      return;
    }
    ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      close_with(unavailable(
          cat("QMP socket ", socket_path_, " closed: QEMU went away (exited or was killed)")));
      return;
    }
    buf.append(chunk, static_cast<std::size_t>(n));
    drain_lines(buf);
    if (buf.size() > kMaxLine) {
      close_with(data_loss(cat("QMP socket ", socket_path_, ": line longer than ", kMaxLine)));
      return;
    }
  }
}

void QmpClient::drain_lines(std::string& buf) {
  std::size_t start = 0;
  for (auto nl = buf.find('\n'); nl != std::string::npos; nl = buf.find('\n', start)) {
    Json message = Json::parse(buf.begin() + static_cast<std::ptrdiff_t>(start),
                               buf.begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
    start = nl + 1;
    if (!message.is_discarded()) handle_message(std::move(message));
  }
  buf.erase(0, start);
}

void QmpClient::handle_message(Json message) {
  std::lock_guard lock(mu_);
  if (message.contains("event")) {
    QmpEvent e;
    e.seq = next_event_seq_++;
    e.name = message.value("event", "");
    e.data = message.value("data", Json::object());
    e.qemu_time = event_time(message);
    e.received = std::chrono::system_clock::now();
    events_.push_back(std::move(e));
    if (events_.size() > kMaxEvents) events_.pop_front();
  } else if (message.contains("id") && message["id"].is_number_unsigned()) {
    auto it = pending_.find(message["id"].get<std::uint64_t>());
    if (it == pending_.end()) return;  // The waiter gave up on it.
    it->second.done = true;
    it->second.reply = std::move(message);
  } else {
    return;
  }
  cv_.notify_all();
}

void QmpClient::close_with(Status status) {
  std::lock_guard lock(mu_);
  if (closed_.is_ok()) closed_ = std::move(status);  // the first reason stays
  cv_.notify_all();
}

bool QmpClient::connected() const {
  std::lock_guard lock(mu_);
  return closed_.is_ok();
}

Result<PendingReply> QmpClient::send(const std::string& command, const Json& arguments, int fd) {
  std::uint64_t id;
  {
    std::lock_guard lock(mu_);
    if (!closed_.is_ok()) return closed_;
    id = next_id_++;
    pending_.emplace(id, Slot{});
  }
  Json request = {{"execute", command}, {"id", id}};
  if (!arguments.empty()) request["arguments"] = arguments;
  std::string text = request.dump();
  text.push_back('\n');
  Status w;
  {
    std::lock_guard lock(write_mu_);
    w = write_all(fd_, text, fd, socket_path_);
  }
  if (!w) {
    // A stream socket that refuses a write has lost its peer: the monitor
    // is gone for every caller, so say so at once rather than when the
    // reader sees the end of the stream (a caller asks connected() to
    // decide whether to describe how QEMU ended).
    {
      std::lock_guard lock(mu_);
      pending_.erase(id);
    }
    close_with(w);
    return w;
  }
  return PendingReply(this, id, command);
}

Result<Json> PendingReply::wait(Clock::duration timeout) {
  if (client_ == nullptr) return failed_precondition("wait() on an empty PendingReply");
  return client_->wait_reply(id_, command_, timeout);
}

Result<Json> QmpClient::wait_reply(std::uint64_t id, const std::string& command,
                                   Clock::duration timeout) {
  std::unique_lock lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return failed_precondition(cat("no pending QMP command id ", id));
  bool ready = cv_.wait_for(lock, timeout, [&] { return it->second.done || !closed_.is_ok(); });
  if (!it->second.done) {
    pending_.erase(it);
    if (!ready) {
      return deadline_exceeded(
          cat("QMP command '", command, "' on ", socket_path_, ": no reply within ",
              std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count(), " ms"));
    }
    return closed_.with_context(cat("QMP command '", command, "'", ": "));
  }
  Json reply = std::move(it->second.reply);
  pending_.erase(it);
  if (reply.contains("error")) return error_from_reply(command, reply["error"]);
  return reply.value("return", Json::object());
}

Result<Json> QmpClient::execute(const std::string& command, const Json& arguments,
                                Clock::duration timeout) {
  auto pending = send(command, arguments);
  if (!pending) return pending.status();
  return pending->wait(timeout);
}

std::uint64_t QmpClient::next_event_seq() const {
  std::lock_guard lock(mu_);
  return next_event_seq_;
}

Result<QmpEvent> QmpClient::wait_event(const std::string& name, std::uint64_t from_seq,
                                       Clock::duration timeout) {
  std::unique_lock lock(mu_);
  const QmpEvent* found = nullptr;
  auto match = [&] {
    for (const QmpEvent& e : events_) {
      if (e.seq >= from_seq && e.name == name) {
        found = &e;
        return true;
      }
    }
    return !closed_.is_ok();
  };
  if (!cv_.wait_for(lock, timeout, match)) {
    return deadline_exceeded(
        cat("QMP socket ", socket_path_, ": no ", name, " event within ",
            std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count(), " ms"));
  }
  if (found == nullptr) return closed_.with_context(cat("waiting for QMP event ", name, ": "));
  return *found;
}

}  // namespace amber::vm
