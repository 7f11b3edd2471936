// The management client against a fake ptp4l: a UNIX datagram server in the
// test that answers with crafted bytes. Malformed replies cannot be caused
// with the real ptp4l; the real one is exercised by ptp_pair_test.
#include "clock-sync/pmc_client.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "tests/clock-sync/captured.h"

namespace amber::clock_sync {
namespace {

using Bytes = std::vector<uint8_t>;
using namespace std::chrono_literals;

// A temporary directory removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/amb-cs-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Answers each request with whatever `respond` returns (possibly nothing,
// possibly several datagrams), on its own thread, until destroyed.
class FakePtp4l {
 public:
  using Responder = std::function<std::vector<Bytes>(const Bytes& request)>;

  FakePtp4l(const std::string& path, Responder respond) : path_(path), respond_(respond) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakePtp4l() {
    stop_ = true;
    thread_.join();
    close(fd_);
    unlink(path_.c_str());
  }
  int requests() const { return requests_; }
  // Waits until `n` replies were sent; false after `timeout`.
  bool wait_replies(int n, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (replies_ < n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 20) <= 0) continue;
      Bytes request(1500);
      sockaddr_un from{};
      socklen_t from_len = sizeof from;
      const ssize_t got = recvfrom(fd_, request.data(), request.size(), 0,
                                   reinterpret_cast<sockaddr*>(&from), &from_len);
      if (got <= 0) continue;
      request.resize(size_t(got));
      ++requests_;
      for (const Bytes& reply : respond_(request)) {
        sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), from_len);
        ++replies_;
      }
    }
  }

  std::string path_;
  Responder respond_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> replies_{0};
  std::thread thread_;
};

uint16_t id_of(const Bytes& msg) {
  return uint16_t((msg[52] << 8) | msg[53]);
}

Bytes answering(Bytes reply, const Bytes& request) {
  reply[30] = request[30];
  reply[31] = request[31];
  return reply;
}

// A well-behaved ptp4l, answering each of the four requests amber makes.
std::vector<Bytes> well_behaved(const Bytes& request) {
  switch (id_of(request)) {
    case 0x2001:
      return {answering(captured::kCurrentReply, request)};
    case 0x2002:
      return {answering(captured::kParentReply, request)};
    case 0x2004:
      return {answering(captured::kPortReply, request)};
    case 0xC000:
      return {answering(captured::kTimeStatusReply, request)};
  }
  return {};
}

class PmcClientTest : public ::testing::Test {
 protected:
  std::unique_ptr<PmcClient> client(int64_t timeout_ns = 200'000'000) {
    auto c = PmcClient::create({server_path(), "", timeout_ns, 0});
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return c.is_ok() ? std::move(c).value() : nullptr;
  }
  std::string server_path() const { return dir_.path() + "/ptp4l.sock"; }
  TempDir dir_;
};

TEST_F(PmcClientTest, ReadsASnapshot) {
  FakePtp4l server(server_path(), well_behaved);
  auto c = client();
  ASSERT_TRUE(c);
  auto snap = c->snapshot();
  ASSERT_TRUE(snap.is_ok()) << snap.status().to_string();
  EXPECT_EQ(snap->time_status.master_offset_ns, 456);
  EXPECT_EQ(snap->current.steps_removed, 1);
  EXPECT_EQ(snap->port.state, PortState::kUncalibrated);
  EXPECT_FALSE(snap->servo_locked());
  EXPECT_EQ(clock_identity_string(snap->parent.grandmaster_identity), "de66dd.fffe.594df2");
  EXPECT_EQ(server.requests(), 4);
  // The client's own socket goes away with it.
  const std::string local = c->local_path();
  EXPECT_TRUE(std::filesystem::exists(local));
  c.reset();
  EXPECT_FALSE(std::filesystem::exists(local));
}

// A process killed before its destructor ran leaves its socket behind:
// the next client removes those of processes that no longer exist (and
// not those of live ones).
TEST_F(PmcClientTest, SocketsOfKilledProcessesAreRemoved) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto c = PmcClient::create({server_path(), "", 100'000'000, 0});
    _exit(c.is_ok() ? 0 : 1);  // no destructor: the socket stays
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  std::string left;
  for (const auto& e : std::filesystem::directory_iterator("/tmp")) {
    if (e.path().filename().string().starts_with("amb-cs-pmc." + std::to_string(child) + ".")) {
      left = e.path().string();
    }
  }
  ASSERT_FALSE(left.empty()) << "the killed client's socket was not left in /tmp";
  auto mine = client();
  ASSERT_TRUE(mine);
  EXPECT_FALSE(std::filesystem::exists(left));
  auto second = client();
  ASSERT_TRUE(second);
  EXPECT_TRUE(std::filesystem::exists(mine->local_path())) << "a live process keeps its socket";
}

TEST_F(PmcClientTest, MissingSocketIsAClearErrorNotAHang) {
  auto c = client(5'000'000'000);
  ASSERT_TRUE(c);
  const auto start = std::chrono::steady_clock::now();
  auto r = c->current_data_set();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << "waited for the 5 s timeout";
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(r.status().message().find(server_path()), std::string::npos);
  EXPECT_NE(r.status().message().find("is ptp4l running with this --uds_address?"),
            std::string::npos)
      << r.status().message();
}

TEST_F(PmcClientTest, SocketLeftByADeadPtp4lIsAClearError) {
  // ptp4l killed with SIGKILL leaves its socket file behind.
  const int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, server_path().c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(fd);
  ASSERT_TRUE(std::filesystem::exists(server_path()));
  auto c = client();
  ASSERT_TRUE(c);
  auto r = c->port_data_set();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(r.status().message().find("Connection refused (is ptp4l running"), std::string::npos)
      << r.status().message();
}

TEST_F(PmcClientTest, SilentServerTimesOut) {
  FakePtp4l server(server_path(), [](const Bytes&) { return std::vector<Bytes>{}; });
  auto c = client(150'000'000);
  ASSERT_TRUE(c);
  const auto start = std::chrono::steady_clock::now();
  auto r = c->time_status();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kDeadlineExceeded);
  EXPECT_EQ(r.status().message(),
            "GET TIME_STATUS_NP: no reply from ptp4l at " + server_path() + " within 150 ms");
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1s);
}

TEST_F(PmcClientTest, TruncatedReplyIsRejected) {
  FakePtp4l server(server_path(), [](const Bytes& request) {
    Bytes reply = answering(captured::kCurrentReply, request);
    reply.resize(40);
    return std::vector<Bytes>{reply};
  });
  auto c = client();
  ASSERT_TRUE(c);
  auto r = c->current_data_set();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(r.status().message(),
            server_path() +
                ": CURRENT_DATA_SET reply: truncated, 40 bytes, shorter than the 52 of a "
                "management message with a TLV");
}

TEST_F(PmcClientTest, WrongSequenceIdIsRejected) {
  FakePtp4l server(server_path(), [](const Bytes& request) {
    Bytes reply = answering(captured::kCurrentReply, request);
    reply[31] ^= 0x55;
    return std::vector<Bytes>{reply};
  });
  auto c = client();
  ASSERT_TRUE(c);
  auto r = c->current_data_set();
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("(a reply to another request)"), std::string::npos)
      << r.status().message();
}

TEST_F(PmcClientTest, WrongTlvIsRejected) {
  // Asked for the port data set, answered with the current data set.
  FakePtp4l server(server_path(), [](const Bytes& request) {
    return std::vector<Bytes>{answering(captured::kCurrentReply, request)};
  });
  auto c = client();
  ASSERT_TRUE(c);
  auto r = c->port_data_set();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(),
            server_path() + ": PORT_DATA_SET reply: carries CURRENT_DATA_SET");
  // A snapshot stops at the first bad answer and says which.
  auto snap = c->snapshot();
  ASSERT_FALSE(snap.is_ok());
  EXPECT_NE(snap.status().message().find("TIME_STATUS_NP reply"), std::string::npos);
}

TEST_F(PmcClientTest, LateReplyToATimedOutRequestIsNotTakenForTheNextAnswer) {
  // The first request is answered too late; the second promptly.
  std::atomic<int> seen{0};
  FakePtp4l server(server_path(), [&seen](const Bytes& request) {
    if (seen++ == 0) std::this_thread::sleep_for(250ms);
    return well_behaved(request);
  });
  auto c = client(100'000'000);
  ASSERT_TRUE(c);
  auto first = c->current_data_set();
  ASSERT_FALSE(first.is_ok());
  EXPECT_EQ(first.status().code(), ErrorCode::kDeadlineExceeded);
  ASSERT_TRUE(server.wait_replies(1, 2s));  // the late reply is now queued at the client
  auto second = c->current_data_set();
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_DOUBLE_EQ(second->offset_from_master_ns, 456.0);
}

TEST_F(PmcClientTest, BadOptionsAreRefused) {
  EXPECT_EQ(PmcClient::create({"", "", 1, 0}).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(PmcClient::create({std::string(200, 'x'), "", 1, 0}).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PmcClient::create({server_path(), "", 0, 0}).status().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace amber::clock_sync
