"""The testbed topology end to end (amberlab.experiment.TestbedExperiment): the
delay node in the root namespace on af_packet ports bound to veths, each
VM on a "host" of its own (a network namespace with the veth's peer, a
bridge and the VM's tap) with its own VM-host agent, a 100 Mbit/s, 20 ms
link. Ping and iperf3 through the node, the guest probes through their
namespaces, one synchronized checkpoint with resume across both agents,
and a close() that leaves nothing behind.

usage: test_testbed.py BUILD_DIR   (root; Debian's python3 with numpy)"""

import os
import re
import sys
import time
import unittest

from amberlab import lab
from amberlab.experiment import TestbedExperiment


BUILD = None
PREFIX = "amb-tb"
DELAY_MS = 20
PEER = TestbedExperiment.ADDR[1]


def ping_summary(output):
    """busybox ping's loss (%) and min/avg/max RTT (ms)."""
    loss = re.search(r"(\d+)% packet loss", output)
    rtt = re.search(r"min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms", output)
    return (int(loss.group(1)) if loss else None,
            tuple(float(x) for x in rtt.groups()) if rtt else None)


def counters(exp):
    st = exp.node_stats()
    return {"in": sum(int(p["frames_in"]) for p in st["pipes"]),
            "out": sum(int(p["frames_out"]) for p in st["pipes"]),
            "dropped": sum(int(n) for p in st["pipes"] for n in p["dropped"].values())}


class Testbed(unittest.TestCase):
    exp = None

    @classmethod
    def setUpClass(cls):
        cls.exp = TestbedExperiment(BUILD, prefix=PREFIX, mgmt=True,
                                    link=f'rate: "100Mbit" delay: "{DELAY_MS}ms"',
                                    append=("", "amber.workload=iperf3-server"),
                                    topology_extra='margin: "100ms"\n')
        cls.exp.wait_guests_ready()
        # ARP, and the bridges learn both MACs.
        cls.exp.console("vm1").run(f"i=0; until ping -c 1 -W 1 {PEER} > /dev/null; do "
                                   "i=$((i+1)); [ $i -ge 30 ] && break; done", timeout=60)

    def test_1_ping_crosses_the_node(self):
        out = self.exp.console("vm1").run(f"ping -q -c 20 -i 0.2 -W 2 {PEER}", timeout=60)
        loss, rtt = ping_summary(out)
        self.assertEqual(loss, 0, out)
        # 2 x 20 ms through the node; the TCG guests add ~2 ms (as much on
        # vhost-user), more while the machine is busy.
        self.assertGreaterEqual(rtt[0], 2 * DELAY_MS - 0.5, out)
        self.assertLess(rtt[0], 2 * DELAY_MS + 5, out)
        self.assertLess(rtt[1], 2 * DELAY_MS + 10, out)

    def test_2_probes_answer_through_their_namespaces(self):
        from amberlab.transparency import guest
        e = self.exp
        for vm, port in e.mgmt_port.items():
            ns = e.probe_netns(vm)
            self.assertEqual(ns, f"{PREFIX}-h{vm[-1]}")
            probe = guest.GuestProbe(port, run_dir=os.path.join(e.run_dir, vm), netns=ns)
            self.assertIn("running=", probe.wait_ready(60))
            a = probe.clock_anchor(20)
            self.assertGreaterEqual(a["samples"], 10, a)
            self.assertGreater(a["rtt_ns"], 0, a)
            self.assertLess(a["rtt_ns"], 50_000_000, a)
            self.assertLess(abs(a["host_ns"] - time.time_ns()), 10 * 10**9, a)
            self.assertGreater(a["guest_ns"], 0, a)
            # The port is forwarded inside the host's namespace only.
            with self.assertRaises(OSError):
                guest.GuestProbe(port).command("status", timeout=2)

    def test_3_iperf3_through_the_node(self):
        e = self.exp
        c = e.console("vm1")
        # TCG translates the guests' TCP paths on first use: warm up.
        c.run(f"iperf3 -c {PEER} -t 2 > /dev/null 2>&1", timeout=60)
        before = counters(e)
        out = c.run(f"iperf3 -c {PEER} -t 4 -f m 2>&1 | tail -4", timeout=60)
        after = counters(e)
        rate = re.search(r"([\d.]+) Mbits/sec\s+receiver", out)
        self.assertTrue(rate, out)
        self.assertGreater(float(rate.group(1)), 30, out)
        self.assertLess(float(rate.group(1)), 101, out)
        # 30 Mbit/s for 4 s is ~10,000 full frames, their ACKs the other way.
        self.assertGreater(after["out"] - before["out"], 10000, (before, after))
        self.assertEqual(after["dropped"], before["dropped"], (before, after))

    def test_4_checkpoint_with_resume_across_both_hosts(self):
        e = self.exp
        c1 = e.console("vm1")
        c1.send(f"ping -q -c 40 -i 0.1 {PEER} > /tmp/ping.txt 2>&1 &")
        time.sleep(1)
        m = e.ctl("checkpoint", "--label", "testbed")
        self.assertEqual({(p["kind"], p["name"]) for p in m["pieces"]},
                         {("vm", "vm1"), ("vm", "vm2"), ("delay node", "dn1")})
        self.assertFalse(m["swapped_out"])
        steps = {(s["agent"], s["step"]) for s in m["steps"]}
        for agent in ("delay node dn1", "vm host h1", "vm host h2"):
            for step in ("freeze", "save", "resume"):
                self.assertIn((agent, step), steps)
        root = os.path.join(e.store, "e2e", m["id"])
        for piece in m["pieces"]:
            self.assertTrue(piece["files"], piece)
            for f in piece["files"]:
                self.assertEqual(os.path.getsize(os.path.join(root, f["path"])), int(f["bytes"]))
        lab.wait_for(lambda: e.vm_states() == {"vm1": "running", "vm2": "running"}, 60,
                     "both VMs running again")
        lab.wait_for(lambda: "packet loss" in c1.run("cat /tmp/ping.txt"), 30, "ping to finish")
        out = c1.run("cat /tmp/ping.txt")
        self.assertEqual(ping_summary(out)[0], 0, out)

    def test_5_close_leaves_nothing_behind(self):
        e = self.exp
        folder = e.dir
        e.close()
        type(self).exp = None
        self.assertNotIn(PREFIX, lab.sh("ip", "netns", "list").stdout)
        self.assertNotIn(PREFIX, lab.sh("ip", "link").stdout)
        self.assertFalse(os.path.exists(folder))
        self.assertFalse(os.path.exists(f"/var/run/dpdk/{PREFIX}"))
        self.assertFalse([f for f in os.listdir("/dev/hugepages") if f.startswith(PREFIX)])
        # Every daemon and QEMU named a file in the experiment's folder.
        mine = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if folder.encode() in f.read():
                        mine.append(pid)
            except OSError:
                pass
        self.assertEqual(mine, [])


def main():
    global BUILD
    BUILD, code = lab.test_main(__doc__, tools=("ip", "ethtool", "ptp4l", "qemu-system-x86_64"))
    if code is not None:
        return code
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("SKIPPED: numpy is missing (Debian's python3-numpy; run with /usr/bin/python3)")
        return 77
    try:
        return lab.run_cases()
    finally:
        if Testbed.exp:
            Testbed.exp.close()


if __name__ == "__main__":
    sys.exit(main())
