// Tier-2 tests: a real EAL (hugepages, --in-memory) with ring ports the test
// feeds and drains itself, and the delay node's worker on lcore 1.
#pragma once

#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <string>

namespace amber::dataplane::testing {

// A port whose rx side the test fills (`in`) and whose tx side the test
// reads (`out`).
struct RingPort {
  std::string name;
  rte_ring* in = nullptr;
  rte_ring* out = nullptr;
  uint16_t port = 0;
};

inline RingPort make_ring_port(const std::string& name) {
  RingPort p;
  p.name = "net_ring_" + name;  // the name the ring PMD gives the port
  p.in = rte_ring_create((name + "_in").c_str(), 8192, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  p.out = rte_ring_create((name + "_out").c_str(), 8192, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  EXPECT_NE(p.in, nullptr);
  EXPECT_NE(p.out, nullptr);
  int id = rte_eth_from_rings(name.c_str(), &p.in, 1, &p.out, 1, 0);
  EXPECT_GE(id, 0) << "rte_eth_from_rings " << name;
  p.port = static_cast<uint16_t>(id);
  return p;
}

inline void free_ring_port(RingPort& p) {
  // The delay node closes the ports it used; close what it did not.
  if (rte_eth_dev_is_valid_port(p.port)) {
    rte_eth_dev_stop(p.port);
    rte_eth_dev_close(p.port);
  }
  void* m;
  while (rte_ring_dequeue(p.in, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  while (rte_ring_dequeue(p.out, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  rte_ring_free(p.in);
  rte_ring_free(p.out);
}

}  // namespace amber::dataplane::testing
