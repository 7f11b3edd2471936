#!/usr/bin/env python3
"""How the delay node's worker waits when it has nothing to do, side by side:
`--idle-wait ports` (wait on the af_packet sockets, woken by a frame, a
command or the next departure) against `--idle-wait timer` (look at the
ports every idle_sleep, 10 us), each at SCHED_OTHER and at SCHED_FIFO
(`--worker-priority 50`), on the same link between two network namespaces
(veth + net_af_packet, one lcore) on this machine.

For each: the worker's CPU (share of a core) idle and under an iperf3 TCP
load, the load's goodput, ping's RTT against 2 x the delay on the idle
link (average and mdev: what a sleeping worker's wake-up adds), and how
many of the node's tx bursts under the load left 10 us or more, and 1 ms
or more, after their departure time (its own lateness counters).

usage: bench/dataplane.sh (its third table), or PYTHONPATH=python bench/dataplane_idle.py [BUILD_DIR]   (root)"""

import os
import re
import sys
import time

from amberlab import lab

RATE, DELAY_MS, SECONDS = "300Mbit", 10, 5
MODES = [("ports", 0), ("timer", 0), ("ports", 50), ("timer", 50)]


def worker_seconds(pid):
    """CPU seconds of the node's main thread (the main lcore's worker)."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def late_bursts(node):
    """(bursts, of them >= 10 us late, >= 1 ms late) over both directions."""
    total = late10 = late1ms = 0
    for d in node.telemetry("/amber/stats").values():
        buckets = d["tx_bursts_by_lateness"]  # below 50 ns, 100 ns, ... 10 us, 100 us, 1 ms, ...
        total += sum(buckets)
        late10 += sum(buckets[8:])
        late1ms += sum(buckets[10:])
    return total, late10, late1ms


def ping_stats(text):
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    return (float(m.group(2)), float(m.group(4))) if m else (float("nan"), float("nan"))


def run(binary, mode, priority):
    cfg = f'''node_id: "idle" link {{ name: "l" port_a: "net_af_packet0" port_b: "net_af_packet1"
  both {{ rate: "{RATE}" delay: "{DELAY_MS}ms" queue_frames: 10000 }} }}'''
    app = ("--idle-wait", mode, "--worker-priority", str(priority))
    with lab.TwoHosts("amb-bi", subnet=73) as h:
        with lab.DelayNode(binary, cfg, h.host_if, "amb-bi-node", app=app) as node:
            pid = node.proc.pid
            lab.ping(h, 0, h.addr[1], 3, interval=0.2)  # ARP
            r = {}
            t0, c0 = time.monotonic(), worker_seconds(pid)
            p = lab.ping(h, 0, h.addr[1], 100, interval=0.02)
            r["idle_cpu"] = (worker_seconds(pid) - c0) / (time.monotonic() - t0)
            avg, mdev = ping_stats(p["output"])
            r["idle_rtt"], r["idle_mdev"] = avg - 2 * DELAY_MS, mdev
            b0 = late_bursts(node)
            t0, c0 = time.monotonic(), worker_seconds(pid)
            j = lab.iperf3(h, server=1, client=0, seconds=SECONDS)
            r["load_cpu"] = (worker_seconds(pid) - c0) / (time.monotonic() - t0)
            r["mbps"] = j["end"]["sum_received"]["bits_per_second"] / 1e6
            b1 = late_bursts(node)
            r["bursts"], r["late10"], r["late1ms"] = (b1[i] - b0[i] for i in range(3))
            r["drops"] = node.drops()
            return r


def main():
    binary = lab.bench_delaynode(sys.argv)
    if binary is None:
        return 1
    print(f"link {RATE}, {DELAY_MS} ms each way, 1500-byte frames; 100 pings 20 ms apart on "
          f"the idle link, then iperf3 TCP {SECONDS} s; {os.cpu_count()} CPUs")
    print()
    print("| --idle-wait | worker | worker CPU idle | worker CPU loaded | goodput Mbit/s "
          "| idle RTT - 2 x delay, avg / mdev ms | tx bursts loaded | ≥ 10 us late "
          "| ≥ 1 ms late | drops |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for mode, prio in MODES:
        r = run(binary, mode, prio)
        who = f"SCHED_FIFO {prio}" if prio else "SCHED_OTHER"
        print(f"| {mode} | {who} | {r['idle_cpu']:.0%} | {r['load_cpu']:.0%} | {r['mbps']:.1f} "
              f"| {r['idle_rtt']:+.3f} / {r['idle_mdev']:.3f} | {r['bursts']} | {r['late10']} ({r['late10'] / max(r['bursts'], 1):.1%}) "
              f"| {r['late1ms']} | {r['drops']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
