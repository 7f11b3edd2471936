#!/usr/bin/env python3
"""The same emulated link by amber and by the Linux peers available on this
machine, with the same traffic, printed as one table.

  amber   two network namespaces joined through amber-delaynode (veth +
          net_af_packet, one lcore)
  tbf     the same namespaces joined by one veth pair with a tbf qdisc on
          each end (rate only: tbf cannot delay)
  netem   the running kernel has no sch_netem: reported as not measurable
          here (see README)

For each link: iperf3 TCP throughput (and retransmits), ping RTT (avg and
mdev) and the RTT error against 2 x the configured delay.

usage: bench/dataplane.sh, or PYTHONPATH=python bench/dataplane_peers.py [BUILD_DIR]   (root)"""

import sys

from amberlab import lab

LINKS = [("100Mbit", 100e6, 20), ("1Gbit", 1e9, 50)]
SECONDS = 8


def measure(hosts, delay_ms):
    lab.ping(hosts, 0, hosts.addr[1], 3, interval=0.2)  # ARP
    p = lab.ping(hosts, 0, hosts.addr[1], 50, interval=0.02)
    j = lab.iperf3(hosts, server=1, client=0, seconds=SECONDS)
    bps = j["end"]["sum_received"]["bits_per_second"]
    retr = j["end"]["sum_sent"].get("retransmits", 0)
    # RTT while loaded: ping during a second iperf3 would need threads; the
    # idle RTT is what the configured delay is compared with.
    return {"mbps": bps / 1e6, "retr": retr, "rtt": p["avg_ms"], "loss": p["loss"],
            "rtt_err": (p["avg_ms"] - 2 * delay_ms) if p["avg_ms"] else None}


def amber_run(binary, rate, delay_ms):
    cfg = f'''node_id: "peers" link {{ name: "l" port_a: "net_af_packet0" port_b: "net_af_packet1"
  both {{ rate: "{rate}" delay: "{delay_ms}ms" queue_frames: 10000 }} }}'''
    with lab.TwoHosts("amb-bp", subnet=79) as h:
        with lab.DelayNode(binary, cfg, h.host_if, "amb-bp-node") as node:
            r = measure(h, delay_ms)
            r["drops"] = node.drops()
            return r


class DirectVeth(lab.TwoHosts):
    """ns1 <-> ns2 over one veth pair (no delay node)."""

    def __init__(self, prefix, subnet):
        self.prefix = prefix
        self.ns = [f"{prefix}-ns1", f"{prefix}-ns2"]
        self.ns_if = [f"{prefix}-v1", f"{prefix}-v2"]
        self.host_if = []
        self.addr = [f"10.{subnet}.0.1", f"10.{subnet}.0.2"]
        self.close()
        for n in self.ns:
            lab.sh("ip", "netns", "add", n)
        lab.sh("ip", "link", "add", self.ns_if[0], "netns", self.ns[0], "type", "veth",
               "peer", "name", self.ns_if[1], "netns", self.ns[1])
        for i in range(2):
            self.run(i, "ip", "addr", "add", f"{self.addr[i]}/24", "dev", self.ns_if[i])
            self.run(i, "ip", "link", "set", self.ns_if[i], "up")
            lab.offloads_off(self.ns_if[i], self.ns[i])

    def close(self):
        for n in self.ns:
            lab.sh("ip", "netns", "del", n, check=False)


def tbf_run(rate):
    with DirectVeth("amb-bt", 80) as h:
        for i in range(2):
            h.run(i, "tc", "qdisc", "add", "dev", h.ns_if[i], "root", "tbf", "rate", rate.lower(),
                  "burst", "64kb", "latency", "100ms")
        r = measure(h, 0)
        r["drops"] = 0
        for i in range(2):
            out = h.run(i, "tc", "-s", "qdisc", "show", "dev", h.ns_if[i]).stdout
            for tok in out.split("dropped")[1:]:
                r["drops"] += int(tok.split()[0].rstrip(","))
        return r


def main():
    binary = lab.bench_delaynode(sys.argv)
    if binary is None:
        return 1
    rows = []
    for rate, bps, delay in LINKS:
        a = amber_run(binary, rate, delay)
        rows.append((f"{rate}, {delay} ms", "amber (veth, af_packet, 1 lcore)", a))
        a0 = amber_run(binary, rate, 0)
        rows.append((f"{rate}, rate only", "amber (veth, af_packet, 1 lcore)", a0))
        t = tbf_run(rate)
        rows.append((f"{rate}, rate only", "tbf on the veth ends", t))
        rows.append((f"{rate}, {delay} ms", "netem", None))
    print(f"| link | emulator | iperf3 TCP {SECONDS}s (Mbit/s) | retransmits | ping RTT avg (ms) | RTT - 2 x delay (ms) | drops |")
    print("|---|---|---|---|---|---|---|")
    for link, who, r in rows:
        if r is None:
            print(f"| {link} | {who} | n/a: no sch_netem in this kernel | | | | |")
            continue
        err = f"{r['rtt_err']:+.2f}" if r["rtt_err"] is not None else "-"
        print(f"| {link} | {who} | {r['mbps']:.1f} | {r['retr']} | {r['rtt']:.2f} | {err} | {r['drops']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
