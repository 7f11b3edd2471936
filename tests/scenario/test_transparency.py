"""The transparency evaluation, shortened for CI: two QEMU VMs across a DPDK
delay node, iperf3 through it, a baseline run, an amber run with a few
synchronized checkpoints through the controller and a naive run (VMs
paused at the same instants, the network running), then a restore of one
of amber's checkpoints with the transfer continuing. Asserts what a
checkpoint must never do: drop a frame at the delay node or make TCP
retransmit (within 1.5 s of guest time after it; on the testbed one is
tolerated if a frame QEMU dropped after the receiver's tap explains it:
see AMBER_RETRANSMITS_NEAR_CHECKPOINTS); that amber keeps the segments in flight on time where naive
delivers them early (one-way delay against the link's replay, per
checkpoint: amber's below 2 ms and a fifth of naive's; on the testbed,
where a VM's stop and resume land up to ±30 ms off the instant, naive's
earliest in-flight segments a link delay early, amber's within 5 ms of on
time, and amber within the link's round trip); and that the
restored experiment really carries on (amberlab.transparency.evaluate is
the full evaluation).

usage: test_transparency.py BUILD_DIR [--topology vhost|testbed]
(root; Debian's python3 with numpy). testbed: each VM on a tap in a host
namespace of its own, the node on af_packet ports; no restore there."""

import argparse
import json
import os
import shutil
import sys
import tempfile
import unittest

from amberlab import lab


BUILD = None
TOPOLOGY = "vhost"
# A checkpoint every 4 s, five per run: the medians then tolerate two
# checkpoints whose VM stopped or resumed far off its instant on this
# loaded machine.
DURATION = {"vhost": 24, "testbed": 24}
CHECKPOINTS = {"vhost": 5, "testbed": 5}
# amber's bound per topology (median over checkpoints of each one's median
# |OWD distortion|, ms), and by how much it must beat naive's.
BOUND_MS = {"vhost": 2.0, "testbed": 40.0}
BEATS_NAIVE_BY = {"vhost": 5, "testbed": None}
# On the testbed each frame crosses the kernel's veth, bridge and tap and
# QEMU's tap backend on the same two cores as both TCG guests and the node,
# and a VM's stop or resume lands up to ±30 ms off its instant at some
# checkpoints (QEMU run-state markers; the `pause` control, which saves
# nothing, shows the same): one checkpoint's median then reads −20 or +20
# ms, and a five-checkpoint median has read −0.5 to +20 ms (README,
# Performance), naive's −8.5 to −31 ms: medians a mere 10 ms apart failed
# one run in five. What stays is the direction: naive delivers the
# earliest of the segments in flight a link delay or more early at every
# checkpoint; amber does not. So there the test compares each run's
# earliest in-flight segments (5th percentile per checkpoint, median over
# checkpoints; four evaluations of 2026-12-05: naive 42-70 ms early,
# amber at most 1.2 ms) and bounds amber's median within the link's round
# trip.
EARLIEST_NAIVE_MS = 20.0
EARLIEST_AMBER_MS = 5.0
# The VM host's realtime_boost stays off here too: on the testbed it put
# every stop within 1.3 ms of T in one evaluation (README, Performance),
# but its one CI run had a retransmit in the amber run, which no run
# without it has shown.
REALTIME_BOOST = {"vhost": False, "testbed": False}
# The VM host's agent_realtime (its own scheduler and stepping threads at
# SCHED_FIFO, QEMU untouched) on the testbed: without it a step was once
# sent 49 ms after its instant; with it the latest in three evaluations was
# 0.11 ms late, and amber's pooled |OWD distortion| median was 0.36-0.87 ms
# against 0.44-6.43 ms without (README, Performance; repeat.py).
AGENT_REALTIME = {"vhost": False, "testbed": True}
# Retransmits within a checkpoint's reach that amber's run may have: none.
# On the testbed, QEMU's own tap back end drops the one frame it holds
# when the guest's receive ring is full as the VM stops (QEMU purges its
# queue on every stop; no counter anywhere sees it): the taps are captured
# there (evaluate --capture-taps), and a retransmit near a checkpoint is
# tolerated only if such a frame, which passed the receiver's tap and never
# reached its guest, explains it, one at most (two CI runs had one each
# before the guest's ring was made 1024 deep; README, Performance: #15).
AMBER_RETRANSMITS_NEAR_CHECKPOINTS = {"vhost": 0, "testbed": 0}
QEMU_DROPS_TOLERATED = {"vhost": 0, "testbed": 1}


class ShortEvaluation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from amberlab.transparency import analysis, evaluate, report
        cls.dir = tempfile.mkdtemp(prefix="amb-ci-eval-")
        restore = 2 if TOPOLOGY == "vhost" else 0
        a = argparse.Namespace(build=BUILD, eval_dir=cls.dir, rate="100Mbit", delay="20ms",
                               loss="0", duration=DURATION[TOPOLOGY], interval=4.0,
                               runs="baseline,amber,naive",
                               restore=restore, quiet=True, topology=TOPOLOGY,
                               realtime_boost=REALTIME_BOOST[TOPOLOGY],
                               agent_realtime=AGENT_REALTIME[TOPOLOGY],
                               capture_taps=TOPOLOGY == "testbed")
        cls.params, cls.runs = evaluate.evaluate(a)
        cls.report_rc = report.main([cls.dir]) if hasattr(report, "main") else None
        cls.packets = analysis.Evaluation(cls.dir).all_packet_effects()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def iperf(self, run):
        with open(os.path.join(self.dir, "runs", run, "iperf3.json")) as f:
            return json.load(f)

    def test_amber_checkpoints_drop_no_frame(self):
        amber = self.runs["amber"]
        self.assertEqual(len(amber["checkpoints"]), CHECKPOINTS[TOPOLOGY])
        self.assertEqual(sum(amber["delaynode"]["dropped"].values()), 0, amber["delaynode"])
        for c in amber["checkpoints"]:
            self.assertEqual(c["delaynode_dropped_around"], 0, c)
        self.assertGreater(amber["delaynode"]["frames_out"], 10000)

    def test_amber_keeps_the_segments_in_flight_on_time_naive_does_not(self):
        # Per checkpoint, the median one-way-delay distortion of the data
        # segments in flight at the instant (against the link's replay).
        from amberlab.transparency import analysis
        amber = analysis.per_window(self.packets, "amber", "checkpoint", "owd")
        naive = analysis.per_window(self.packets, "naive", "checkpoint", "owd")
        print(f"OWD distortion per checkpoint: amber {[round(x / 1e6, 2) for x in amber]} ms, "
              f"naive {[round(x / 1e6, 2) for x in naive]} ms", file=sys.stderr)
        self.assertEqual(len(amber), CHECKPOINTS[TOPOLOGY], self.packets)
        self.assertEqual(len(naive), CHECKPOINTS[TOPOLOGY])
        amber_ms = abs(float(np.median(amber))) / 1e6
        naive_ms = abs(float(np.median(naive))) / 1e6
        self.assertLess(amber_ms, BOUND_MS[TOPOLOGY])
        if BEATS_NAIVE_BY[TOPOLOGY]:
            # naive delivers them early: well below zero at most
            # checkpoints (a checkpoint whose resume finds the receiver's
            # rings slow to come back can show a late one).
            self.assertLess(float(np.median(naive)), -5e6, naive)
            self.assertLess(amber_ms, naive_ms / BEATS_NAIVE_BY[TOPOLOGY])
        else:
            # On the testbed naive's network delivers the in-flight
            # segments a link delay early, but its receiver, taking them
            # all from its tap at the resume, makes most of them late again
            # (transparency.paths: network leg -24.8 ms, receiver leg +21.4
            # at 300 Mbit/s), so naive's per-checkpoint medians swing from
            # -38 to +31 ms. Its earliest in-flight segments of each
            # checkpoint (the 5th percentile), median over checkpoints,
            # come a link delay or more early; amber's on time within the
            # noise.
            early = {run: -float(np.median(analysis.per_window(
                self.packets, run, "checkpoint", "owd", percentile=5))) / 1e6
                for run in ("amber", "naive")}
            print(f"earliest in-flight segments (5th percentile, median over checkpoints): "
                  f"early by {early} ms", file=sys.stderr)
            self.assertGreater(early["naive"], EARLIEST_NAIVE_MS, early)
            self.assertLess(early["amber"], EARLIEST_AMBER_MS, early)

    def test_each_vm_stops_and_resumes_its_rings_around_each_checkpoint(self):
        if TOPOLOGY != "vhost":
            self.skipTest("vhost-user rings exist only in the vhost topology")
        # The node's link log shows every VM's vhost-user rings down after
        # its guest clock stopped (the VM host's calibrated lead may stop
        # it a little before the instant, never by more than the lead's
        # 20 ms cap) and up again after QEMU's RESUME, within a second
        # (1 ms of slack: the instants are master time, the log the node's
        # CLOCK_REALTIME).
        for c in self.runs["amber"]["checkpoints"]:
            self.assertEqual(set(c["vms"]), {"vm1", "vm2"}, c)
            for vm, v in c["vms"].items():
                self.assertGreater(v["rings_down_ns"], c["freeze_ns"] - 20 * 10**6, (vm, c))
                if v.get("clock_stop_ns"):
                    self.assertGreater(v["rings_down_ns"], v["clock_stop_ns"] - 10**6, (vm, c))
                self.assertLess(v["rings_down_ns"], c["resume_ns"], (vm, c))
                self.assertGreater(v["rings_up_ns"], v["resume_ns"] - 10**6, (vm, c))
                self.assertLess(v["rings_up_ns"] - v["resume_ns"], 10**9, (vm, c))

    def test_amber_checkpoints_cause_no_retransmit(self):
        from amberlab.transparency import analysis
        j = self.iperf("amber")
        self.assertNotIn("error", j, j.get("error"))
        # No retransmit the sender sent within a checkpoint's reach (0.1 s
        # before its instant to 1.5 s after, guest time), none iperf3
        # counted that the probe did not locate, but one for a frame QEMU
        # dropped on the testbed (above). naive has hundreds there.
        # One elsewhere (a TCG guest starved past its loss-probe timeout on
        # these two shared cores) is the machine's, and printed. On failure
        # the message says what kind, when, and how each VM stopped and
        # resumed around each checkpoint.
        run = analysis.Run(self.dir, "amber")
        why = run.retransmit_diagnosis() + "; " + json.dumps(
            [c.get("vms") for c in self.runs["amber"]["checkpoints"]])
        if run.retransmits():
            print(why, file=sys.stderr)
        qemu = 0
        if TOPOLOGY == "testbed":
            from amberlab.transparency import paths
            qemu = len(paths.lost_after_tap(run) or [])
            self.assertLessEqual(qemu, QEMU_DROPS_TOLERATED[TOPOLOGY], why)
        self.assertLessEqual(run.retransmits_near_checkpoints(),
                             AMBER_RETRANSMITS_NEAR_CHECKPOINTS[TOPOLOGY] + qemu, why)
        naive = analysis.Run(self.dir, "naive")
        if naive.retransmits():
            self.assertGreater(naive.retransmits_near_checkpoints(),
                               10 * max(1, run.retransmits_near_checkpoints()),
                               naive.retransmit_diagnosis())
        self.assertGreater(j["end"]["sum_received"]["bytes"], 10_000_000)

    def test_restore_continues_the_transfer(self):
        if "restore" not in self.runs:
            self.skipTest("no restore in this topology's short run")
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

    def test_the_vm_host_runs_its_stepping_threads_as_configured(self):
        if not AGENT_REALTIME[TOPOLOGY]:
            self.skipTest("agent_realtime is off in this topology's run")
        logs = os.path.join(self.dir, "logs")
        text = "".join(open(os.path.join(logs, f)).read()
                       for f in os.listdir(logs) if f.startswith("vmhost"))
        self.assertIn("agent_realtime: scheduler thread at SCHED_FIFO 3", text)

    def test_the_report_is_written(self):
        for f in ("report.md", "eval.sqlite", "params.json", "timeline.json"):
            self.assertTrue(os.path.exists(os.path.join(self.dir, f)), f)
        with open(os.path.join(self.dir, "report.md")) as f:
            text = f.read()
        self.assertIn("Targets", text)
        self.assertTrue(os.listdir(os.path.join(self.dir, "plots")))


def main():
    global BUILD, TOPOLOGY, np
    if "--topology" in sys.argv:
        i = sys.argv.index("--topology")
        TOPOLOGY = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    BUILD, code = lab.test_main(__doc__, tools=("ip", "ptp4l", "qemu-system-x86_64"))
    if code is not None:
        return code
    BUILD = os.path.abspath(BUILD)
    try:
        import numpy as np
    except ImportError:
        print("SKIPPED: numpy is missing (Debian's python3-numpy; run with /usr/bin/python3)")
        return 77
    return lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
