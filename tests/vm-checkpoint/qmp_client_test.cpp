// The QMP client against a scripted peer on a real UNIX socket: the
// protocol corner cases that a healthy QEMU does not produce on demand.
#include "vm-checkpoint/qmp_client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "common/strings.h"
#include "guest_fixture.h"
#include "vm-checkpoint/vm.h"

namespace amber::vm {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

constexpr const char* kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})"
    "\n";

class FakeQmp {
 public:
  explicit FakeQmp(const std::string& path) : path_(path) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
  }
  ~FakeQmp() {
    if (peer_ >= 0) ::close(peer_);
    ::close(listen_fd_);
  }
  void accept_peer() { peer_ = ::accept(listen_fd_, nullptr, nullptr); }
  void say(const std::string& text) {
    ASSERT_EQ(::write(peer_, text.data(), text.size()), ssize_t(text.size()));
  }
  std::string hear_line() {
    std::string line;
    char c;
    while (::read(peer_, &c, 1) == 1 && c != '\n') line.push_back(c);
    return line;
  }
  void hang_up() {
    ::close(peer_);
    peer_ = -1;
  }
  // Stops reading but keeps its end open: the client's next write fails
  // while its reader has not seen the end of the stream.
  void stop_reading() { ASSERT_EQ(::shutdown(peer_, SHUT_RD), 0); }
  // Greeting and capability negotiation as QEMU does them.
  void handshake() {
    accept_peer();
    say(kGreeting);
    Json caps = Json::parse(hear_line());
    EXPECT_EQ(caps["execute"], "qmp_capabilities");
    say(cat(R"({"return": {}, "id": )", caps["id"].dump(), "}\n"));
  }

 private:
  std::string path_;
  int listen_fd_ = -1;
  int peer_ = -1;
};

// A client connected to `peer`, which greets and negotiates as QEMU does.
Result<std::unique_ptr<QmpClient>> connect_after_handshake(FakeQmp& peer, const std::string& path) {
  std::thread server([&] { peer.handshake(); });
  auto client = QmpClient::connect(path, 2s);
  server.join();
  return client;
}

TEST(QmpClient, SocketThatNeverAnswersTimesOut) {
  TempDir dir;
  FakeQmp peer(dir.sub("qmp.sock"));  // Accepts (backlog) but never greets.
  const auto t0 = Clock::now();
  auto client = QmpClient::connect(dir.sub("qmp.sock"), 300ms);
  ASSERT_FALSE(client.is_ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kDeadlineExceeded) << client.status().to_string();
  EXPECT_NE(client.status().message().find("greeting"), std::string::npos);
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST(QmpClient, MissingSocketTimesOutNamingThePath) {
  TempDir dir;
  auto client = QmpClient::connect(dir.sub("absent.sock"), 100ms);
  ASSERT_FALSE(client.is_ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kDeadlineExceeded);
  EXPECT_NE(client.status().message().find("absent.sock"), std::string::npos);
}

TEST(QmpClient, RepliesMatchIdsEventsQueueAndHangUpIsReported) {
  TempDir dir;
  FakeQmp peer(dir.sub("qmp.sock"));
  auto client = connect_after_handshake(peer, dir.sub("qmp.sock"));
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  QmpClient& qmp = **client;
  EXPECT_EQ(qmp.greeting()["QMP"]["version"]["qemu"]["major"], 7);

  // Two commands in flight, answered in reverse order, with an event between.
  const auto seq = qmp.next_event_seq();
  auto a = qmp.send("query-status");
  auto b = qmp.send("query-name");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  Json ca = Json::parse(peer.hear_line());
  Json cb = Json::parse(peer.hear_line());
  EXPECT_EQ(ca["execute"], "query-status");
  peer.say(cat(R"({"return": {"name": "amb"}, "id": )", cb["id"].dump(), "}\n"));
  peer.say(
      R"({"event": "STOP", "data": {}, "timestamp": {"seconds": 1700000000, "microseconds": 250}})"
      "\n");
  peer.say(
      cat(R"({"return": {"status": "paused", "running": false}, "id": )", ca["id"].dump(), "}\n"));
  auto ra = a->wait(1s);
  auto rb = b->wait(1s);
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  EXPECT_EQ((*ra)["status"], "paused");
  EXPECT_EQ((*rb)["name"], "amb");
  auto stop = qmp.wait_event("STOP", seq, 1s);
  ASSERT_TRUE(stop.is_ok()) << stop.status().to_string();
  EXPECT_EQ(stop->qemu_time.time_since_epoch(),
            std::chrono::seconds(1700000000) + std::chrono::microseconds(250));
  // Seen events are not seen again from a later sequence number.
  EXPECT_EQ(qmp.wait_event("STOP", stop->seq + 1, 50ms).status().code(),
            ErrorCode::kDeadlineExceeded);

  // An error reply becomes a Status naming the command and QEMU's text.
  auto c = qmp.send("migrate", {{"uri", "bogus:"}});
  ASSERT_TRUE(c.is_ok());
  Json cc = Json::parse(peer.hear_line());
  EXPECT_EQ(cc["arguments"]["uri"], "bogus:");
  peer.say(
      cat(R"({"error": {"class": "GenericError", "desc": "unknown migration protocol"}, "id": )",
          cc["id"].dump(), "}\n"));
  auto rc = c->wait(1s);
  ASSERT_FALSE(rc.is_ok());
  EXPECT_NE(rc.status().message().find("migrate"), std::string::npos);
  EXPECT_NE(rc.status().message().find("unknown migration protocol"), std::string::npos);

  // A command QEMU never answers times out; then QEMU goes away.
  auto d = qmp.send("query-migrate");
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->wait(100ms).status().code(), ErrorCode::kDeadlineExceeded);
  auto e = qmp.send("cont");
  ASSERT_TRUE(e.is_ok());
  peer.hang_up();
  auto re = e->wait(2s);
  EXPECT_EQ(re.status().code(), ErrorCode::kUnavailable) << re.status().to_string();
  EXPECT_NE(re.status().message().find("QEMU went away"), std::string::npos);
  EXPECT_FALSE(qmp.connected());
  EXPECT_EQ(qmp.send("stop").status().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(qmp.wait_event("RESUME", 0, 1s).status().code(), ErrorCode::kUnavailable);
}

// A write the monitor refuses (QEMU killed while a command goes out) ends
// the connection for every caller at once, before the reader sees the end
// of the stream: a save that fails there then says how QEMU ended.
TEST(QmpClient, RefusedWriteClosesTheConnection) {
  TempDir dir;
  FakeQmp peer(dir.sub("qmp.sock"));
  auto client = connect_after_handshake(peer, dir.sub("qmp.sock"));
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  QmpClient& qmp = **client;
  auto waiting = qmp.send("query-migrate");
  ASSERT_TRUE(waiting.is_ok());
  peer.stop_reading();
  auto refused = qmp.send("query-status");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), ErrorCode::kUnavailable) << refused.status().to_string();
  EXPECT_NE(refused.status().message().find("write failed"), std::string::npos);
  EXPECT_FALSE(qmp.connected());
  // The command already waiting learns it at once, not at its timeout.
  const auto t0 = Clock::now();
  EXPECT_EQ(waiting->wait(5s).status().code(), ErrorCode::kUnavailable);
  EXPECT_LT(Clock::now() - t0, 1s);
}

// The command line the library builds for each network attachment.
bool has(const std::vector<std::string>& args, const std::string& needle) {
  for (const auto& a : args) {
    if (a.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(QemuCommandLine, VhostUserTapAndIncoming) {
  VmConfig c;
  c.run_dir = "/tmp/amb-vm-x";
  c.memory_mib = 128;
  c.nics = {{Nic::Kind::kVhostUser, "/tmp/amb-vm-x/vhost0.sock", "52:54:00:00:00:01", {}},
            {Nic::Kind::kTap, "amb-vm-tap0", "", {}}};
  auto tcg = qemu_command_line(c, Accel::kTcg, false);
  EXPECT_TRUE(has(tcg, "memory-backend-memfd,id=mem,size=128M,share=on"));
  EXPECT_TRUE(has(tcg, "vhost-user,id=net0,chardev=chrnet0"));
  EXPECT_TRUE(has(tcg, "socket,id=chrnet0,path=/tmp/amb-vm-x/vhost0.sock"));
  EXPECT_TRUE(has(tcg, "netdev=net0,romfile=,mac=52:54:00:00:00:01,vectors=0"));
  EXPECT_TRUE(has(tcg, "tap,id=net1,ifname=amb-vm-tap0,script=no,downscript=no"));
  EXPECT_TRUE(has(tcg, "guest_csum=off"));
  EXPECT_TRUE(has(tcg, "clock=vm"));
  EXPECT_FALSE(has(tcg, "-incoming"));
  auto kvm = qemu_command_line(c, Accel::kKvm, true);
  EXPECT_FALSE(has(kvm, "vectors=0"));
  EXPECT_FALSE(has(kvm, "hostfwd"));
  EXPECT_TRUE(has(kvm, "kvm"));
  EXPECT_TRUE(has(kvm, "-incoming"));
  EXPECT_TRUE(has(kvm, "-S"));
  EXPECT_FALSE(has(kvm, "vhost=on"));
  c.nics[1].vhost_net = true;
  EXPECT_TRUE(has(qemu_command_line(c, Accel::kKvm, false),
                  "tap,id=net1,ifname=amb-vm-tap0,script=no,downscript=no,vhost=on"));
  EXPECT_FALSE(has(tcg, "rx_queue_size"));
  c.nics[1].rx_queue_size = 1024;
  EXPECT_TRUE(
      has(qemu_command_line(c, Accel::kTcg, false), "netdev=net1,romfile=,rx_queue_size=1024"));
  EXPECT_FALSE(has(tcg, "enable=virtio_*"));
  c.qemu_trace = {"virtqueue_flush", "virtio_*"};
  auto traced = qemu_command_line(c, Accel::kTcg, false);
  EXPECT_TRUE(has(traced, "enable=virtqueue_flush"));
  EXPECT_TRUE(has(traced, "enable=virtio_*"));
  EXPECT_TRUE(has(traced, "enable=runstate_set"));  // amber's own stay
}

TEST(QemuCommandLine, UserNetworkForwardsLoopbackPortsOnly) {
  VmConfig c;
  c.run_dir = "/tmp/amb-vm-x";
  Nic mgmt;
  mgmt.forwards = {{PortForward::Protocol::kTcp, 17700, 7700},
                   {PortForward::Protocol::kUdp, 17700, 7700}};
  c.nics = {{Nic::Kind::kVhostUser, "/tmp/amb-vm-x/vhost0.sock", "", {}}, mgmt};
  auto args = qemu_command_line(c, Accel::kTcg, false);
  EXPECT_TRUE(has(args,
                  "user,id=net1,hostfwd=tcp:127.0.0.1:17700-:7700,"
                  "hostfwd=udp:127.0.0.1:17700-:7700"));
  EXPECT_TRUE(has(args, "vhost-user,id=net0"));
}

TEST(Instant, SleepUntilWakesAtTheInstant) {
  SleepUntilWaiter waiter;
  const auto target = std::chrono::system_clock::now() + 20ms;
  ASSERT_TRUE(waiter.wait_until(target).is_ok());
  const auto late = std::chrono::system_clock::now() - target;
  EXPECT_GE(late.count(), 0);
  EXPECT_LT(late, 100ms);  // Sanity only; precision is the benchmark's business.
}

}  // namespace
}  // namespace amber::vm
