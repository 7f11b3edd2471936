#!/usr/bin/env python3
"""A link whose rate follows a schedule, between two network namespaces
(veth + net_af_packet): three segments of 50, 10 and 30 Mbit/s, 4 s each,
looping. iperf3 TCP through it delivers, segment by segment, the rate in
force (within 10 % of TCP's goodput at that rate); amberctl stats and the
telemetry socket say which segment runs and the rate it stands at; a
freeze stops the schedule where it stands and a thaw continues it.

usage: test_link_schedule_netns.py BUILD_DIR
Needs root (namespaces, hugepages); exits 77 (skipped) with the reason
otherwise."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from amberlab import lab

BUILD = None
SEGMENT_S = 4.0
RATES = [50e6, 10e6, 30e6]
# TCP's goodput at an Ethernet rate: 1448 bytes of payload per 1514-byte
# frame (timestamps on).
GOODPUT = 1448 / 1514
# Interval ends closer than this to a segment change are not counted: the
# queue drains or fills and TCP's window adapts for a few RTTs, and the
# iperf3 intervals are placed on the schedule to within the connect time.
MARGIN_S = 0.5
CONFIG = '''node_id: "schedule-test"
link {
  name: "lan"
  port_a: "net_af_packet0"
  port_b: "net_af_packet1"
  both {
    delay: "5ms"
    queue_frames: 200
    segment { duration: "4s" rate: "50Mbit" }
    segment { duration: "4s" rate: "10Mbit" }
    segment { duration: "4s" rate: "30Mbit" }
  }
}
'''


class ScheduledLinkBetweenNamespaces(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="amb-sched-")
        cls.sock = os.path.join(cls.dir, "agent.sock")
        cls.hosts = lab.TwoHosts("amb-sch", subnet=79)
        try:
            cls.node = lab.DelayNode(os.path.join(BUILD, "delaynode", "amber-delaynode"), CONFIG,
                                     cls.hosts.host_if, "amb-sch-node", agent=f"unix:{cls.sock}")
        except Exception:
            cls.hosts.close()
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise
        lab.ping(cls.hosts, 0, cls.hosts.addr[1], 2, interval=0.2)

    @classmethod
    def tearDownClass(cls):
        cls.node.close()
        cls.hosts.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def amberctl(self, *args):
        r = subprocess.run([os.path.join(BUILD, "amberctl", "amberctl"), "--agent",
                            f"unix:{self.sock}", *args], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def position(self):
        """(host monotonic s at which the current segment began, its index,
        the rate telemetry says is in force) for the data's direction."""
        t0 = time.monotonic()
        st = self.node.telemetry("/amber/stats")["lan/b_to_a"]
        t1 = time.monotonic()
        self.assertEqual(st["schedule"], "running", st)
        began = (t0 + t1) / 2 - st["schedule_segment_elapsed_ns"] / 1e9
        return began, st["schedule_segment"], st["rate_now_bps"]

    def test_1_iperf3_follows_each_segment(self):
        began, segment, rate_now = self.position()
        self.assertEqual(rate_now, RATES[segment])
        started = time.monotonic()
        # -R: the namespace host 1 sends, host 0 receives and reports the
        # intervals (receiver-side bytes, what the link delivered).
        j = lab.iperf3(self.hosts, server=1, client=0, seconds=14, reverse=True,
                       extra=("-i", "0.25"))
        self.assertNotIn("error", j, j.get("error"))
        per_segment = {i: [] for i in range(len(RATES))}
        for iv in j["intervals"]:
            s = iv["sum"]
            lo, hi = started + s["start"], started + s["end"]
            if s["start"] < 1.0:  # slow start
                continue
            k = int((lo - began) // SEGMENT_S)
            seg_lo, seg_hi = began + k * SEGMENT_S, began + (k + 1) * SEGMENT_S
            if lo < seg_lo + MARGIN_S or hi > seg_hi - MARGIN_S:
                continue
            per_segment[(segment + k) % len(RATES)].append(s["bytes"] * 8 / (s["end"] - s["start"]))
        report = {f"{RATES[i] / 1e6:.0f}Mbit": (round(sum(v) / len(v) / 1e6, 2) if v else None, len(v))
                  for i, v in per_segment.items()}
        print(f"goodput per segment (Mbit/s, intervals): {report}", file=sys.stderr)
        for i, values in per_segment.items():
            self.assertGreaterEqual(len(values), 4, report)
            got = sum(values) / len(values)
            want = RATES[i] * GOODPUT
            self.assertLess(abs(got / want - 1), 0.10, report)

    def test_2_stats_name_the_segment_and_its_rate(self):
        out = self.amberctl("stats")
        self.assertRegex(out, r"lan/b_to_a: .*\n.*\n    schedule running: segment [123] of 3, "
                              r"\S+ of 4s, pass \d+; now (50|10|30)Mbit/s, 5ms")
        reply = json.loads(self.amberctl("--json", "stats"))
        pipes = {p["pipe"]["direction"]: p for p in reply["pipes"]}
        sched = pipes["a_to_b"]["schedule"]
        self.assertEqual(sched["state"], "running")
        self.assertEqual(sched["segments"], 3)
        self.assertIn(int(pipes["a_to_b"]["rate_now_bps"]), [int(r) for r in RATES])

    def test_3_a_freeze_stops_the_schedule_where_it_stands(self):
        self.amberctl("freeze", "--in", "50ms")
        try:
            lab.wait_for(lambda: json.loads(self.amberctl("--json", "stats")).get("frozen"), 5,
                         "the node to freeze")
            first = self.node.telemetry("/amber/stats")["lan/b_to_a"]
            time.sleep(0.6)
            second = self.node.telemetry("/amber/stats")["lan/b_to_a"]
            for key in ("schedule_segment", "schedule_segment_elapsed_ns", "schedule_loops"):
                self.assertEqual(first[key], second[key], key)
        finally:
            self.amberctl("thaw")
        lab.wait_for(lambda: self.node.telemetry("/amber/stats")["lan/b_to_a"]
                     ["schedule_segment_elapsed_ns"] != second["schedule_segment_elapsed_ns"],
                     5, "the schedule to run on after the thaw")


def main():
    global BUILD
    BUILD, rc = lab.test_main(__doc__)
    if rc is not None:
        return rc
    prog = unittest.main(argv=[sys.argv[0], "-v"], exit=False)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
