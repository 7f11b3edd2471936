// Helpers for driving a pipe with frames from a fixed array (no allocation
// in the pipe, as in the dataplane) and collecting what leaves it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "link-emulator/pipe.h"

namespace amber::link::testing {

inline constexpr int64_t kMs = 1'000'000;
inline constexpr int64_t kUs = 1'000;

inline Pipe make_pipe(const PipeConfig& config) {
  auto pipe = Pipe::create(config);
  EXPECT_TRUE(pipe.is_ok()) << pipe.status().to_string();
  return std::move(pipe).value();
}

struct Departure {
  size_t index;          // which frame (position in the pool)
  int64_t departure_ns;  // virtual departure time
  bool operator==(const Departure&) const = default;
};

class FramePool {
 public:
  explicit FramePool(size_t n) : frames_(n) {}
  Frame& operator[](size_t i) { return frames_[i]; }
  size_t index_of(const Frame* f) const { return static_cast<size_t>(f - frames_.data()); }
  size_t size() const { return frames_.size(); }

 private:
  std::vector<Frame> frames_;
};

// Dequeues everything due at now, appending to out.
inline void drain(Pipe& pipe, FramePool& pool, int64_t now, std::vector<Departure>& out) {
  Frame* burst[32];
  unsigned n;
  while ((n = pipe.dequeue(now, burst, 32)) > 0) {
    for (unsigned i = 0; i < n; ++i)
      out.push_back({pool.index_of(burst[i]), burst[i]->departure_ns});
  }
}

// The frames a pipe holds, in for_each_frame() order, as handles for
// surgery and restores.
inline std::vector<Frame*> held_frames(const Pipe& pipe) {
  std::vector<Frame*> held;
  pipe.for_each_frame([&](const Frame& f) { held.push_back(const_cast<Frame*>(&f)); });
  return held;
}

// What a checkpoint restore does: a fresh pipe with from's state and held
// frames; from is left empty.
inline Pipe restore_into_fresh(Pipe& from) {
  Pipe to = make_pipe(from.config());
  to.set_state(from.state());
  std::vector<Frame*> held = held_frames(from);
  from.clear([](Frame&) {});
  for (Frame* f : held) EXPECT_TRUE(to.restore_frame(*f).is_ok());
  EXPECT_EQ(to.held_frames(), held.size());
  return to;
}

// Enqueues frames arriving at the given times (sorted) with the given
// length, polls the pipe at every arrival and at every event until empty.
inline std::vector<Departure> run(Pipe& pipe, FramePool& pool, const std::vector<int64_t>& arrivals,
                                  uint32_t length) {
  std::vector<Departure> out;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    drain(pipe, pool, arrivals[i], out);
    pool[i].length = length;
    pipe.enqueue(pool[i], arrivals[i]);
  }
  for (int64_t t; (t = pipe.next_event_ns()) != kNever;) drain(pipe, pool, t, out);
  return out;
}

}  // namespace amber::link::testing
