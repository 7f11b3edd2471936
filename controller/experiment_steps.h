// Helpers of the experiment's protocols (experiment*.cpp): timing,
// collecting the errors of a parallel step, polling progress.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/repeated_ptr_field.h>

#include "common/status.h"
#include "proto/controller.pb.h"

namespace amber::controller {

int64_t steady_ns();
// "a; b; c"
std::string join(const google::protobuf::RepeatedPtrField<std::string>& parts);
// The first error of a parallel step, with how many agents failed.
Status first_error(const std::vector<Status>& errors);

// Sends a progress message to `progress` (if any): a step, what it does,
// and for saves and restores the bytes done of a total.
inline void report(const std::function<void(const Progress&)>& progress, const char* step,
                   std::string detail, uint64_t done = 0, uint64_t total = 0) {
  if (!progress) return;
  Progress p;
  p.set_step(step);
  p.set_detail(std::move(detail));
  p.set_done_bytes(done);
  p.set_total_bytes(total);
  progress(p);
}

// Runs `poll` every 250 ms on a thread until the object goes away.
class Poller {
 public:
  explicit Poller(std::function<void()> poll)
      : thread_([this, poll = std::move(poll)] {
          std::unique_lock lock(mutex_);
          while (!wake_.wait_for(lock, std::chrono::milliseconds(250), [&] { return done_; })) {
            lock.unlock();
            poll();
            lock.lock();
          }
        }) {}
  ~Poller() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};


}  // namespace amber::controller
