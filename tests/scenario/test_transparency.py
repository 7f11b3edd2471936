"""The transparency evaluation, shortened for CI: two QEMU VMs across a DPDK
delay node, iperf3 through it, a baseline run and an amber run with a few
synchronized checkpoints through the controller, then a restore of one of
them with the transfer continuing. Asserts what a checkpoint must never
do: drop a frame at the delay node or make TCP retransmit, and that the
restored experiment really carries on (bench/transparency/evaluate.py is
the full evaluation).

usage: test_transparency.py BUILD_DIR   (root; Debian's python3 with numpy)"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import unittest

import amberlab as lab

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "transparency"))

BUILD = None


class ShortEvaluation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import evaluate
        import report
        cls.dir = tempfile.mkdtemp(prefix="amb-ci-eval-")
        a = argparse.Namespace(build=BUILD, eval_dir=cls.dir, rate="100Mbit", delay="20ms",
                               loss="0", duration=16, interval=4.0, runs="baseline,amber",
                               restore=2, quiet=True)
        cls.params, cls.runs = evaluate.evaluate(a)
        cls.report_rc = report.main([cls.dir]) if hasattr(report, "main") else None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def iperf(self, run):
        with open(os.path.join(self.dir, "runs", run, "iperf3.json")) as f:
            return json.load(f)

    def test_amber_checkpoints_drop_no_frame(self):
        amber = self.runs["amber"]
        self.assertEqual(len(amber["checkpoints"]), 3)
        self.assertEqual(sum(amber["delaynode"]["dropped"].values()), 0, amber["delaynode"])
        for c in amber["checkpoints"]:
            self.assertEqual(c["delaynode_dropped_around"], 0, c)
        self.assertGreater(amber["delaynode"]["frames_out"], 10000)

    def test_each_vm_stops_and_resumes_its_rings_around_each_checkpoint(self):
        # The node's link log shows every VM's vhost-user rings down after
        # the instant and up again after QEMU's RESUME, within a second
        # (1 ms of slack: the instants are master time, the log the node's
        # CLOCK_REALTIME).
        for c in self.runs["amber"]["checkpoints"]:
            self.assertEqual(set(c["vms"]), {"vm1", "vm2"}, c)
            for vm, v in c["vms"].items():
                self.assertGreater(v["rings_down_ns"], c["freeze_ns"] - 10**6, (vm, c))
                self.assertLess(v["rings_down_ns"], c["resume_ns"], (vm, c))
                self.assertGreater(v["rings_up_ns"], v["resume_ns"] - 10**6, (vm, c))
                self.assertLess(v["rings_up_ns"] - v["resume_ns"], 10**9, (vm, c))

    def test_amber_checkpoints_cause_no_retransmit(self):
        j = self.iperf("amber")
        self.assertNotIn("error", j, j.get("error"))
        self.assertEqual(j["end"]["sum_sent"]["retransmits"], 0)
        self.assertGreater(j["end"]["sum_received"]["bytes"], 10_000_000)

    def test_restore_continues_the_transfer(self):
        restore = self.runs["restore"]
        cut = restore["checkpoints"][-1]
        self.assertTrue(cut["restore"])
        j = self.iperf("restore")
        self.assertNotIn("error", j, j.get("error"))
        # The restored iperf3 ran to its end: intervals after the restored
        # instant (8 s of guest time in) carried data.
        after = [i["sum"]["bytes"] for i in j["intervals"] if i["sum"]["start"] > 8.5]
        self.assertTrue(after, "no interval after the restore")
        self.assertGreater(min(after[:-1] or after), 0, after)
        self.assertGreaterEqual(j["end"]["sum_sent"]["seconds"], 15.5)
        self.assertEqual(sum(restore["delaynode"]["dropped"].values()), 0, restore["delaynode"])

    def test_the_report_is_written(self):
        for f in ("report.md", "eval.sqlite", "params.json", "timeline.json"):
            self.assertTrue(os.path.exists(os.path.join(self.dir, f)), f)
        with open(os.path.join(self.dir, "report.md")) as f:
            text = f.read()
        self.assertIn("Targets", text)
        self.assertTrue(os.listdir(os.path.join(self.dir, "plots")))


def main():
    global BUILD
    BUILD, code = lab.test_main(__doc__, tools=("ip", "ptp4l", "qemu-system-x86_64"))
    if code is not None:
        return code
    BUILD = os.path.abspath(BUILD)
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("SKIPPED: numpy is missing (Debian's python3-numpy; run with /usr/bin/python3)")
        return 77
    return lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
