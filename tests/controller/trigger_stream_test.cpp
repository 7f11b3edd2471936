// A trigger stream over real gRPC on loopback (#16 defect 9): it ends by
// its deadline, and when the agent's host goes silent (a relay between
// the two stops forwarding but keeps both connections open, as a dead
// host or a cut cable looks) both ends notice within the keepalive's time
// and timeout instead of waiting forever.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "controller/delaynode_client.h"
#include "proto/agent.grpc.pb.h"
#include "rpc/grpc_status.h"
#include "tests/controller/fake_agent.h"

namespace amber::controller {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

// A TCP relay on loopback to `target_port` that can go silent: after cut()
// it forwards nothing more and accepts nothing more, but closes nothing.
class Relay {
 public:
  explicit Relay(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = loopback(0);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::listen(listen_fd_, 8) == 0 &&
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    for (auto [a, b] : pairs_) {
      if (a < 0) continue;
      ::close(a);
      ::close(b);
    }
  }

  int port() const { return port_; }
  void cut() { cut_ = true; }

 private:
  static sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
  }

  void run() {
    while (!stop_) {
      std::vector<pollfd> fds;
      if (!cut_) {
        fds.push_back({listen_fd_, POLLIN, 0});
        for (auto [a, b] : pairs_) {
          fds.push_back({a, POLLIN, 0});
          fds.push_back({b, POLLIN, 0});
        }
      }
      if (fds.empty()) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      if (::poll(fds.data(), fds.size(), 10) <= 0) continue;
      if (fds[0].revents & POLLIN) accept_one();
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto& [a, b] = pairs_[(i - 1) / 2];
        if (a < 0 || forward(fds[i].fd, fds[i].fd == a ? b : a)) continue;
        ::close(a);  // one side closed: so does the relay (poll skips -1)
        ::close(b);
        a = b = -1;
      }
    }
  }

  void accept_one() {
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) return;
    const int upstream = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = loopback(target_port_);
    if (::connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(client);
      ::close(upstream);
      return;
    }
    pairs_.emplace_back(client, upstream);
  }

  // False once either side is closed.
  static bool forward(int from, int to) {
    char buf[16384];
    const ssize_t n = ::recv(from, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return n < 0 && errno == EAGAIN;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t k = ::send(to, buf + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
      if (k <= 0) return false;
      sent += k;
    }
    return true;
  }

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::vector<std::pair<int, int>> pairs_;  // the relay thread's only
  std::atomic<bool> cut_{false}, stop_{false};
  std::thread thread_;
};

// WatchFrames that reports nothing, as an agent's does while no frame
// matches, and ends when its call is cancelled.
class QuietAgent final : public agent::DelayNodeAgent::Service {
 public:
  grpc::Status WatchFrames(grpc::ServerContext* context, const agent::WatchFramesRequest*,
                           grpc::ServerWriter<agent::TriggerEvent>*) override {
    {
      std::lock_guard lock(mutex_);
      ++opened_;
    }
    changed_.notify_all();
    while (!context->IsCancelled()) std::this_thread::sleep_for(5ms);
    {
      std::lock_guard lock(mutex_);
      ++ended_;
      ended_at_ = Steady::now();
    }
    changed_.notify_all();
    return grpc::Status::CANCELLED;
  }

  bool wait_opened(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return opened_ > 0; });
  }
  // When the first stream ended on this side, if it did within `timeout`.
  std::optional<Steady::time_point> wait_ended(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [&] { return ended_ > 0; })) return std::nullopt;
    return ended_at_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int opened_ = 0, ended_ = 0;
  Steady::time_point ended_at_;
};

class TriggerStreamTest : public ::testing::Test {
 protected:
  // Serves the quiet agent, and a client of it through the relay.
  void start(int64_t watch_deadline_ns) {
    auto serving = serve("127.0.0.1:0", {}, &agent_, keepalive_);
    ASSERT_TRUE(serving.is_ok()) << serving.status().to_string();
    serving_ = std::move(serving).value();
    const int port = std::stoi(serving_.address.substr(serving_.address.rfind(':') + 1));
    relay_ = std::make_unique<Relay>(port);
    ASSERT_NE(relay_->port(), 0);
    auto channel = connect(cat("127.0.0.1:", relay_->port()), {}, keepalive_);
    ASSERT_TRUE(channel.is_ok());
    config::DelayNodeRef ref;
    ref.set_id("dn1");
    Durations durations;
    durations.watch_deadline_ns = watch_deadline_ns;
    client_ = std::make_unique<DelayNodeClient>(ref, agent::DelayNodeAgent::NewStub(*channel),
                                                durations, clock_);
    trigger_.set_name("t");
    trigger_.mutable_frame()->set_delay_node("dn1");
  }
  void TearDown() override {
    client_.reset();
    stop_serving(serving_.server.get());
    relay_.reset();
  }

  // Opens the stream (then cuts the relay if told) and waits for its end:
  // how long it lasted from then, nothing if it did not end in `timeout`.
  struct Outcome {
    std::optional<std::chrono::milliseconds> lasted;
    Status status;
  };
  Outcome watch_until_it_ends(std::chrono::milliseconds timeout,
                              std::optional<std::chrono::milliseconds> cut_after) {
    auto stream = client_->watch(trigger_, "ab");
    EXPECT_TRUE(stream.is_ok());
    if (!stream.is_ok()) return {};
    EXPECT_TRUE(agent_.wait_opened(5s));
    if (cut_after) {
      std::this_thread::sleep_for(*cut_after);
      relay_->cut();
    }
    const auto from = Steady::now();
    auto ended = std::async(std::launch::async, [&] {
      agent::TriggerEvent event;
      while ((*stream)->next(&event)) {
      }
      return Steady::now();
    });
    Outcome out;
    if (ended.wait_for(timeout) == std::future_status::ready) {
      out.lasted = std::chrono::duration_cast<std::chrono::milliseconds>(ended.get() - from);
    } else {
      (*stream)->cancel();  // still open: the test failed, end it
      ended.wait();
    }
    out.status = (*stream)->finish();
    return out;
  }

  Keepalive keepalive_{200ms, 200ms};
  QuietAgent agent_;
  Serving serving_;
  std::unique_ptr<Relay> relay_;
  fake::Clock clock_{0};
  std::unique_ptr<DelayNodeClient> client_;
  config::Trigger trigger_;
};

TEST_F(TriggerStreamTest, AStreamWhoseAgentWentSilentEndsOnBothSidesWithinTheKeepalive) {
  start(600'000'000'000);  // the deadline is far: keepalive must do it
  // Quiet for many pings first: they must go on as long as the stream.
  const auto cut_at = Steady::now() + 1500ms;
  Outcome out = watch_until_it_ends(5s, 1500ms);
  ASSERT_TRUE(out.lasted) << "the stream to a silent agent did not end";
  // A ping at most `time` after the last traffic, unanswered for `timeout`.
  EXPECT_LT(*out.lasted, 2s);
  EXPECT_EQ(out.status.code(), ErrorCode::kUnavailable) << out.status.to_string();
  // The agent's end (its WatchFrames, which holds a watch on the workers)
  // notices too, by its own pings.
  auto ended = agent_.wait_ended(5s);
  ASSERT_TRUE(ended) << "the agent kept watching for a controller that went silent";
  EXPECT_LT(*ended - cut_at, 3s);
}

// Pings on a quiet stream must not look like abuse to the agent (by
// default a server takes more than one ping per 5 minutes without data
// for it and closes the connection) nor stop after a few.
TEST_F(TriggerStreamTest, AQuietStreamToAnAgentThatIsThereStaysOpenThroughManyPings) {
  start(600'000'000'000);
  Outcome out = watch_until_it_ends(2s, std::nullopt);
  EXPECT_FALSE(out.lasted) << "ended after " << out.lasted->count()
                           << " ms: " << out.status.to_string();
  EXPECT_EQ(out.status.code(), ErrorCode::kCancelled) << out.status.to_string();
}

TEST_F(TriggerStreamTest, AStreamEndsByItsDeadline) {
  start(300'000'000);
  Outcome out = watch_until_it_ends(5s, std::nullopt);
  ASSERT_TRUE(out.lasted);
  EXPECT_LT(*out.lasted, 2s);
  EXPECT_EQ(out.status.code(), ErrorCode::kDeadlineExceeded) << out.status.to_string();
  EXPECT_TRUE(agent_.wait_ended(5s)) << "the agent's end of the stream did not end";
}

}  // namespace
}  // namespace amber::controller
