// How long before an instant a QMP `stop` or `cont` must leave so that QEMU
// acts at the instant. QEMU's main loop takes the command when it next runs
// and only then stops the clock, pauses the vCPUs and the back ends and
// sends its STOP event; on a busy host that is milliseconds after the
// command was sent. The lead is the median lag (event − command sent) of a
// VM's last steps of the same kind.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>

namespace amber::vm {

struct StepLeadPolicy {
  enum class Mode {
    kOff,    // send at the instant
    kAuto,   // the median of the last `window` lags (fewer than 3: the least, at most 3 ms)
    kFixed,  // always `fixed`
  };
  Mode mode = Mode::kOff;
  std::chrono::nanoseconds fixed{0};
  std::size_t window = 9;
  // Upper bound of an automatic lead: a lag beyond it is a stall of the
  // host, not the VM's normal reaction time.
  std::chrono::nanoseconds cap{std::chrono::milliseconds(20)};
};

class StepLead {
 public:
  // Lags needed before an automatic lead is their median; with fewer it is
  // the smallest of them, at most kFewLagsCap.
  static constexpr std::size_t kMinLags = 3;
  static constexpr std::chrono::nanoseconds kFewLagsCap{3'000'000};
  explicit StepLead(StepLeadPolicy policy = {}) : policy_(policy) {}
  std::chrono::nanoseconds lead() const;
  // One step's lag from the command leaving to QEMU's event.
  void record(std::chrono::nanoseconds lag);
  const StepLeadPolicy& policy() const { return policy_; }

 private:
  StepLeadPolicy policy_;
  std::deque<std::chrono::nanoseconds> lags_;
};

}  // namespace amber::vm
