#!/usr/bin/python3
"""Quick checks of the transparency evaluation's pieces (a few seconds):
the guest probe built from guest/probe.c and run on this host (its file
format, its TCP control and UDP clock through amberlab.transparency.guest,
and, as root, rx timestamps of a real iperf3 transfer in a namespace), the
clock mapping and the window statistics.

usage: selfcheck.py SOURCE_DIR     (exit 77: gcc or numpy missing)"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

SRC = None
TMP = None
PROBE = None


def setUpModule():
    global TMP, PROBE
    TMP = tempfile.mkdtemp(prefix="amb-tr-check-")
    PROBE = os.path.join(TMP, "probe")
    try:  # tearDownModule does not run when this fails
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", PROBE,
                        os.path.join(SRC, "guest", "probe.c"), "-lpthread"], check=True)
    except BaseException:
        shutil.rmtree(TMP, ignore_errors=True)
        raise


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


class ProbeFiles(unittest.TestCase):
    def test_timer_and_cpu_files_parse_and_make_sense(self):
        out = os.path.join(TMP, "local")
        r = subprocess.run([PROBE, "run", "2", "timer", "cpu", "fifo=0", "unit_us=5000"],
                           env=dict(os.environ, PROBE_DIR=out), capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        files = guest.read_probe_dir(out)
        self.assertEqual(sorted(files), ["cpu", "timer"])
        t = files["timer"]
        self.assertEqual(t.header["sleep_ns"], 10_000_000)
        self.assertGreater(len(t.records), 50)
        self.assertTrue((t.records["duration_ns"] >= 10_000_000).all(), "a sleep ended early")
        self.assertTrue((t.records["start_ns"] >= t.header["start_mono_ns"]).all())
        self.assertTrue((t.records["start_ns"] <= t.header["stop_mono_ns"]).all())
        self.assertLess(abs(t.clock_step_ns), 50_000_000, "REALTIME - MONOTONIC moved")
        c = files["cpu"]
        self.assertGreater(c.header["iterations"], 0)
        self.assertGreater(c.header["calibrated_ns"], 1_000_000)
        self.assertLess(c.header["calibrated_ns"], 50_000_000)
        self.assertGreater(len(c.records), 10)
        # The header counts exactly the records that follow.
        with open(os.path.join(out, "cpu.bin"), "rb") as f:
            data = f.read()
        with self.assertRaises(guest.ProbeError):
            guest.parse_probe_bytes(data[:-1])
        with self.assertRaises(guest.ProbeError):
            guest.parse_probe_bytes(b"NOTPROBE" + data[8:])

    def test_daemon_control_clock_and_fetch(self):
        port = free_port()
        d = os.path.join(TMP, "daemon")
        proc = subprocess.Popen([PROBE, "serve", f"port={port}", f"dir={d}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p = guest.GuestProbe(port)
            p.wait_ready(10)
            with self.assertRaises(guest.ProbeError):
                p.start(["bogus"])
            p.start(["timer"], fifo=0)
            a = p.clock_anchor(20)
            # Here "guest" and host share one clock: the anchor is within its RTT.
            self.assertLess(abs(a["guest_real_ns"] - a["host_ns"]), a["rtt_ns"])
            time.sleep(0.3)
            self.assertEqual(p.status()["running"], "1")
            counts = p.stop()
            self.assertGreater(counts["timer"], 10)
            paths = p.fetch(os.path.join(TMP, "fetched"))
            self.assertEqual([os.path.basename(x) for x in paths], ["timer.bin"])
            self.assertEqual(len(guest.read_probe_file(paths[0]).records), counts["timer"])
            p.fetch_file(os.path.join(d, "timer.bin"), os.path.join(TMP, "copy.bin"))
            self.assertIsNone(p.get("/nonexistent"))
            p.command("quit")
            proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("iperf3") and shutil.which("ip"),
                         "needs root, ip and iperf3")
    def test_rx_counts_the_bytes_of_an_iperf3_transfer(self):
        ns = f"amb-trc-{os.getpid()}"
        out = os.path.join(TMP, "rx")
        subprocess.run(["ip", "netns", "add", ns], check=True)
        srv = None
        try:
            ex = ["ip", "netns", "exec", ns]
            subprocess.run(ex + ["ip", "link", "set", "lo", "up"], check=True)
            srv = subprocess.Popen(ex + ["iperf3", "-s", "-1", "-p", "5399"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe = subprocess.Popen(ex + [PROBE, "run", "4", "rx", "iface=lo", "port=5399", "gro=keep"],
                                     env=dict(os.environ, PROBE_DIR=out), stdout=subprocess.DEVNULL,
                                     text=True)
            time.sleep(1)
            r = subprocess.run(ex + ["iperf3", "-c", "127.0.0.1", "-p", "5399", "-t", "1", "-b", "50M",
                                     "-J"], capture_output=True, text=True, timeout=30)
            self.assertEqual(probe.wait(timeout=30), 0)
            j = json.loads(r.stdout)
            rx = guest.read_probe_file(os.path.join(out, "rx.bin"))
            data = rx.records[(rx.records["payload"] > 0) & (rx.records["dir"] == 0)]
            got = int(data["payload"].sum())
            sent = j["end"]["sum_sent"]["bytes"]
            # iperf3's control connection is the same port: a few hundred bytes more.
            self.assertGreaterEqual(got, sent)
            self.assertLess(got - sent, 4096)
            t = np.sort(rx.mono_times()[(rx.records["payload"] > 0) & (rx.records["dir"] == 0)])
            self.assertLess((t[-1] - t[0]) / 1e9, 3.0)
            self.assertEqual(rx.header["lost_full"] + rx.header["lost_kernel"], 0)
            # Leaving frames too (tx=1, the default): on lo every frame is
            # seen leaving and arriving, with the same sequence, ack and id.
            self.assertTrue(rx.has_outgoing)
            d = rx.records["dir"]
            out = rx.records[(d & guest.OUTGOING) != 0]
            inc = rx.records[(d & guest.OUTGOING) == 0]
            self.assertEqual(len(out), len(inc))
            self.assertEqual(sorted(out["seq"].tolist()), sorted(inc["seq"].tolist()))
            self.assertEqual(sorted(out["ip_id"].tolist()), sorted(inc["ip_id"].tolist()))
            # The peer's port is the client's: one for the control and one
            # for the data connection, never the server's own.
            ports = set(rx.records["peer_port"].tolist())
            self.assertNotIn(5399, ports)
            self.assertEqual(len(ports), 2)
            acks = rx.records[((d & guest.FROM_PORT) != 0) & (rx.records["payload"] == 0)]
            self.assertTrue((acks["ack"] > 0).any())
        finally:
            if srv and srv.poll() is None:
                srv.kill()
                srv.wait()
            subprocess.run(["ip", "netns", "del", ns], check=False)


class Mapping(unittest.TestCase):
    def test_pauses_come_out_and_residuals_show_drift(self):
        s = 1_000_000_000
        anchors = [{"host_ns": 100 * s, "guest_ns": 5 * s}, {"host_ns": 130 * s, "guest_ns": 33 * s}]
        m = guest.ClockMap(anchors, [(110 * s, 111 * s), (120 * s, 121 * s)])
        self.assertEqual(m.to_guest(105 * s), 10 * s)
        self.assertEqual(m.to_guest(110 * s + s // 2), 15 * s)  # frozen inside a pause
        self.assertEqual(m.to_guest(125 * s), 28 * s)
        self.assertEqual(m.residuals(), [0, 0])
        drifted = guest.ClockMap([anchors[0], {"host_ns": 128 * s, "guest_ns": 33 * s + 2800}])
        self.assertEqual(drifted.residuals()[1], 2800)
        rate = drifted.fit_rate()
        self.assertAlmostEqual((rate - 1) * 1e6, 0.1, places=6)  # 2.8 us over 28 s
        self.assertAlmostEqual(drifted.residuals()[1], 0, places=3)

    def test_anchors_between_pauses_absorb_a_short_recorded_pause(self):
        s = 1_000_000_000
        # The guest clock really stood still 4 ms longer than the recorded pause.
        anchors = [{"host_ns": 100 * s, "guest_ns": 0}, {"host_ns": 112 * s, "guest_ns": 11 * s - 4_000_000},
                   {"host_ns": 120 * s, "guest_ns": 19 * s - 4_000_000}]
        m = guest.ClockMap(anchors, [(110 * s, 111 * s)])
        self.assertEqual(m.residuals(), [0, -4_000_000, 0])
        self.assertEqual(m.to_guest(115 * s), 14 * s - 4_000_000)  # from the middle anchor
        self.assertEqual(m.fit_rate(), 1.0)  # 112..120 s: no pause, no drift


class SyntheticEvaluation(unittest.TestCase):
    """The analysis on an evaluation with known effects (synthetic.py): a
    link of 100 Mbit/s with a 50 ms one-way delay, amber checkpoints whose
    receiver stops 3 ms late (a stall), naive checkpoints that deliver the
    in-flight segments at the receiver's resume (early, in a burst), and
    guest clocks 123.456 s apart. Each headline statistic must recover
    what was put in."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "synthetic")
        cls.known = synthetic.make(cls.dir)
        cls.ev = an.Evaluation(cls.dir)
        cls.rows = cls.ev.all_packet_effects()

    def rows_of(self, run, window):
        return [r for r in self.rows if r["run"] == run and r["window"] == window]

    def test_amber_in_flight_segments_are_late_by_the_injected_stall(self):
        stall = self.known["stall_ns"]
        rows = self.rows_of("amber", "checkpoint")
        self.assertEqual(len(rows), 3)
        for r in rows:
            self.assertGreater(len(r["owd"]), 300)
            self.assertLess(abs(np.median(r["owd"]) - stall), 50_000, r["checkpoint"])
        # The stall shows at the receiver at the packet the node held first.
        for r in rows:
            self.assertTrue(r["identity"])
            self.assertLess(abs(r["stall"] - (stall + self.known["ser_ns"])), 2_000)

    def test_naive_delivers_the_in_flight_segments_early_and_in_a_burst(self):
        owd = self.known["owd_ns"]
        for r in self.rows_of("naive", "checkpoint"):
            d = r["owd"]
            # Spread over (-owd, 0]: the median about half the delay early.
            self.assertLess(abs(np.median(d) + owd / 2), 2_000_000, r["checkpoint"])
            self.assertLess(d.min(), -0.9 * owd)
            self.assertGreater(r["burst"], 5.0)
            # Every segment sent in the last 50 ms arrived faster than the
            # propagation delay allows.
            count, n = r["owd_early"]
            self.assertGreater(count, 0.5 * n)
            self.assertLess(np.median(r["rtt"]), -0.4 * owd)

    def test_no_effect_where_nothing_happened(self):
        for run, window in (("amber", "control"), ("naive", "control"), ("baseline", "null")):
            rows = self.rows_of(run, window)
            self.assertTrue(rows, (run, window))
            for r in rows:
                self.assertLess(np.abs(r["owd"]).max(), 10_000, (run, window))
                self.assertEqual(r["owd_early"][0], 0)
                self.assertLess(r["burst"], 1.1)

    def test_the_guests_clock_offset_cancels(self):
        # The one-way delays measured across the two clocks carry the
        # offset; the floor derived from the ACKs recovers it exactly.
        run = next(r for r in self.ev.runs if r.id == "baseline")
        flow = run.flow()
        instant = int(flow.tx.t[len(flow.tx.t) // 2])
        floor = packets.owd_floor(*flow.ack_delays(), instant, self.ev.reverse_delay_ns())
        self.assertLess(abs(floor - (self.known["owd_ns"] - self.known["offset_ns"])), 1_000)

    def test_amber_against_naive(self):
        c = an.compare_runs(self.rows, "amber", "naive")
        self.assertLess(c["ratio"], 0.2)
        self.assertEqual(c["p_a_smaller"], 1.0)
        self.assertLess(c["ci_hi"], 0)

    def test_the_taps_put_the_stall_in_the_network_leg(self):
        # amber's receiver stopped `stall` after the network froze, so in
        # its guest time the network held the in-flight segments `stall`
        # too long; neither guest's own leg changed. The legs sum to the
        # segment's one-way delay; a baseline shows none.
        stall = self.known["stall_ns"] / 1e6
        got = {}
        for x in paths.rows(self.dir):
            got.setdefault(x["run"], []).append(x)
        self.assertEqual(len(got.get("amber", [])), 3, got)
        for x in got["amber"]:
            self.assertGreater(x["n"], 300)
            self.assertLess(abs(x["network"] - stall), 0.05, x)
            self.assertLess(abs(x["sender"]), 0.01, x)
            self.assertLess(abs(x["receiver"]), 0.01, x)
            # (medians of each leg: their sum is the total's within a hair)
            self.assertLess(abs(x["total"] - x["sender"] - x["network"] - x["receiver"]), 0.01, x)
        for x in got["baseline"]:
            for leg in ("total", "sender", "network", "receiver"):
                self.assertLess(abs(x[leg]), 0.01, x)
        # naive: the network ran while the receiver stood still, so its
        # in-flight segments come early by the network leg.
        for x in got["naive"]:
            self.assertLess(x["network"], -0.2 * self.known["owd_ns"] / 1e6, x)
        # Every segment that passed the receiver's tap reached its guest.
        for run in self.ev.runs:
            self.assertEqual(paths.lost_after_tap(run), [], run.id)
        # The synthetic guests take a frame in the moment it reaches them.
        amber = next(r for r in self.ev.runs if r.id == "amber")
        first = paths.first_frame_after_resume(amber)
        self.assertEqual(len(first), 3)
        for x in first:
            self.assertLess(abs(x), 0.01, first)

    def test_the_receive_ring_splits_the_receiver_leg(self):
        # The receiver's qemu.log says when QEMU filled the guest's ring:
        # the first segment after each resume spent RX_TAP_LEAD from the tap
        # to the guest, RING_TO_GUEST of it in the ring, with an interrupt.
        amber = next(r for r in self.ev.runs if r.id == "amber")
        split = paths.first_frame_split(amber)
        self.assertEqual(len(split), 3, split)
        ring = synthetic.RING_TO_GUEST / 1e6
        for x in split:
            self.assertAlmostEqual(x["tap_ring"], synthetic.RX_TAP_LEAD / 1e6 - ring, delta=0.002)
            self.assertAlmostEqual(x["ring_guest"], ring, delta=0.002)
            self.assertAlmostEqual(x["ring_irq"], 0, delta=0.002)
            self.assertAlmostEqual(x["ref_ring_guest"], ring, delta=0.002)
        # The scheduler table's windows: each resume to the first segment
        # after it, which reaches the guest RX_TAP_LEAD after its tap.
        windows = schedtrace.resumes(amber)
        self.assertEqual(len(windows), 3, windows)
        for resume, tap, rx in windows:
            self.assertLessEqual(resume, tap)
            self.assertAlmostEqual((rx - tap) / 1e6, synthetic.RX_TAP_LEAD / 1e6, delta=0.002)
        # Without QEMU's trace lines there is no split.
        os.rename(os.path.join(amber.dir, "vm2-qemu.log"), os.path.join(amber.dir, "moved.log"))
        try:
            self.assertIsNone(paths.first_frame_split(amber))
        finally:
            os.rename(os.path.join(amber.dir, "moved.log"), os.path.join(amber.dir, "vm2-qemu.log"))

    def test_a_frame_dropped_after_the_tap_at_a_stop_is_found(self):
        # The receiver never gets the last segment that reached its tap
        # before its first stop (QEMU's tap back end drops the frame it
        # holds for a full guest ring when the VM stops).
        d = os.path.join(TMP, "synthetic-purge")
        known = synthetic.make(d, purge_at_stop=True)
        ev = an.Evaluation(d)
        amber = next(r for r in ev.runs if r.id == "amber")
        lost = paths.lost_after_tap(amber)
        self.assertEqual([(s, t) for s, t, _ in lost], [known["purged"]])
        # It reached the tap just before the network froze (nothing came
        # in the `stall` the receiver ran on after it).
        self.assertTrue(-1.0 < lost[0][2] <= 0, lost)
        self.assertEqual(paths.lost_after_tap(next(r for r in ev.runs if r.id == "naive")), [])


class MachineFloor(unittest.TestCase):
    """A pause run (the VMs stopped and resumed as amber does, no save) is
    the machine's floor: where it misses a target too, the report says the
    target lies below it; without one it says nothing of a floor."""

    def verdicts(self, runs):
        d = os.path.join(TMP, "floor-" + "-".join(runs))
        synthetic.make(d, kinds=runs, duration_s=12.0, interval_s=4.0)
        ev = an.Evaluation(d)
        return {target: (met, note) for run, target, _, met, note in
                report.packet_verdicts(ev, ev.all_packet_effects(), report.run_rows(ev))
                if run == "amber"}

    def test_pause_sets_the_floor_of_the_targets(self):
        got = self.verdicts(("baseline", "amber", "pause", "naive"))
        # The injected 3 ms stall: amber and pause alike miss the p99.
        met, note = got["OWD distortion of in-flight segments: p99 |·| < 2 ms"]
        self.assertFalse(met)
        self.assertIn("pause (the VMs' stop and resume without the save): ", note)
        self.assertIn("below this machine's floor", note)
        met, note = got["receive stall at the instant, added over control: median < 0.5 ms"]
        self.assertFalse(met)
        self.assertIn("below this machine's floor", note)
        without = self.verdicts(("baseline", "amber", "naive"))
        _, note = without["OWD distortion of in-flight segments: p99 |·| < 2 ms"]
        self.assertNotIn("pause", note)

    def test_repeat_sets_amber_against_pause(self):
        # The synthetic pause stops and resumes exactly as amber: no
        # difference, and the interval holds 0.
        d = os.path.join(TMP, "floor-baseline-amber-pause-naive")
        if not os.path.isdir(d):
            synthetic.make(d, kinds=("baseline", "amber", "pause", "naive"), duration_s=12.0,
                           interval_s=4.0)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            repeat.floor_table([(d, repeat.figures(d))])
        line = next(x for x in out.getvalue().splitlines() if x.startswith("amber - pause, pooled"))
        diff, lo, hi = (float(v) for v in re.findall(r"[-+][0-9.]+", line)[:3])
        self.assertEqual((diff, lo, hi), (0.0, 0.0, 0.0))
        # Whole checkpoints resampled: one checkpoint with a 10 ms tail
        # among nine quiet ones moves the p99, and the interval says how
        # unsure that is.
        quiet = [np.full(100, 1.0) for _ in range(9)]
        p, lo, hi = repeat.p99_difference(quiet + [np.full(100, 10.0)], quiet + [np.full(100, 1.0)])
        self.assertAlmostEqual(p, 9.0)
        self.assertEqual(lo, 0.0)
        self.assertAlmostEqual(hi, 9.0)


class QemuResume(unittest.TestCase):
    def test_rings_up_and_slow_writes_after_each_resume(self):
        run = os.path.join(TMP, "qemu-resume", "runs", "amber")
        os.makedirs(run)
        s = 1_800_000_000 * 10**9
        with open(os.path.join(run, "run.json"), "w") as f:
            json.dump({"checkpoints": [{"vms": {"vm1": {"clock_start_ns": s,
                                                        "rings_up_ns": s + 3_500_000}}}]}, f)
        with open(os.path.join(run, "vm1-qemu.log"), "w") as f:
            # One write before the resume, 3 within 20 ms, 1 more by 100 ms.
            for us in (-5, 1_000, 2_000, 19_000, 50_000, 2_000_000):
                t = s + us * 1000
                f.write(f"7@{t // 10**9}.{t % 10**9 // 1000:06d}:memory_notdirty_set_dirty 0x1\n")
            # Two vhost-user messages after the clock started, the last 3 ms in.
            for us in (-10, 500, 3_000):
                t = s + us * 1000
                f.write(f"7@{t // 10**9}.{t % 10**9 // 1000:06d}:vhost_user_write req:39\n")
        self.assertEqual(qemu_resume.resumes(run), [(3.5, [3, 4, 4], 2, 0.5)])


class SchedTrace(unittest.TestCase):
    """schedtrace.Trace on a hand-written ftrace dump with known states."""

    def test_run_wait_and_sleep_and_who_held_the_cpus(self):
        def switch(cpu, t, prev, prev_pid, state, nxt, nxt_pid):
            return (f"  x-1 [{cpu:03d}] d..2. {t}: sched_switch: prev_comm={prev} "
                    f"prev_pid={prev_pid} prev_prio=120 prev_state={state} ==> "
                    f"next_comm={nxt} next_pid={nxt_pid} next_prio=120\n")
        lines = [
            # Before the window: the node on CPU 0, the vCPU on CPU 1.
            switch(0, "99.900000", "swapper/0", 0, "R", "amber-delaynode", 5),
            switch(1, "99.900000", "swapper/1", 0, "R", "CPU 0/TCG", 11),
            # Preempted by the other VM's vCPU at 1 ms, back at 4 ms.
            switch(1, "100.001000", "CPU 0/TCG", 11, "R", "CPU 0/TCG", 21),
            switch(1, "100.004000", "CPU 0/TCG", 21, "S", "CPU 0/TCG", 11),
            # Halts at 6 ms, woken at 8 ms, on a CPU at 9 ms.
            switch(1, "100.006000", "CPU 0/TCG", 11, "S", "swapper/1", 0),
            "  x-1 [000] d..3. 100.008000: sched_wakeup: comm=CPU 0/TCG pid=11 prio=120 "
            "target_cpu=001\n",
            switch(1, "100.009000", "swapper/1", 0, "R", "CPU 0/TCG", 11),
        ]
        path = os.path.join(TMP, "sched.trace")
        with open(path, "w") as f:
            f.writelines(lines)
        with open(path + ".offset", "w") as f:
            f.write("0\n")
        s = 10**9
        trace = schedtrace.Trace(path, 100 * s, 100 * s + 20_000_000)
        spent, waits = trace.states(11, 100 * s, 100 * s + 10_000_000)
        self.assertEqual({k: v / 1e6 for k, v in spent.items()}, {"run": 4.0, "wait": 4.0,
                                                                 "sleep": 2.0})
        self.assertEqual([((a - 100 * s) / 1e6, (b - 100 * s) / 1e6) for a, b in waits],
                         [(1.0, 4.0), (8.0, 9.0)])
        # While it waited first: the node (on CPU 0 since before the
        # window) and the other vCPU.
        held = trace.holders(*waits[0])
        self.assertEqual({t: ns / 1e6 for t, ns in held.items()}, {5: 3.0, 21: 3.0})
        self.assertEqual(trace.first, 99_900_000_000)
        # A window that starts and ends between switches.
        held = trace.holders(100 * s + 500_000, 100 * s + 2_000_000)
        self.assertEqual({t: ns / 1e6 for t, ns in held.items()}, {5: 1.5, 11: 0.5, 21: 1.0})
        # Threads by process, where record noted them.
        with open(path + ".threads", "w") as f:
            f.write('{"5": "amber-delaynode", "21": "qemu-system-x86"}')
        trace = schedtrace.Trace(path, 100 * s, 100 * s + 20_000_000)
        self.assertEqual(trace.owned_name(21), "qemu-system-x86: CPU 0/TCG")
        self.assertEqual(trace.owned_name(5), "amber-delaynode")
        self.assertEqual(trace.owned_name(11), "CPU 0/TCG")


class Retransmits(unittest.TestCase):
    def test_segments_that_resend_bytes_are_found(self):
        # 0..4 sent in order, then 1448 resent whole, 2896 resent in part
        # (a smaller segment inside it), then new data again.
        f = packets.Flow.__new__(packets.Flow)
        num = np.array([0, 1448, 2896, 4344, 5792, 1448, 3000, 7240])
        t = np.arange(len(num)) * 1000
        f.tx = packets.Stream(t, num, np.full(len(num), 1448), np.zeros(len(num)))
        self.assertEqual(list(f.retransmissions()), [5000, 6000])
        f.tx = None
        self.assertEqual(len(f.retransmissions()), 0)

    def test_proc_counters_parse_by_header(self):
        text = ("Tcp: RtoMin RetransSegs\nTcp: 200 3\n"
                "TcpExt: TCPLossProbes TCPTimeouts\nTcpExt: 2 1\n"
                "IpExt: A B\nIpExt: 1\n")  # a garbled pair is left out
        c = an.parse_proc_counters(text)
        self.assertEqual(c, {"Tcp.RtoMin": 200, "Tcp.RetransSegs": 3,
                             "TcpExt.TCPLossProbes": 2, "TcpExt.TCPTimeouts": 1})


class Windows(unittest.TestCase):
    def test_largest_gap_overlapping_a_window(self):
        t = np.array([0.0, 0.1, 0.2, 0.9, 1.0, 1.05])
        self.assertAlmostEqual(an.max_gap_in(t, 0.3, 0.4), 0.7)  # the gap spans the window
        self.assertAlmostEqual(an.max_gap_in(t, 0.0, 0.15), 0.1)
        self.assertAlmostEqual(an.max_gap_in(t, 0.95, 2.0), 0.1)
        self.assertTrue(np.isnan(an.max_gap_in(t, 5, 6)))

    def test_longest_duration_overlapping_a_window(self):
        start = np.array([0.0, 0.01, 0.02, 0.5])
        dur = np.array([0.01, 0.01, 0.48, 0.01])
        self.assertAlmostEqual(an.max_duration_in(start, dur, 0.3, 0.31), 0.48)
        self.assertAlmostEqual(an.max_duration_in(start, dur, 0.0, 0.015), 0.01)

    def test_quantiles_and_effect_size(self):
        q = an.quantiles([1, 2, 3, 4, float("nan")])
        self.assertEqual(q["n"], 4)
        self.assertEqual(q["median"], 2.5)
        self.assertLessEqual(q["ci_lo"], 2.5)
        d = an.median_difference([10, 11, 12, 13], [1, 2, 3, 4])
        self.assertEqual(d["p_greater"], 1.0)
        self.assertGreater(d["ci_lo"], 0)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    SRC = os.path.abspath(sys.argv.pop(1))
    try:
        import numpy as np
    except ImportError:
        print("SKIPPED: numpy is missing (scripts/setup.sh installs python3-matplotlib)")
        sys.exit(77)
    if shutil.which("gcc") is None:
        print("SKIPPED: gcc is missing")
        sys.exit(77)
    from amberlab.experiment import free_port
    from amberlab.transparency import analysis as an
    from amberlab.transparency import (guest, packets, paths, qemu_resume, repeat, report,
                                       schedtrace, synthetic)
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
