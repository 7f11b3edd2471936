#include "core-checkpoint/frame_summary.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace amber::checkpoint {
namespace {

// Builds frames field by field, big-endian.
struct Bytes {
  std::vector<uint8_t> b;
  Bytes& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  Bytes& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  Bytes& u32(uint32_t v) {
    return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v));
  }
  Bytes& fill(size_t n, uint8_t v = 0) {
    b.insert(b.end(), n, v);
    return *this;
  }
  Bytes& ether(uint16_t type) {
    return u8(2).u8(0).u8(0).u8(0).u8(0).u8(2).u8(2).u8(0).u8(0).u8(0).u8(0).u8(1).u16(type);
  }
  Bytes& ipv4(uint8_t proto, uint16_t payload, uint32_t src = 0x0a000001,
              uint32_t dst = 0x0a000002) {
    return u8(0x45)
        .u8(0)
        .u16(static_cast<uint16_t>(20 + payload))
        .u16(1)
        .u16(0x4000)
        .u8(64)
        .u8(proto)
        .u16(0)
        .u32(src)
        .u32(dst);
  }
};

TEST(SummarizeFrame, TcpOverIpv4ShowsAddressesPortsFlagsAndLengths) {
  Bytes f;
  f.ether(0x0800)
      .ipv4(6, 20 + 100)
      .u16(5201)
      .u16(41234)
      .u32(1000)
      .u32(2000)
      .u8(0x50)
      .u8(0x12)
      .u16(512)
      .u16(0)
      .u16(0)
      .fill(100);
  EXPECT_EQ(summarize_frame(f.b),
            "IPv4 10.0.0.1:5201 > 10.0.0.2:41234 TCP [S.] seq=1000 ack=2000 win=512 len=100 "
            "(154 bytes)");
}

TEST(SummarizeFrame, UdpIcmpArpVlanAndIpv6) {
  Bytes udp;
  udp.ether(0x0800).ipv4(17, 8 + 10).u16(53).u16(3333).u16(18).u16(0).fill(10);
  EXPECT_EQ(summarize_frame(udp.b), "IPv4 10.0.0.1:53 > 10.0.0.2:3333 UDP len=10 (52 bytes)");

  Bytes icmp;
  icmp.ether(0x0800).ipv4(1, 8).u8(8).u8(0).u16(0).u16(7).u16(3);
  EXPECT_EQ(summarize_frame(icmp.b),
            "IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id=7 seq=3 (42 bytes)");

  Bytes arp;
  arp.ether(0x0806)
      .u16(1)
      .u16(0x0800)
      .u8(6)
      .u8(4)
      .u16(1)
      .fill(6, 0xaa)
      .u32(0x0a000001)
      .fill(6)
      .u32(0x0a000002);
  EXPECT_EQ(summarize_frame(arp.b), "ARP who-has 10.0.0.2 tell 10.0.0.1 (42 bytes)");

  Bytes vlan;
  vlan.ether(0x8100).u16(100).u16(0x0800).ipv4(17, 8).u16(1).u16(2).u16(8).u16(0);
  EXPECT_EQ(summarize_frame(vlan.b), "vlan 100 IPv4 10.0.0.1:1 > 10.0.0.2:2 UDP len=0 (46 bytes)");

  Bytes v6;
  v6.ether(0x86dd)
      .u32(0x60000000)
      .u16(20)
      .u8(6)
      .u8(64)
      .u16(0xfd00)
      .fill(13)
      .u8(1)
      .u16(0xfd00)
      .fill(13)
      .u8(2)
      .u16(80)
      .u16(5000)
      .u32(1)
      .u32(0)
      .u8(0x50)
      .u8(0x02)
      .u16(100)
      .u16(0)
      .u16(0);
  EXPECT_EQ(summarize_frame(v6.b),
            "IPv6 [fd00::1]:80 > [fd00::2]:5000 TCP [S] seq=1 ack=0 win=100 len=0 (74 bytes)");

  Bytes other;
  other.ether(0x88cc).fill(10);
  EXPECT_EQ(summarize_frame(other.b),
            "ethertype 0x88cc 02:00:00:00:00:01 > 02:00:00:00:00:02 (24 bytes)");
}

TEST(SummarizeFrame, TruncatedFramesAreDescribedNotOverread) {
  Bytes f;
  f.ether(0x0800)
      .ipv4(6, 20)
      .u16(5201)
      .u16(41234)
      .u32(1)
      .u32(2)
      .u8(0x50)
      .u8(0x10)
      .u16(1)
      .u16(0)
      .u16(0);
  EXPECT_EQ(summarize_frame(std::span(f.b).first(10)), "runt frame len=10");
  EXPECT_EQ(summarize_frame(std::span(f.b).first(20)), "IPv4 (truncated) (20 bytes)");
  EXPECT_EQ(summarize_frame(std::span(f.b).first(40)),
            "IPv4 10.0.0.1 > 10.0.0.2 TCP (truncated) (40 bytes)");
  // Every prefix, copied into an exactly sized buffer so a sanitizer or
  // guard page would see an overread.
  for (size_t n = 0; n <= f.b.size(); ++n) {
    std::vector<uint8_t> exact(f.b.begin(), f.b.begin() + static_cast<long>(n));
    EXPECT_FALSE(summarize_frame(exact).empty());
  }
}

TEST(SummarizeFrame, GarbageNeverCrashes) {
  std::mt19937_64 rng(7);
  const uint16_t types[] = {0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x1234};
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> junk(rng() % 128);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    if (junk.size() >= 14 && i % 2 == 0) {
      uint16_t t = types[rng() % 6];
      junk[12] = static_cast<uint8_t>(t >> 8);
      junk[13] = static_cast<uint8_t>(t);
      if (junk.size() > 14 && t == 0x0800) junk[14] = static_cast<uint8_t>(0x40 | (rng() & 0xf));
      if (junk.size() > 14 && t == 0x86dd) junk[14] = 0x60;
    }
    EXPECT_FALSE(summarize_frame(junk).empty());
  }
}

}  // namespace
}  // namespace amber::checkpoint
