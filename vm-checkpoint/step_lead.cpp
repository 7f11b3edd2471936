#include "vm-checkpoint/step_lead.h"

#include <algorithm>
#include <vector>

namespace amber::vm {

std::chrono::nanoseconds StepLead::lead() const {
  switch (policy_.mode) {
    case StepLeadPolicy::Mode::kOff:
      return std::chrono::nanoseconds(0);
    case StepLeadPolicy::Mode::kFixed:
      return policy_.fixed;
    case StepLeadPolicy::Mode::kAuto:
      break;
  }
  if (lags_.empty()) return std::chrono::nanoseconds(0);  // nothing measured: at the instant
  // One or two lags are no median: the first stop of a VM busy since its
  // boot once took 29 ms where the next took 0.6, and a lead learnt from it
  // alone stopped the next two checkpoints' VM 19 ms early. Until there are
  // three, the smallest, and no more than kFewLagsCap.
  if (lags_.size() < kMinLags) {
    const auto least = *std::min_element(lags_.begin(), lags_.end());
    return std::clamp(least, std::chrono::nanoseconds(0),
                      std::min<std::chrono::nanoseconds>(kFewLagsCap, policy_.cap));
  }
  std::vector<std::chrono::nanoseconds> sorted(lags_.begin(), lags_.end());
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  return std::clamp(sorted[sorted.size() / 2], std::chrono::nanoseconds(0), policy_.cap);
}

void StepLead::record(std::chrono::nanoseconds lag) {
  if (policy_.mode != StepLeadPolicy::Mode::kAuto || policy_.window == 0) return;
  lags_.push_back(lag);
  while (lags_.size() > policy_.window) lags_.pop_front();
}

}  // namespace amber::vm
