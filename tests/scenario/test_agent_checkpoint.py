#!/usr/bin/env python3
"""The delay node's agent driven by amberctl while iperf3 TCP runs between
two namespaces: freeze both directions for several seconds, save the frozen
node, thaw; no frame held at the freeze is lost. Then the image is restored
into a fresh amber-delaynode process and its frames leave there. Also: bad
requests are refused with clear errors and change nothing.

The endpoints are namespaces, not VMs: they are not frozen, so TCP notices
the pause (its retransmission timer fires while the link is frozen; the
transparent end-to-end case needs the VMs frozen too, see vm-checkpoint).

usage: test_agent_checkpoint.py BUILD_DIR
Needs root; exits 77 (skipped) with the reason otherwise."""

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
CONFIG = '''node_id: "agent-test"
link {
  name: "lan"
  port_a: "net_af_packet0"
  port_b: "net_af_packet1"
  both { rate: "20Mbit" delay: "100ms" queue_frames: 2000 }
}
'''


def amberctl(sock, *args, check=True):
    r = subprocess.run([os.path.join(BUILD, "amberctl", "amberctl"), "--agent", f"unix:{sock}",
                        *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"amberctl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def frozen(sock):
    return bool(json.loads(amberctl(sock, "--json", "stats").stdout).get("frozen"))


def stats(sock):
    """{'lan/a_to_b': {'in': .., 'out': .., 'held': .., 'dropped': ..}, ...} from amberctl --json."""
    reply = json.loads(amberctl(sock, "--json", "stats").stdout)
    out = {}
    for p in reply["pipes"]:
        out[f"{p['pipe']['link']}/{p['pipe']['direction']}"] = {
            "in": int(p["frames_in"]), "out": int(p["frames_out"]),
            "held": int(p["held_frames"]), "dropped": sum(int(v) for v in p["dropped"].values())}
    return out


class AgentCheckpoint(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="amb-ag-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.hosts = lab.TwoHosts("amb-ag", subnet=82)
        self.addCleanup(self.hosts.close)
        self.addCleanup(shutil.rmtree, self.dir, True)
        binary = os.path.join(BUILD, "delaynode", "amber-delaynode")
        self.node = lab.DelayNode(binary, CONFIG, self.hosts.host_if, "amb-ag-node",
                                  agent=f"unix:{self.sock}", app=["--store", self.dir])
        self.addCleanup(self.node.close)
        lab.wait_for(lambda: os.path.exists(self.sock), 10, "the agent socket")

    def test_freeze_save_thaw_under_tcp_then_restore_in_a_fresh_process(self):
        lab.ping(self.hosts, 0, self.hosts.addr[1], 2, interval=0.2)
        server = self.hosts.popen(1, "iperf3", "-s", "-1", stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (server.poll() is None and server.kill(), server.wait()))
        lab.wait_for(lambda: ":5201 " in self.hosts.run(1, "ss", "-ltn", check=False).stdout, 10,
                     "iperf3 server")
        client = self.hosts.popen(0, "iperf3", "-c", self.hosts.addr[1], "-t", "8",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (client.poll() is None and client.kill(), client.wait()))
        # TCP fills the 20 Mbit/s x 100 ms pipe (about 170 full frames).
        lab.wait_for(lambda: sum(p["held"] for p in stats(self.sock).values()) > 100, 20,
                     "iperf3 to fill the pipe")

        out = amberctl(self.sock, "freeze", "--in", "50ms").stdout
        self.assertIn("frozen at", out)
        lab.wait_for(lambda: frozen(self.sock), 5, "the node to freeze")
        frozen_stats = stats(self.sock)
        held = frozen_stats["lan/a_to_b"]["held"] + frozen_stats["lan/b_to_a"]["held"]
        self.assertGreater(held, 50, frozen_stats)
        listing = amberctl(self.sock, "frames", "lan", "a_to_b", "--limit", "3").stdout
        self.assertIn("TCP", listing)

        # Frozen for 3 s: nothing leaves.
        time.sleep(3)
        still = stats(self.sock)
        self.assertEqual(still["lan/a_to_b"]["out"], frozen_stats["lan/a_to_b"]["out"])
        # The held frames as pcap files, one per pipe, readable by tcpdump.
        files = amberctl(self.sock, "pcap", os.path.join(self.dir, "pcap")).stdout.split()
        self.assertEqual(len(files), 2, files)
        r = subprocess.run(["tcpdump", "-nr", files[0]], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(len(r.stdout.splitlines()), 10)
        self.assertIn("10.82.0.1", r.stdout)
        image = os.path.join(self.dir, "node.img")
        out = amberctl(self.sock, "save", image).stdout
        self.assertIn("saved", out)
        self.assertTrue(os.path.exists(image))
        # TCP's retransmissions keep arriving while frozen (the endpoints
        # run on): the image holds what was there at the save.
        saved = int(out.split()[1])
        self.assertGreaterEqual(saved, held)
        amberctl(self.sock, "thaw", "--in", "50ms")
        client.wait(timeout=30)
        after = stats(self.sock)
        for d in ("lan/a_to_b", "lan/b_to_a"):
            # Every frame that went in came out or is still on its way: none lost.
            s = after[d]
            self.assertEqual(s["dropped"], 0, after)
            self.assertEqual(s["in"], s["out"] + s["held"], after)

        # A fresh process loads the image and sends what it held.
        self.node.close()
        binary = os.path.join(BUILD, "delaynode", "amber-delaynode")
        fresh_sock = os.path.join(self.dir, "fresh.sock")
        fresh = lab.DelayNode(binary, CONFIG, self.hosts.host_if, "amb-ag-fresh",
                              agent=f"unix:{fresh_sock}", app=["--store", self.dir])
        self.addCleanup(fresh.close)
        lab.wait_for(lambda: os.path.exists(fresh_sock), 10, "the fresh agent socket")
        amberctl(fresh_sock, "freeze", "--in", "50ms")
        lab.wait_for(lambda: frozen(fresh_sock), 5, "the fresh node to freeze")
        out = amberctl(fresh_sock, "restore", image).stdout
        self.assertIn("restored", out)
        self.assertEqual(int(out.split()[1]), saved)
        # (More may be held by now: the namespaces still send while frozen.)
        restored = stats(fresh_sock)
        self.assertGreaterEqual(restored["lan/a_to_b"]["held"] + restored["lan/b_to_a"]["held"], saved)
        amberctl(fresh_sock, "thaw", "--in", "50ms")
        lab.wait_for(lambda: all(v["held"] == 0 for v in stats(fresh_sock).values()), 10,
                     "the restored frames to leave")

    def test_paths_outside_the_store_are_refused(self):
        """#16 defect 5: the agent runs as root; the paths a call names stay
        inside --store (no '..', no symlink out), whoever calls."""
        outside = tempfile.mkdtemp(prefix="amb-ag-out-")
        self.addCleanup(shutil.rmtree, outside, True)
        os.symlink(outside, os.path.join(self.dir, "link-out"))
        secret = os.path.join(outside, "secret.img")
        with open(secret, "wb") as f:
            f.write(b"not an image")
        amberctl(self.sock, "freeze", "--in", "1s")
        lab.wait_for(lambda: frozen(self.sock), 10, "the node to freeze")
        refused = [("save", os.path.join(outside, "x.img")),
                   ("save", os.path.join(self.dir, "..", os.path.basename(outside), "x.img")),
                   ("save", os.path.join(self.dir, "link-out", "x.img")),
                   ("restore", secret),
                   ("restore", os.path.join(self.dir, "link-out", "secret.img")),
                   ("pcap", os.path.join(outside, "pcap")),
                   ("pcap", os.path.join(self.dir, "link-out", "pcap"))]
        for command, path in refused:
            r = amberctl(self.sock, command, path, check=False)
            self.assertEqual(r.returncode, 1, (command, path, r.stdout))
            self.assertIn("permission denied", r.stderr, (command, path))
            self.assertIn(path, r.stderr)
        self.assertEqual(sorted(os.listdir(outside)), ["secret.img"])
        # Inside the store: written.
        image = os.path.join(self.dir, "inside.img")
        self.assertIn("saved", amberctl(self.sock, "save", image).stdout)
        self.assertTrue(os.path.exists(image))
        amberctl(self.sock, "thaw", "--in", "1s")

    def test_bad_requests_are_refused_and_change_nothing(self):
        r = amberctl(self.sock, "save", os.path.join(self.dir, "x.img"), check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not frozen", r.stderr)
        r = amberctl(self.sock, "freeze", "--at", "1", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("past", r.stderr)
        r = amberctl(self.sock, "set", "lan", "a_to_b", "delay=-1ms", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("delay", r.stderr)
        self.assertIn("delay 100ms", amberctl(self.sock, "stats").stdout)
        r = amberctl(self.sock, "restore", "/nonexistent.img", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("outside the store", r.stderr)
        r = amberctl(self.sock, "bogus", check=False)
        self.assertEqual(r.returncode, 2)
        out = amberctl(self.sock, "set", "lan", "b_to_a", "delay=5ms").stdout
        self.assertIn("delay 5ms", out)

    def test_a_save_whose_caller_gave_up_writes_no_image(self):
        """#16 defects 8 and 9: a Save that waited for the agent's lock past
        its caller's deadline went on and wrote the image; /amber/set went
        around the lock, even while frozen."""
        # A Freeze whose instant is 1.5 s away holds the agent's lock until then.
        freeze = subprocess.Popen([os.path.join(BUILD, "amberctl", "amberctl"), "--agent",
                                   f"unix:{self.sock}", "freeze", "--in", "1500ms"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (freeze.poll() is None and freeze.kill(), freeze.wait()))
        time.sleep(0.3)
        image = os.path.join(self.dir, "late.img")
        r = amberctl(self.sock, "--timeout", "300ms", "save", image, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        _, err = freeze.communicate(timeout=10)
        self.assertEqual(freeze.returncode, 0, err)
        self.assertTrue(frozen(self.sock))
        reply = self.node.telemetry("/amber/set,lan,a_to_b,delay=5ms")
        self.assertIn("frozen", reply.get("error", ""), reply)
        # The abandoned Save had the lock next, the moment the Freeze let go.
        time.sleep(0.5)
        self.assertFalse(os.path.exists(image), "a save nobody waited for wrote its image")
        amberctl(self.sock, "thaw", "--in", "50ms")
        # The thaw is armed for 50 ms ahead: wait for it, not a fixed time.
        lab.wait_for(lambda: not frozen(self.sock), 10, "the node to thaw")
        self.assertIn("delay 100ms", amberctl(self.sock, "stats").stdout)
        reply = self.node.telemetry("/amber/set,lan,a_to_b,delay=5ms")
        self.assertIn("delay 5ms", reply.get("ok", ""), reply)


class AgentClockHealth(unittest.TestCase):
    """With PTP configured, the agent reads instants as master time and
    refuses them while its clock is not trustworthy: here a real ptp4l that
    has no master to measure against (it is alone on its link)."""

    def test_untrustworthy_clock_refuses_freeze_and_says_why(self):
        work = tempfile.mkdtemp(prefix="amb-ag-ptp-")
        self.addCleanup(shutil.rmtree, work, True)
        hosts = lab.TwoHosts("amb-agp", subnet=84)
        self.addCleanup(hosts.close)
        ptp_sock = os.path.join(work, "ptp4l.sock")
        ptp = hosts.popen(0, "ptp4l", "-i", hosts.ns_if[0], "-S", "-2", "-m",
                          f"--uds_address={ptp_sock}", "--free_running=1",
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (ptp.poll() is None and ptp.kill(), ptp.wait()))
        lab.wait_for(lambda: os.path.exists(ptp_sock), 10, "ptp4l's management socket")
        sock = os.path.join(work, "agent.sock")
        node = lab.DelayNode(os.path.join(BUILD, "delaynode", "amber-delaynode"), CONFIG,
                             hosts.host_if, "amb-agp-node", agent=f"unix:{sock}",
                             app=["--ptp-socket", ptp_sock, "--ptp-mode", "free-running"])
        self.addCleanup(node.close)
        lab.wait_for(lambda: os.path.exists(sock), 10, "the agent socket")
        reply = json.loads(amberctl(sock, "--json", "stats").stdout)
        self.assertTrue(reply["clock"]["synchronized"])
        self.assertFalse(reply["clock"]["trustworthy"])
        self.assertTrue(reply["clock"]["reasons"], reply)
        r = amberctl(sock, "freeze", "--in", "100ms", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not trustworthy", r.stderr)
        self.assertIn("NOT trustworthy", amberctl(sock, "stats").stdout)


def main():
    global BUILD
    BUILD, rc = lab.test_main(__doc__)
    return rc if rc is not None else lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
