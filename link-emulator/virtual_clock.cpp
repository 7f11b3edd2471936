#include "link-emulator/virtual_clock.h"

#include <string>

namespace amber::link {

Status VirtualClock::schedule_freeze(int64_t at_real_ns, int64_t real_now_ns) {
  if (real_now_ns >= thaw_at_ns_) apply_thaw();
  if (freeze_at_ns_ != kNone) {
    return failed_precondition("a freeze is already scheduled or in effect (at " +
                               std::to_string(freeze_at_ns_) + " ns)");
  }
  if (at_real_ns < real_now_ns) {
    return failed_precondition("freeze instant " + std::to_string(at_real_ns) + " ns is " +
                               std::to_string(real_now_ns - at_real_ns) + " ns in the past");
  }
  freeze_at_ns_ = at_real_ns;
  return Status::ok();
}

Status VirtualClock::schedule_thaw(int64_t at_real_ns, int64_t real_now_ns) {
  if (real_now_ns >= thaw_at_ns_) apply_thaw();
  if (freeze_at_ns_ == kNone) return failed_precondition("not frozen and no freeze scheduled");
  if (thaw_at_ns_ != kNone) {
    return failed_precondition("a thaw is already scheduled (at " + std::to_string(thaw_at_ns_) +
                               " ns)");
  }
  if (at_real_ns < real_now_ns) {
    return failed_precondition("thaw instant " + std::to_string(at_real_ns) + " ns is " +
                               std::to_string(real_now_ns - at_real_ns) + " ns in the past");
  }
  if (at_real_ns < freeze_at_ns_) {
    return invalid_argument("thaw instant comes before the freeze instant");
  }
  thaw_at_ns_ = at_real_ns;
  return Status::ok();
}

Status VirtualClock::cancel_freeze(int64_t real_now_ns) {
  if (real_now_ns >= thaw_at_ns_) apply_thaw();
  if (freeze_at_ns_ == kNone) return failed_precondition("no freeze is scheduled");
  if (real_now_ns >= freeze_at_ns_) {
    return failed_precondition("the freeze is already in effect; thaw it instead");
  }
  freeze_at_ns_ = kNone;
  return Status::ok();
}

}  // namespace amber::link
