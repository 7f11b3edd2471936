#include "link-emulator/pipe_config.h"

#include <gtest/gtest.h>

#include <cmath>

namespace amber::link {
namespace {

void expect_refused(const PipeConfig& c, const std::string& field) {
  Status s = c.validate();
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << field;
  EXPECT_NE(s.message().find(field), std::string::npos) << s.message();
}

TEST(PipeConfig, DefaultsAreValid) {
  EXPECT_TRUE(PipeConfig{}.validate().is_ok());
}

TEST(PipeConfig, InvalidParametersAreRefusedNamingTheField) {
  PipeConfig c;
  c.delay_ns = -1;
  expect_refused(c, "delay_ns");
  c = {};
  c.jitter_ns = -5;
  expect_refused(c, "jitter_ns");
  c = {};
  c.queue_limit_frames = 0;
  expect_refused(c, "queue_limit_frames");
  c = {};
  c.queue_limit_bytes = 0;
  expect_refused(c, "queue_limit_bytes");
  c = {};
  c.rate_bps = 1000;
  c.queue_limit_frames.reset();
  expect_refused(c, "queue_limit");
  c = {};
  c.loss = RandomLoss{1.5};
  expect_refused(c, "loss.random.probability");
  c = {};
  c.loss = RandomLoss{std::nan("")};
  expect_refused(c, "loss.random.probability");
  c = {};
  c.loss = GilbertElliottLoss{0.1, -0.1, 1, 0};
  expect_refused(c, "loss.gilbert_elliott.r");
  c = {};
  c.loss = MarkovLoss{0.7, 0.5, 0.1, 0.1, 0.5};
  expect_refused(c, "p13 + p14");
  c = {};
  c.duplicate = 2;
  expect_refused(c, "duplicate");
  c = {};
  c.corrupt = -0.5;
  expect_refused(c, "corrupt");
  c = {};
  c.reorder = 1.01;
  expect_refused(c, "reorder");
}

TEST(PipeConfig, DescribeNamesTheParameters) {
  PipeConfig c;
  c.rate_bps = 100'000'000;
  c.delay_ns = 20'000'000;
  c.loss = RandomLoss{0.01};
  std::string d = describe(c);
  EXPECT_NE(d.find("100Mbit/s"), std::string::npos) << d;
  EXPECT_NE(d.find("20ms"), std::string::npos) << d;
  EXPECT_NE(d.find("loss 1%"), std::string::npos) << d;
}

}  // namespace
}  // namespace amber::link
