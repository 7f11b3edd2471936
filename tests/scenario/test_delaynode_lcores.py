#!/usr/bin/env python3
"""amber-delaynode spreads link directions over its worker lcores: two
links on net_null ports (which receive without end) with three lcores (the
main one and two workers, mapped onto this machine's two CPUs) both forward,
each direction on its own loop, and SIGTERM stops them all cleanly.

usage: test_delaynode_lcores.py BUILD_DIR
Needs root (hugepages); exits 77 (skipped) with the reason otherwise."""

import os
import shutil
import subprocess
import sys
import time
import unittest

from amberlab import lab

BUILD = None
# net_null hands out 64-byte frames as fast as a loop can take them: the
# pool is sized for such frames (an unlimited-rate direction would otherwise
# hold every mbuf and starve the others, as it would on a real port).
CONFIG = '''node_id: "lcores"
sizing_frame_bytes: 64
sizing_unlimited_rate: "20Gbit"
link { name: "one" port_a: "net_null0" port_b: "net_null1" both { delay: "1ms" } }
link { name: "two" port_a: "net_null2" port_b: "net_null3" both { delay: "1ms" rate: "1Gbit" } }
'''


class SpreadOverLcores(unittest.TestCase):
    def test_two_links_on_two_workers_both_forward(self):
        vdevs = []
        for i in range(4):
            vdevs += ["--vdev", f"net_null{i},size=64"]
        binary = os.path.join(BUILD, "delaynode", "amber-delaynode")
        with lab.DelayNode(binary, CONFIG, [], "amb-lc-node", lcores="0@0,1@1,2@1",
                           extra_eal=vdevs) as node:
            self.assertIn("2 link(s) on 2 worker(s)", node.output())
            directions = ("one/a_to_b", "one/b_to_a", "two/a_to_b", "two/b_to_a")
            first, t0 = node.telemetry("/amber/stats"), time.monotonic()
            last = {}

            def all_forwarded():
                last.update(node.telemetry("/amber/stats"))
                return all(last[d]["frames_out"] > first[d]["frames_out"] + 1000
                           for d in directions)

            lab.wait_for(all_forwarded, 10, "every direction to forward 1000 frames")
            lab.wait_for(lambda: time.monotonic() - t0 >= 0.5, 1, "half a second of traffic")
            second, t1 = node.telemetry("/amber/stats"), time.monotonic()
            for d in directions:
                self.assertGreater(second[d]["frames_out"], first[d]["frames_out"], d)
            # The rate-limited link holds to its rate: 1 Gbit/s of 64-byte
            # frames is at most 1.95 M frames/s.
            rate = (second["two/a_to_b"]["frames_out"] - first["two/a_to_b"]["frames_out"]) / (t1 - t0)
            self.assertLess(rate, 1.05e9 / (64 * 8) * 1.2)
        out = node.final_output
        self.assertEqual(node.proc.returncode, 0, out)
        self.assertIn("[final] two/b_to_a", out)


def thread_schedules(pid):
    """(policy, nice) of every thread of `pid`, by thread id: policy from
    sched_getscheduler, nice from /proc's stat (field 19)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (os.sched_getscheduler(int(tid)), int(fields[16]))
        except (OSError, IndexError):
            pass  # a thread that ended meanwhile
    return out


class WorkerScheduling(unittest.TestCase):
    """--worker-nice and --worker-priority change the workers' threads (the
    lcores that move frames), and only those."""

    def run_node(self, option, prefix, lcores="0@0,1@1"):
        vdevs = []
        for i in range(2):
            vdevs += ["--vdev", f"net_null{i},size=64"]
        config = CONFIG.split("link {")[0] + \
            'link { name: "one" port_a: "net_null0" port_b: "net_null1" both { delay: "1ms" rate: "100Mbit" } }\n'
        binary = os.path.join(BUILD, "delaynode", "amber-delaynode")
        return lab.DelayNode(binary, config, [], prefix, lcores=lcores, extra_eal=vdevs, app=option)

    def test_worker_nice_lowers_the_workers_nice_only(self):
        with self.run_node(["--worker-nice", "-5"], "amb-lc-nice") as node:
            lab.wait_for(lambda: "at nice -5" in node.output(), 10, "the worker's nice line")
            nices = [n for _, n in thread_schedules(node.proc.pid).values()]
            self.assertEqual(nices.count(-5), 1, nices)  # the one worker
            self.assertGreater(nices.count(0), 1, nices)  # everything else as it was

    def test_worker_priority_runs_the_workers_at_sched_fifo(self):
        with self.run_node(["--worker-priority", "3"], "amb-lc-fifo") as node:
            lab.wait_for(lambda: "at SCHED_FIFO 3" in node.output(), 10, "the worker's FIFO line")
            policies = [p for p, _ in thread_schedules(node.proc.pid).values()]
            self.assertEqual(policies.count(os.SCHED_FIFO), 1, policies)


class BadOptions(unittest.TestCase):
    def test_bad_options_stop_start_up_naming_the_option(self):
        binary = os.path.join(BUILD, "delaynode", "amber-delaynode")
        config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "config",
                              "examples", "links.textproto")
        prefix = "amb-lc-badopt"
        self.addCleanup(shutil.rmtree, f"/var/run/dpdk/{prefix}", True)
        for option, message in ((["--vhost-priority", "abc"], "--vhost-priority"),
                                (["--vhost-priority", "100"], "--vhost-priority"),
                                (["--stats-interval", "0"], "--stats-interval"),
                                (["--worker-priority", "100"], "--worker-priority"),
                                (["--worker-nice", "-21"], "--worker-nice"),
                                (["--frobnicate"], "unknown or incomplete option '--frobnicate'")):
            r = subprocess.run([binary, "-l", "0", "--no-pci", "--in-memory", "--file-prefix",
                                prefix, "--log-level",
                                "lib.eal:error", "--", "--config", config, *option],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, (option, r.stdout, r.stderr))
            self.assertIn(message, r.stderr, option)


def main():
    global BUILD
    BUILD, rc = lab.test_main(__doc__, tools=())
    return rc if rc is not None else lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
