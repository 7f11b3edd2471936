// An agent's lease (rpc/lease.h): it ends only when its expiry
// action worked; a failed one runs again (#16 defect 2).
#include "rpc/lease.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace amber::controller {
namespace {

using namespace std::chrono_literals;

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

int64_t in(std::chrono::milliseconds d) {
  return clock_sync::SystemClock::realtime_ns() +
         std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

TEST(LeaseTest, AFailedExpiryKeepsTheLeaseAndTriesAgainUntilItWorks) {
  OperationLock operations;
  std::atomic<int> calls{0};
  Lease lease(
      operations, [&] { return ++calls >= 3; }, /*retry_ns=*/10'000'000);
  lease.set(in(5ms));
  ASSERT_TRUE(wait_for([&] { return calls.load() >= 3; }, 5s)) << calls.load() << " tries";
  // The third try worked: the lease is over, nothing runs again.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), 3);
}

TEST(LeaseTest, EndedBeforeItsInstantNothingRuns) {
  OperationLock operations;
  std::atomic<int> calls{0};
  Lease lease(operations, [&] { return ++calls > 0; });
  lease.set(in(30ms));
  lease.set(0);
  std::this_thread::sleep_for(80ms);
  EXPECT_EQ(calls.load(), 0);
}

TEST(LeaseTest, EndedByAnActionThatFailedItDoesNotRunAgain) {
  // A resume from the controller during a failing retry ends the lease.
  OperationLock operations;
  std::atomic<int> calls{0};
  Lease* self = nullptr;
  Lease lease(
      operations,
      [&] {
        ++calls;
        self->set(0);
        return false;
      },
      10'000'000);
  self = &lease;
  lease.set(in(5ms));
  ASSERT_TRUE(wait_for([&] { return calls.load() >= 1; }, 5s));
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(calls.load(), 1);
}

}  // namespace
}  // namespace amber::controller
