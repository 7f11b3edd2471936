// An asynchronous client of QEMU's machine protocol (QMP) on a UNIX socket:
// greeting and capability negotiation, commands with ids whose replies are
// matched to them, and asynchronous events (STOP, RESUME, MIGRATION,
// SHUTDOWN...). A reader thread owns the socket's input; every wait has a
// deadline; when QEMU goes away every waiter gets kUnavailable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"

namespace amber::vm {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using WallTime = std::chrono::system_clock::time_point;

struct QmpEvent {
  std::uint64_t seq = 0;  // Position in this client's event stream, from 0.
  std::string name;
  Json data;
  WallTime qemu_time;  // QEMU's own timestamp of the event (host realtime, µs).
  WallTime received;   // When the reader thread parsed it.
};

class QmpClient;

// The reply to one command, to be waited on later; valid while its client lives.
class PendingReply {
 public:
  PendingReply() = default;
  // The command's "return" value, or its "error" as kInternal/kInvalidArgument.
  Result<Json> wait(Clock::duration timeout);
  std::uint64_t id() const { return id_; }

 private:
  friend class QmpClient;
  PendingReply(QmpClient* client, std::uint64_t id, std::string command)
      : client_(client), id_(id), command_(std::move(command)) {}
  QmpClient* client_ = nullptr;
  std::uint64_t id_ = 0;
  std::string command_;
};

class QmpClient {
 public:
  // Connects to `socket_path` (retrying while the socket does not exist or
  // refuses, as QEMU creates it while starting), reads the greeting and
  // negotiates capabilities, all within `timeout`.
  static Result<std::unique_ptr<QmpClient>> connect(const std::string& socket_path,
                                                    Clock::duration timeout);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Sends a command without waiting; `fd` >= 0 is passed along with it
  // (SCM_RIGHTS), as `getfd` and `add-fd` expect.
  Result<PendingReply> send(const std::string& command, const Json& arguments = Json::object(),
                            int fd = -1);
  // send() then wait().
  Result<Json> execute(const std::string& command, const Json& arguments = Json::object(),
                       Clock::duration timeout = std::chrono::seconds(5));

  // Sequence number the next event will carry: take it before the command
  // whose event you then wait for, so no event is missed or seen twice.
  std::uint64_t next_event_seq() const;
  // The first event named `name` with seq >= `from_seq`.
  Result<QmpEvent> wait_event(const std::string& name, std::uint64_t from_seq,
                              Clock::duration timeout);
  // False once the socket closed (QEMU exited or closed the monitor).
  bool connected() const;
  const Json& greeting() const { return greeting_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  friend class PendingReply;
  struct Slot {
    bool done = false;
    Json reply;
  };
  QmpClient(int fd, std::string socket_path, int wake_fd);
  void reader_loop();
  void drain_lines(std::string& buf);
  void handle_message(Json message);
  void close_with(Status status);
  Result<Json> wait_reply(std::uint64_t id, const std::string& command, Clock::duration timeout);

  const int fd_;
  const std::string socket_path_;
  const int wake_fd_;  // eventfd that stops the reader thread.
  Json greeting_;
  std::string initial_input_;  // Read during the handshake, not yet parsed.
  std::thread reader_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mutex write_mu_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Slot> pending_;
  std::deque<QmpEvent> events_;  // Bounded: the oldest are dropped.
  std::uint64_t next_event_seq_ = 0;
  Status closed_;  // Not ok once the connection is gone.
};

}  // namespace amber::vm
