// The step lead: how early a stop or cont leaves so that QEMU acts at the
// instant (vm-checkpoint/step_lead.h).
#include "vm-checkpoint/step_lead.h"

#include <gtest/gtest.h>

namespace amber::vm {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

StepLead automatic(std::size_t window = 5) {
  StepLeadPolicy p;
  p.mode = StepLeadPolicy::Mode::kAuto;
  p.window = window;
  return StepLead(p);
}

TEST(StepLead, OffAndFixedIgnoreTheLags) {
  StepLead off;
  off.record(milliseconds(3));
  EXPECT_EQ(off.lead(), nanoseconds(0));
  StepLeadPolicy p;
  p.mode = StepLeadPolicy::Mode::kFixed;
  p.fixed = milliseconds(2);
  StepLead fixed(p);
  fixed.record(milliseconds(9));
  EXPECT_EQ(fixed.lead(), milliseconds(2));
}

TEST(StepLead, AutoIsTheMedianOfTheLastLags) {
  StepLead lead = automatic(5);
  EXPECT_EQ(lead.lead(), nanoseconds(0));  // nothing measured yet: at the instant
  for (int ms : {1, 9, 2}) lead.record(milliseconds(ms));
  EXPECT_EQ(lead.lead(), milliseconds(2));  // one stall does not move it
  for (int ms : {4, 4, 4, 4}) lead.record(milliseconds(ms));
  // The window keeps the last five: 2, 4, 4, 4, 4.
  EXPECT_EQ(lead.lead(), milliseconds(4));
}

TEST(StepLead, AutoIsCappedAndNeverNegative) {
  StepLead lead = automatic(3);
  for (int i = 0; i < 3; ++i) lead.record(milliseconds(500));  // a host stalled for long
  EXPECT_EQ(lead.lead(), StepLeadPolicy{}.cap);
  StepLead early = automatic(3);
  for (int i = 0; i < 3; ++i) early.record(milliseconds(-1));  // QEMU's clock and ours disagree
  EXPECT_EQ(early.lead(), nanoseconds(0));
}

TEST(StepLead, AutoWaitsForThreeLagsBeforeTakingTheirMedian) {
  // A first stop that lagged 29 ms (the VM's first since boot), then 0.6 ms
  // ones: with one or two lags the lead is the least, at most 3 ms.
  StepLead lead = automatic(9);
  lead.record(milliseconds(29));
  EXPECT_EQ(lead.lead(), StepLead::kFewLagsCap);
  lead.record(std::chrono::microseconds(600));
  EXPECT_EQ(lead.lead(), std::chrono::microseconds(600));
  lead.record(std::chrono::microseconds(700));
  EXPECT_EQ(lead.lead(), std::chrono::microseconds(700));  // three: their median
  StepLead usual = automatic(9);
  usual.record(std::chrono::microseconds(1500));             // a VM that lags 1.5 ms
  EXPECT_EQ(usual.lead(), std::chrono::microseconds(1500));  // followed from the first
}

}  // namespace
}  // namespace amber::vm
