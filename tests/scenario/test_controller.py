"""End to end: the controller's synchronized checkpoint on real components.
Two QEMU VMs on vhost-user ports of one amber-delaynode, amber-vmhost,
amber-controller, a ptp4l pair between two namespaces (free-running slave)
and amberctl. Checkpoint with resume, swap-out then restore, restore of an
earlier checkpoint (a branch), triggered and periodic checkpoints, and the
failures of the protocol: an agent killed mid-save, a store too small or
filled mid-save, deadlines that cannot be met. Each ends with everything
running and nothing half-written in the store.

usage: test_controller.py BUILD_DIR   (root; skips without ptp4l or QEMU)"""

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
import unittest

from amberlab import lab
from amberlab.experiment import Experiment

BUILD = None
PING = "ping -q -c 40 -i 0.1 10.88.0.2"

# Short deadlines, so a killed agent's lease (freeze instant + 2 x step +
# save deadline) ends within the test.
DEADLINES = 'step_deadline: "5s"\nsave_deadline: "10s"\nmargin: "100ms"\n'


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fill(path):
    """Takes all the free space of the filesystem holding `path` within
    milliseconds (posix_fallocate in shrinking steps), so a save running
    meanwhile cannot finish first."""
    with open(path, "wb") as f:
        size, step = 0, 64 << 20
        while step >= 4096:
            try:
                os.posix_fallocate(f.fileno(), size, step)
                size += step
            except OSError:
                step //= 2


def ping_loss(output):
    import re
    m = re.search(r"(\d+)% packet loss", output)
    return int(m.group(1)) if m else None


class Background:
    """amberctl in the background, its stderr (progress lines) read as it
    comes."""

    def __init__(self, exp, *args):
        self.proc = subprocess.Popen(
            [os.path.join(exp.build, "amberctl", "amberctl"), "--controller",
             exp.controller_address, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.err = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.err += line

    def wait(self, timeout=120):
        self.proc.wait(timeout=timeout)
        self.reader.join(5)
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, out, self.err


class ControllerEndToEnd(unittest.TestCase):
    exp = None

    @classmethod
    def setUpClass(cls):
        cls.exp = Experiment(BUILD, topology_extra=DEADLINES)
        cls.exp.wait_guests_ready()

    @classmethod
    def tearDownClass(cls):
        pass  # RestoreOntoAnotherHost goes on with it; main() closes it

    def setUp(self):
        # Every case starts (and must end) with the experiment running.
        e = self.exp
        lab.wait_for(lambda: e.vm_states() == {"vm1": "running", "vm2": "running"}, 60,
                     "both VMs running")
        self.assertFalse(e.node_frozen())

    def assert_running_and_clean(self):
        e = self.exp
        lab.wait_for(lambda: e.vm_states() == {"vm1": "running", "vm2": "running"}, 60,
                     "both VMs running again")
        lab.wait_for(lambda: not e.node_frozen(), 30, "the delay node thawed")
        complete = {m["id"] for m in e.ctl("list")["checkpoints"]}
        self.assertEqual(set(e.checkpoints_on_disk()), complete,
                         "a folder without MANIFEST stayed in the store")
        out = e.console("vm1").run("ping -c 5 -i 0.2 -W 5 10.88.0.2", timeout=60)
        self.assertEqual(ping_loss(out), 0, f"{out}\n{e.ctl('status')}\ncontroller log:\n"
                         f"{e.controller.output()[-3000:]}")

    def verify_pieces(self, manifest):
        root = os.path.join(self.exp.store, "e2e", manifest["id"])
        for piece in manifest["pieces"]:
            self.assertTrue(piece["files"], piece)
            for f in piece["files"]:
                path = os.path.join(root, f["path"])
                self.assertEqual(os.path.getsize(path), int(f["bytes"]), path)
                self.assertEqual(sha256(path), f["sha256"], path)

    def test_1_status(self):
        s = self.exp.ctl("status")
        self.assertEqual(s["state"], "running")
        kinds = {(a["kind"], a["id"]): a for a in s["agents"]}
        self.assertEqual(set(kinds), {("delay node", "dn1"), ("vm host", "h1")})
        for a in kinds.values():
            self.assertTrue(a["reachable"], a)
            self.assertTrue(a["clock_trustworthy"], a)
            self.assertIn("free", a["clock"])
        self.assertEqual(len(kinds[("delay node", "dn1")]["pipes"]), 2)

    def test_2_checkpoint_with_resume(self):
        e = self.exp
        c1 = e.console("vm1")
        c1.send(f"{PING} > /tmp/ping.txt 2>&1 &")
        time.sleep(1)
        m = e.ctl("checkpoint", "--label", "first")
        self.assertEqual({(p["kind"], p["name"]) for p in m["pieces"]},
                         {("vm", "vm1"), ("vm", "vm2"), ("delay node", "dn1")})
        self.assertGreater(int(m["resume_ns"]), int(m["freeze_ns"]))
        self.assertFalse(m["swapped_out"])
        steps = {(s["agent"], s["step"]) for s in m["steps"]}
        for agent in ("delay node dn1", "vm host h1"):
            for step in ("freeze", "save", "resume"):
                self.assertIn((agent, step), steps)
        self.verify_pieces(m)
        # The node answers vhost-user promptly and logged each VM's rings
        # going down at the stop and up again at the resume, after T.
        log = e.node.output()
        self.assertIn("vhost-user messages: SCHED_FIFO 10", log)
        freeze_s = int(m["freeze_ns"]) / 1e9
        for port in ("net_vhost0", "net_vhost1"):
            changes = [(kind, float(at)) for kind, at in
                       re.findall(rf"port {port} link (up|down) at (\d+\.\d+)", log)]
            after = [kind for kind, at in changes if at >= freeze_s]
            self.assertEqual(after[:2], ["down", "up"], (port, changes))
        # The ping across the checkpoint lost nothing.
        lab.wait_for(lambda: "packet loss" in c1.run("cat /tmp/ping.txt"), 30, "ping to finish")
        self.assertEqual(ping_loss(c1.run("cat /tmp/ping.txt")), 0)
        listed = e.ctl("list")
        self.assertEqual(listed["head"], m["id"])
        self.assertEqual(listed["checkpoints"][-1]["label"], "first")
        self.assert_running_and_clean()

    def test_3_swap_out_then_restore(self):
        e = self.exp
        e.console("vm1").run("echo swapped-state > /tmp/marker")
        m = e.ctl("checkpoint", "--swap-out")
        self.assertTrue(m["swapped_out"])
        lab.wait_for(lambda: e.vm_states() == {"vm1": "absent", "vm2": "absent"}, 30,
                     "the VMs to be gone")
        self.assertEqual(e.ctl("status")["state"], "swapped out")
        refused = e.ctl("checkpoint", check=False, json_out=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("swapped out", refused.stderr)
        r = e.ctl("restore", m["id"])
        self.assertEqual(r["id"], m["id"])
        self.assertEqual(e.console("vm1").run("cat /tmp/marker").strip(), "swapped-state")
        self.assert_running_and_clean()

    def test_4_restore_earlier_starts_a_branch(self):
        e = self.exp
        c = e.console("vm1")
        c.run("echo A > /tmp/marker")
        a = e.ctl("checkpoint", "--label", "A")
        c.run("echo B > /tmp/marker")
        b = e.ctl("checkpoint", "--label", "B")
        digests = {f["path"]: f["sha256"] for p in b["pieces"] for f in p["files"]}
        r = e.ctl("restore", a["id"])
        self.assertNotEqual(r["branch"], a["branch"])
        self.assertEqual(e.console("vm1").run("cat /tmp/marker").strip(), "A")
        listed = e.ctl("list")
        self.assertEqual(listed["head"], a["id"])
        self.assertEqual(listed["branch"], r["branch"])
        c2 = e.ctl("checkpoint", "--label", "on the branch")
        self.assertEqual(c2["parent"], a["id"])
        self.assertEqual(c2["branch"], r["branch"])
        self.assertNotIn(c2["id"], (a["id"], b["id"]))
        # The other branch's checkpoint is untouched.
        root = os.path.join(e.store, "e2e", b["id"])
        for path, digest in digests.items():
            self.assertEqual(sha256(os.path.join(root, path)), digest)
        self.assert_running_and_clean()

    def test_5_agent_killed_mid_save(self):
        e = self.exp
        before = e.checkpoints_on_disk()
        bg = Background(e, "checkpoint")
        lab.wait_for(lambda: "save" in bg.err, 60, "the save step")
        e.vmhost.kill()
        rc, _, err = bg.wait()
        self.assertEqual(rc, 1, err)
        self.assertIn("vm host h1", err)
        self.assertIn("save", err)
        self.assertIn("rolled back", err)
        # The delay node was thawed at once; the VMs outlived their agent and
        # resume when the lease ends, under the agent that adopts them.
        lab.wait_for(lambda: not e.node_frozen(), 20, "the delay node thawed")
        e.start_vmhost()
        self.assertIn("adopted", e.vmhost.output())
        self.assertEqual(e.checkpoints_on_disk(), before)
        self.assert_running_and_clean()

    def test_6_store_too_small_or_filled(self):
        e = self.exp
        # Inside the agents' store: they save nowhere else (#16 defect 5).
        small = os.path.join(e.store, "small")
        os.makedirs(small, exist_ok=True)
        lab.sh("mount", "-t", "tmpfs", "-o", "size=16m", "amb-e2e-small", small)
        store = e.store
        try:
            self._restart_with_store(small)
            r = e.ctl("checkpoint", check=False, json_out=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("prepare", r.stderr)
            self.assertIn("free", r.stderr)
            self.assertIn("nothing was touched", r.stderr)
            self.assertEqual(e.checkpoints_on_disk(), [])
            # Room for prepare, then the disk fills up during the save.
            lab.sh("mount", "-o", "remount,size=600m", small)  # just above the estimate
            bg = Background(e, "checkpoint")
            lab.wait_for(lambda: "freeze" in bg.err, 60, "the freeze step")
            fill(os.path.join(small, "filler"))
            rc, _, err = bg.wait()
            self.assertEqual(rc, 1, err)
            self.assertIn("save", err)
            self.assertIn("rolled back", err)
            self.assert_running_and_clean()
            os.unlink(os.path.join(small, "filler"))
            m = e.ctl("checkpoint")
            self.verify_pieces(m)
        finally:
            self._restart_with_store(store)
            lab.sh("umount", small, check=False)

    def _restart_with_store(self, store):
        e = self.exp
        e.store = store
        e.write_topology(DEADLINES)
        e.restart_controller()

    def test_7_deadlines_that_cannot_be_met(self):
        e = self.exp
        r = e.ctl("checkpoint", "--in", "1ms", check=False, json_out=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nothing was touched", r.stderr)
        self.assertFalse(e.node_frozen())
        before = e.checkpoints_on_disk()
        e.restart_controller('step_deadline: "5s"\nsave_deadline: "5ms"\nmargin: "100ms"\n')
        try:
            r = e.ctl("checkpoint", check=False, json_out=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("did not answer in time", r.stderr)
            self.assertIn("save", r.stderr)
            self.assert_running_and_clean()
            self.assertEqual(e.checkpoints_on_disk(), before)
        finally:
            e.restart_controller(DEADLINES)

    def test_8_triggers(self):
        e = self.exp
        pattern = "a5" * 16
        e.restart_controller(DEADLINES + f'''
trigger {{ name: "console" console {{ vm_host: "h1" vm: "vm1" contains: "AMBER-BREAK" }}
          cooldown: "1s" }}
trigger {{ name: "frame" frame {{ delay_node: "dn1" link: "lfn" hex: "{pattern}" }}
          cooldown: "1s" }}
''')
        try:
            lab.wait_for(lambda: all("watching" in t for t in e.ctl("status")["triggers"]), 30,
                         "the triggers to watch")
            n = len(e.ctl("list")["checkpoints"])
            e.console("vm1").run('echo AMBER-""BREAK')  # the echoed command line does not match
            lab.wait_for(lambda: len(e.ctl("list")["checkpoints"]) > n, 60, "a console trigger")
            last = e.ctl("list")["checkpoints"][-1]
            self.assertIn("trigger console", last["reason"])
            self.assertIn("AMBER-BREAK", last["reason"])
            self.setUp()
            # A matching frame within the console trigger's cooldown is
            # ignored (as it should be): send one again until it counts.
            def frame_checkpointed():
                if len(e.ctl("list")["checkpoints"]) > n + 1:
                    return True
                e.console("vm1").run("ping -c 1 -p a5 -s 100 10.88.0.2", timeout=60)
                return len(e.ctl("list")["checkpoints"]) > n + 1

            lab.wait_for(frame_checkpointed, 60, "a frame trigger", interval=1.0)
            last = e.ctl("list")["checkpoints"][-1]
            self.assertIn("trigger frame", last["reason"])
            self.assertIn("ICMP", last["reason"])
            self.assert_running_and_clean()
        finally:
            e.restart_controller(DEADLINES)

    def test_9_periodic_keeps_the_last_k(self):
        e = self.exp
        e.restart_controller(DEADLINES + 'periodic { interval: "3s" keep: 2 }\n')
        try:
            lab.wait_for(lambda: e.controller.output().count("periodic: checkpoint") >= 4, 60,
                         "four periodic checkpoints")
        finally:
            e.restart_controller(DEADLINES)
        periodic = [m for m in e.ctl("list")["checkpoints"] if m["reason"] == "periodic"]
        self.assertEqual(len(periodic), 2, periodic)
        with open(e.controller.log_path) as f:
            self.assertIn("removed", e.controller.output() + f.read())
        self.assert_running_and_clean()

    def test_7b_link_events_across_a_checkpoint_and_a_restore(self):
        """Issue #17: link events in experiment time, and a trace, with a
        checkpoint and a restore landing between a link's down and up. The
        restore brings the pending events back at their experiment time
        (an event that fired before the checkpoint never again) and the
        trace back to its position."""
        e = self.exp
        trace = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "traces",
                             "Verizon-LTE-short.down")
        e.node_ctl("set", "lfn", "b_to_a", f"trace={os.path.abspath(trace)}")
        c1 = e.console("vm1")

        def pipe(status, direction):
            node = next(a for a in status["agents"] if a["kind"] == "delay node")
            return next(p for p in node["pipes"] if p["pipe"]["direction"] == direction)

        def now(status):
            return int(status["experiment_ns"])

        s = 1_000_000_000
        x = now(e.ctl("status"))
        plan = [(3, "delay=40ms"), (6, "down"), (14, "up"), (15, "delay=20ms")]
        for at, change in plan:
            r = e.ctl("schedule", "lfn", "a_to_b", "--at-experiment", f"{(x + at * s) // 1000}us",
                      *change.split())
            self.assertIn(change, r["detail"])
        refused = e.ctl("schedule", "lfn", "--at-experiment", "1s", "seed=3", check=False,
                        json_out=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("unknown key 'seed'", refused.stderr)
        try:
            # vm1 -> vm2 crosses a_to_b; the replies cross the traced b_to_a.
            c1.send("ping -q -i 0.2 -c 400 -W 1 10.88.0.2 > /tmp/ping-ev.txt 2>&1 &")
            lab.wait_for(lambda: pipe(e.ctl("status"), "a_to_b")["down"], 30, "the link down")
            lab.wait_for(lambda: int(pipe(e.ctl("status"), "a_to_b")["dropped"]["link_down"]) > 2,
                         10, "frames dropped as link_down")
            before = e.ctl("status")
            trace_at_checkpoint = pipe(before, "b_to_a")["schedule"].get("trace_index", 0)
            m = e.ctl("checkpoint", "--label", "link down")
            after = e.ctl("status")
            a_to_b = pipe(after, "a_to_b")
            self.assertTrue(a_to_b["down"])
            self.assertEqual(a_to_b["delay_now_ns"], str(40_000_000))
            pending = [(ev["change"], int(ev["at_experiment_ns"])) for ev in a_to_b["events"]]
            self.assertEqual([c for c, _ in pending], ["up", "delay=20ms"])
            # At their experiment time; an alignment shift after the resume
            # moves them with the direction by the VM's pause excess (ms).
            for (_, at), want in zip(pending, (14, 15)):
                self.assertLess(abs(at - (x + want * s)), 100_000_000, pending)
            # The node's telemetry says the same, on its virtual clock.
            tel = e.node_telemetry("/amber/stats")["lfn/a_to_b"]
            self.assertEqual((tel["down"], tel["pending_events"]), (1, 2), tel)
            self.assertEqual([ev.split(" ", 1)[1] for ev in tel["events"]], ["up", "delay=20ms"])
            # The original timeline runs past the up and the last event.
            lab.wait_for(lambda: now(e.ctl("status")) > x + 16 * s, 60, "experiment time 16 s")
            ran_on = e.ctl("status")
            self.assertFalse(pipe(ran_on, "a_to_b")["down"])
            self.assertEqual(pipe(ran_on, "a_to_b")["pending_events"], 0)
            self.assertEqual(pipe(ran_on, "a_to_b")["delay_now_ns"], str(20_000_000))
            trace_ran_on = pipe(ran_on, "b_to_a")["schedule"]["trace_index"]

            e.ctl("restore", m["id"])
            back = e.ctl("status")
            self.assertLess(now(back), x + 14 * s)
            a_to_b = pipe(back, "a_to_b")
            self.assertTrue(a_to_b["down"], a_to_b)
            self.assertEqual(a_to_b["delay_now_ns"], str(40_000_000))
            self.assertEqual([ev["change"] for ev in a_to_b["events"]], ["up", "delay=20ms"])
            b_to_a = pipe(back, "b_to_a")
            self.assertEqual(b_to_a["schedule"]["state"], "running")
            self.assertLessEqual(trace_at_checkpoint, b_to_a["schedule"]["trace_index"])
            self.assertLess(b_to_a["schedule"]["trace_index"], trace_ran_on)
            # The up fires again in the restored timeline, at its instant.
            last_down = now(back)
            while True:
                st = e.ctl("status")
                if not pipe(st, "a_to_b")["down"]:
                    break
                last_down = now(st)
                self.assertLess(last_down, x + 20 * s, "the up never fired after the restore")
                time.sleep(0.05)
            self.assertLess(last_down, x + 14 * s + 100_000_000)
            self.assertGreater(now(st), x + 14 * s - 100_000_000)
            lab.wait_for(lambda: pipe(e.ctl("status"), "a_to_b")["pending_events"] == 0, 30,
                         "the last event")
        finally:
            c1.run("killall ping; true")
            e.node_ctl("set", "lfn", "b_to_a", "trace=none")
            e.ctl("schedule", "lfn", "--clear")
            e.node_ctl("set", "lfn", "a_to_b", "delay=20ms", "down=no")
        self.assert_running_and_clean()


class RestoreOntoAnotherHost(unittest.TestCase):
    """A swapped-out experiment comes back on another VM host: the topology
    maps the VMs there (runs after the class above, on its experiment)."""

    def test_swap_in_on_another_host(self):
        e = ControllerEndToEnd.exp
        lab.wait_for(lambda: e.vm_states() == {"vm1": "running", "vm2": "running"}, 60,
                     "both VMs running")
        e.console("vm1").run("echo moved-state > /tmp/marker")
        m = e.ctl("checkpoint", "--swap-out", "--label", "before the move")
        e.move_to_host("h2")
        e.restart_controller(DEADLINES)
        lab.wait_for(e.clocks_trustworthy, 30, "the clocks")
        self.assertEqual(e.vm_states(), {"vm1": "absent", "vm2": "absent"})
        r = e.ctl("restore", m["id"])
        self.assertEqual(r["id"], m["id"])
        status = e.ctl("status")
        hosts = [a for a in status["agents"] if a["kind"] == "vm host"]
        self.assertEqual([h["id"] for h in hosts], ["h2"])
        self.assertEqual(sorted(hosts[0]["vms"]), ["vm1 running", "vm2 running"])
        # The guest's memory came along, and the link works.
        self.assertEqual(e.console("vm1").run("cat /tmp/marker").strip(), "moved-state")
        out = e.console("vm1").run("ping -c 5 -i 0.2 -W 5 10.88.0.2", timeout=60)
        self.assertEqual(ping_loss(out), 0, out)


def main():
    global BUILD
    BUILD, code = lab.test_main(__doc__, tools=("ip", "ptp4l", "qemu-system-x86_64"))
    if code is not None:
        return code
    try:
        return lab.run_cases()
    finally:
        if ControllerEndToEnd.exp:
            ControllerEndToEnd.exp.close()


if __name__ == "__main__":
    sys.exit(main())
