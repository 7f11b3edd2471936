#include "common/units.h"

#include <gtest/gtest.h>

namespace amber {
namespace {

TEST(Units, Durations) {
  EXPECT_EQ(parse_duration_ns("20ms").value(), 20'000'000);
  EXPECT_EQ(parse_duration_ns("1.5s").value(), 1'500'000'000);
  EXPECT_EQ(parse_duration_ns(" 250us ").value(), 250'000);
  EXPECT_EQ(parse_duration_ns("5min").value(), 300'000'000'000);
  EXPECT_EQ(parse_duration_ns("2h").value(), 7'200'000'000'000);
  EXPECT_EQ(parse_duration_ns("100ns").value(), 100);
  EXPECT_EQ(parse_duration_ns("0").value(), 0);
  EXPECT_EQ(parse_duration_ns("-3ms").value(), -3'000'000);
  EXPECT_FALSE(parse_duration_ns("20").is_ok());  // a unit is required
  EXPECT_FALSE(parse_duration_ns("20 parsecs").is_ok());
  EXPECT_FALSE(parse_duration_ns("").is_ok());
  EXPECT_FALSE(parse_duration_ns("ms").is_ok());
  EXPECT_NE(parse_duration_ns("20 parsecs").status().message().find("parsecs"), std::string::npos);
}

TEST(Units, Rates) {
  EXPECT_EQ(parse_rate_bps("100Mbit").value(), 100'000'000u);
  EXPECT_EQ(parse_rate_bps("1Gbit/s").value(), 1'000'000'000u);
  EXPECT_EQ(parse_rate_bps("10gbps").value(), 10'000'000'000u);
  EXPECT_EQ(parse_rate_bps("2.5Gbit").value(), 2'500'000'000u);
  EXPECT_EQ(parse_rate_bps("1e6").value(), 1'000'000u);
  EXPECT_EQ(parse_rate_bps("unlimited").value(), 0u);
  EXPECT_FALSE(parse_rate_bps("-1Mbit").is_ok());
  EXPECT_FALSE(parse_rate_bps("fast").is_ok());
}

TEST(Units, BytesAndProbabilities) {
  EXPECT_EQ(parse_bytes("64KiB").value(), 65536u);
  EXPECT_EQ(parse_bytes("1500").value(), 1500u);
  EXPECT_EQ(parse_bytes("1MB").value(), 1'000'000u);
  EXPECT_DOUBLE_EQ(parse_probability("1%").value(), 0.01);
  EXPECT_DOUBLE_EQ(parse_probability("0.25").value(), 0.25);
  EXPECT_FALSE(parse_probability("101%").is_ok());
  EXPECT_FALSE(parse_probability("-0.1").is_ok());
  EXPECT_FALSE(parse_probability("nan").is_ok());
}

TEST(Units, Formatting) {
  EXPECT_EQ(format_duration_ns(20'000'000), "20ms");
  EXPECT_EQ(format_rate_bps(100'000'000), "100Mbit/s");
  EXPECT_EQ(format_rate_bps(0), "unlimited");
  EXPECT_EQ(format_bytes(12'500'000), "12.5MB");
}

TEST(Status, ContextAndNames) {
  Status s = invalid_argument("delay: negative");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.with_context("links.conf:3: ").to_string(),
            "invalid argument: links.conf:3: delay: negative");
  Result<int> r = s;
  EXPECT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  Result<int> v = 7;
  EXPECT_EQ(*v, 7);
}

}  // namespace
}  // namespace amber
