// The front of a pipe's delay line (frames serialized and propagating, in
// departure order), kept in two dense rings beside the frames rather than
// linked through them.
// Holding and releasing a frame touches only the rings: one 8-byte slot per
// frame (its handle and length) and one run per stretch of consecutive
// frames that share their timestamps (a burst received at one instant
// shares its arrival, and, without jitter, its departure). A dataplane that
// never writes a frame's Frame at arrival and never reads it at departure
// keeps its mbufs out of the cache.
//
// A frame's Frame is "written" when its fields already hold its stamps (the
// pipe moved it in from its list, where frames are written); otherwise the
// run holds them, and write_delay_line() puts them into the Frame when someone
// must see it (checkpoint visitors, queue surgery).
//
// Fixed capacity, allocated at construction (Pipe::reserve() swaps in a
// bigger one): push() refuses a frame when full, and the pipe keeps it in
// its list instead.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "link-emulator/frame.h"

namespace amber::link {

class DenseWire {
 public:
  // Stamps of an unwritten frame (its ready time equals its arrival: only
  // frames of an unlimited-rate pipe go unwritten).
  struct Stamps {
    int64_t arrival_ns = 0;
    int64_t extra_delay_ns = 0;
  };

  // Room for at least `frames` frames (rounded up to a power of two; runs:
  // half as many).
  explicit DenseWire(uint32_t frames);
  // A moved-from wire is empty, with no room.
  DenseWire(DenseWire&& other) noexcept { *this = std::move(other); }
  DenseWire& operator=(DenseWire&& other) noexcept {
    slots_ = std::move(other.slots_);
    runs_ = std::move(other.runs_);
    slot_mask_ = std::exchange(other.slot_mask_, 0);
    run_mask_ = std::exchange(other.run_mask_, 0);
    slot_capacity_ = std::exchange(other.slot_capacity_, 0);
    run_capacity_ = std::exchange(other.run_capacity_, 0);
    slot_head_ = std::exchange(other.slot_head_, 0);
    slot_tail_ = std::exchange(other.slot_tail_, 0);
    run_head_ = std::exchange(other.run_head_, 0);
    run_tail_ = std::exchange(other.run_tail_, 0);
    return *this;
  }

  uint32_t capacity() const { return slot_capacity_; }
  bool empty() const { return slot_head_ == slot_tail_; }
  uint64_t size() const { return slot_tail_ - slot_head_; }
  int64_t head_departure_ns() const { return runs_[run_head_ & run_mask_].departure_ns; }
  int64_t tail_departure_ns() const { return runs_[(run_tail_ - 1) & run_mask_].departure_ns; }

  // Appends a frame whose Frame holds its stamps (departure_ns included).
  bool push_written(Frame& frame, uint32_t length, int64_t departure_ns) {
    return push(frame, length, departure_ns, true, Stamps{});
  }
  bool push_unwritten(Frame& frame, uint32_t length, int64_t departure_ns, Stamps stamps) {
    return push(frame, length, departure_ns, false, stamps);
  }
  // n unwritten frames sharing their stamps, all or none.
  bool push_burst(Frame* const* frames, const uint32_t* lengths, unsigned n, int64_t departure_ns,
                  Stamps stamps) {
    if (size() + n > capacity()) return false;
    // The slots go in past the tail first; they count once all fit. The
    // two stretches (before and after the ring wraps) are plain arrays.
    uint64_t misfit = 0;
    const uint32_t start = static_cast<uint32_t>(slot_tail_) & slot_mask_;
    const unsigned first = std::min(n, slot_mask_ + 1 - start);
    Slot* to = &slots_[start];
    for (unsigned i = 0; i < first; ++i) {
      misfit |= Slot::misfit(frames[i], lengths[i]);
      to[i] = Slot::of(frames[i], lengths[i]);
    }
    to = &slots_[0] - first;
    for (unsigned i = first; i < n; ++i) {
      misfit |= Slot::misfit(frames[i], lengths[i]);
      to[i] = Slot::of(frames[i], lengths[i]);
    }
    if (misfit) return false;
    if (!extends_tail(departure_ns, false, stamps)) {
      if (runs_full()) return false;
      start_run(departure_ns, false, stamps);
    }
    runs_[(run_tail_ - 1) & run_mask_].frames += n;
    slot_tail_ += n;
    // The slots a few bursts on were last used one delay ago: fetch them
    // for writing ahead of time.
    __builtin_prefetch(&slots_[(slot_tail_ + kAhead) & slot_mask_], 1);
    return true;
  }

  // What arrivals[] holds for a frame whose Frame is written.
  static constexpr int64_t kWritten = INT64_MIN;

  // Makes `frame` hold what a delay-line frame holds: its length, stage and
  // departure, and unless it is already written, the stamps of its run.
  static void write_delay_line(Frame& frame, uint32_t length, int64_t departure_ns, bool written,
                               Stamps stamps) {
    frame.length = length;
    frame.stage = FrameStage::kDelayLine;
    frame.departure_ns = departure_ns;
    if (written) return;
    frame.express = false;
    frame.arrival_ns = stamps.arrival_ns;
    frame.ready_ns = stamps.arrival_ns;
    frame.extra_delay_ns = stamps.extra_delay_ns;
  }

  // Moves up to max frames departing at or before now into out (and their
  // departure times into departures, their arrival times into arrivals,
  // each if given: kWritten when the Frame holds it). Adds their lengths to
  // bytes.
  unsigned pop_due(int64_t now, Frame** out, int64_t* departures, unsigned max, uint64_t& bytes,
                   int64_t* arrivals = nullptr) {
    unsigned n = 0;
    while (n < max && run_head_ != run_tail_) {
      Run& run = runs_[run_head_ & run_mask_];
      if (run.departure_ns > now) break;
      const uint32_t take = run.frames < max - n ? run.frames : max - n;
      // The slots in one or two plain stretches (the ring may wrap).
      const uint32_t start = static_cast<uint32_t>(slot_head_) & slot_mask_;
      const uint32_t first = std::min(take, slot_mask_ + 1 - start);
      Frame** to = out + n;
      const Slot* from = &slots_[start];
      for (uint32_t i = 0; i < first; ++i) {
        to[i] = from[i].frame();
        bytes += from[i].length();
      }
      from = &slots_[0] - first;
      for (uint32_t i = first; i < take; ++i) {
        to[i] = from[i].frame();
        bytes += from[i].length();
      }
      if (departures) std::fill(departures + n, departures + n + take, run.departure_ns);
      if (arrivals) {
        std::fill(arrivals + n, arrivals + n + take,
                  run.written ? kWritten : run.stamps.arrival_ns);
      }
      slot_head_ += take;
      n += take;
      run.frames -= take;
      if (run.frames == 0) ++run_head_;
    }
    __builtin_prefetch(&slots_[(slot_head_ + kAhead) & slot_mask_]);
    return n;
  }

  // Every frame in departure order, its Frame written first: visit(Frame&).
  template <typename Visitor>
  void for_each(Visitor&& visit) const {
    uint64_t slot = slot_head_;
    for (uint64_t r = run_head_; r != run_tail_; ++r) {
      const Run& run = runs_[r & run_mask_];
      for (uint32_t i = 0; i < run.frames; ++i, ++slot) {
        const Slot s = slots_[slot & slot_mask_];
        write_delay_line(*s.frame(), s.length(), run.departure_ns, run.written, run.stamps);
        visit(*s.frame());
      }
    }
  }

  // Cold: queue surgery on a frame the wire holds. False if it holds none.
  bool remove(const Frame& frame, uint32_t& length);
  // False if the wire holds no such frame, or the length fits no slot.
  bool set_length(const Frame& frame, uint32_t length);
  // Takes `frame` and every frame behind it off the wire, in order, handing
  // each (written) to take(Frame&). False if the wire holds no such frame.
  template <typename Take>
  bool split_at(const Frame& frame, Take&& take) {
    uint64_t slot = slot_head_, r = run_head_;
    for (; r != run_tail_; ++r) {
      const Run& run = runs_[r & run_mask_];
      uint32_t i = 0;
      for (; i < run.frames && slots_[slot & slot_mask_].frame() != &frame; ++i) ++slot;
      if (i == run.frames) continue;
      // Found at slot, the i-th frame of run r.
      for (uint64_t k = slot, q = r, in_run = i; k != slot_tail_; ++k) {
        while (in_run == runs_[q & run_mask_].frames) ++q, in_run = 0;
        const Slot s = slots_[k & slot_mask_];
        const Run& run = runs_[q & run_mask_];
        write_delay_line(*s.frame(), s.length(), run.departure_ns, run.written, run.stamps);
        take(*s.frame());
        ++in_run;
      }
      slot_tail_ = slot;
      runs_[r & run_mask_].frames = i;
      run_tail_ = i == 0 ? r : r + 1;
      return true;
    }
    return false;
  }
  // Empties the wire, handing every frame (written) to release(Frame&).
  template <typename Release>
  void clear(Release&& release) {
    for_each([&](Frame& f) { release(f); });
    slot_head_ = slot_tail_ = 0;
    run_head_ = run_tail_ = 0;
  }

 private:
  // A frame's handle and length in one word: user-space addresses fit in
  // 48 bits (x86-64, AArch64), frames in 16. A frame that does not fit
  // waits in the pipe's list instead.
  struct Slot {
    uint64_t word;
    static uint64_t misfit(const Frame* f, uint32_t length) {
      return (reinterpret_cast<uintptr_t>(f) >> 48) | (length >> 16);
    }
    static Slot of(Frame* f, uint32_t length) {
      return {reinterpret_cast<uintptr_t>(f) | uint64_t{length} << 48};
    }
    Frame* frame() const { return reinterpret_cast<Frame*>(word & ((uint64_t{1} << 48) - 1)); }
    uint32_t length() const { return static_cast<uint32_t>(word >> 48); }
  };
  static constexpr unsigned kAhead = 64;  // slots: a few bursts
  struct Run {
    int64_t departure_ns;
    Stamps stamps;    // unwritten runs only
    uint32_t frames;  // still held
    bool written;
  };

  bool extends_tail(int64_t departure_ns, bool written, Stamps stamps) const {
    if (run_head_ == run_tail_) return false;
    const Run& last = runs_[(run_tail_ - 1) & run_mask_];
    return last.departure_ns == departure_ns && last.written == written &&
           (written || (last.stamps.arrival_ns == stamps.arrival_ns &&
                        last.stamps.extra_delay_ns == stamps.extra_delay_ns));
  }
  bool runs_full() const { return run_tail_ - run_head_ >= run_capacity_; }
  // Field by field into the ring: a Run built aside and copied in is read
  // back wider than it was written, which stalls the store forwarding.
  void start_run(int64_t departure_ns, bool written, Stamps stamps) {
    Run& run = runs_[run_tail_++ & run_mask_];
    run.departure_ns = departure_ns;
    run.stamps = stamps;
    run.frames = 0;
    run.written = written;
  }
  bool push(Frame& frame, uint32_t length, int64_t departure_ns, bool written, Stamps stamps) {
    if (size() >= capacity() || Slot::misfit(&frame, length)) return false;
    if (!extends_tail(departure_ns, written, stamps)) {
      if (runs_full()) return false;
      start_run(departure_ns, written, stamps);
    }
    ++runs_[(run_tail_ - 1) & run_mask_].frames;
    slots_[slot_tail_++ & slot_mask_] = Slot::of(&frame, length);
    return true;
  }

  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<Run[]> runs_;
  uint32_t slot_mask_ = 0;
  uint32_t run_mask_ = 0;
  uint32_t slot_capacity_ = 0;  // 0 once moved from
  uint32_t run_capacity_ = 0;
  uint64_t slot_head_ = 0, slot_tail_ = 0;
  uint64_t run_head_ = 0, run_tail_ = 0;
};

}  // namespace amber::link
