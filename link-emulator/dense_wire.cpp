#include "link-emulator/dense_wire.h"

#include <bit>

namespace amber::link {

DenseWire::DenseWire(uint32_t frames) {
  const uint32_t slots = std::bit_ceil(frames < 64 ? 64u : frames);
  slots_.reset(new Slot[slots]);
  runs_.reset(new Run[slots / 2]);
  slot_mask_ = slots - 1;
  run_mask_ = slots / 2 - 1;
  slot_capacity_ = slots;
  run_capacity_ = slots / 2;
}

bool DenseWire::remove(const Frame& frame, uint32_t& length) {
  uint64_t slot = slot_head_;
  for (uint64_t r = run_head_; r != run_tail_; ++r) {
    Run& run = runs_[r & run_mask_];
    for (uint32_t i = 0; i < run.frames; ++i, ++slot) {
      if (slots_[slot & slot_mask_].frame() != &frame) continue;
      length = slots_[slot & slot_mask_].length();
      // Close the gap: the slots behind move up one, as do the runs behind
      // a run left empty.
      for (uint64_t k = slot; k + 1 < slot_tail_; ++k) {
        slots_[k & slot_mask_] = slots_[(k + 1) & slot_mask_];
      }
      --slot_tail_;
      if (--run.frames == 0) {
        for (uint64_t k = r; k + 1 < run_tail_; ++k)
          runs_[k & run_mask_] = runs_[(k + 1) & run_mask_];
        --run_tail_;
      }
      return true;
    }
  }
  return false;
}

bool DenseWire::set_length(const Frame& frame, uint32_t length) {
  for (uint64_t k = slot_head_; k != slot_tail_; ++k) {
    Slot& s = slots_[k & slot_mask_];
    if (s.frame() != &frame) continue;
    if (Slot::misfit(&frame, length)) return false;
    s = Slot::of(s.frame(), length);
    return true;
  }
  return false;
}

}  // namespace amber::link
