"""Issue #17: experiment time on a delay node whose process was killed and
started again (not restored). Its new process reads real time again and
has lost its pending link events; the controller notices the new clock id,
maps experiment time onto the new clock from its last reading (one node:
no other clock to ask; a pause earlier makes real time and experiment
time differ by its length), applies the topology's past events at once and
sends the ones still ahead. A restore afterwards maps experiment time as
its checkpoint did. Real amber-delaynode (net_null ports), amber-controller
and amberctl processes; no VMs.

usage: test_node_restart.py BUILD_DIR   (root: the delay node needs hugepages)"""

import os
import sys
import tempfile
import time
import unittest

from amberlab import lab
from amberlab.experiment import Process, amberctl

BUILD = None
S = 1_000_000_000
MS = 1_000_000


class NodeRestart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="amb-rst-")
        config = os.path.join(cls.dir, "links.textproto")
        with open(config, "w") as f:
            f.write('node_id: "dn1"\nlink { name: "l" port_a: "net_null0" port_b: "net_null1" '
                    'both { delay: "1ms" } }\n')
        cls.node_argv = [
            os.path.join(BUILD, "delaynode", "amber-delaynode"), "-l", "0", "--no-pci",
            "--in-memory", "--file-prefix", "amb-rst", "-m", "256", "--log-level", "lib.eal:error",
            "--vdev", "net_null0", "--vdev", "net_null1", "--", "--config", config,
            "--agent", f"unix:{cls.dir}/dn.sock", "--store", f"{cls.dir}/store"]
        cls.node = cls.start_node()
        topology = os.path.join(cls.dir, "topology.conf")
        with open(topology, "w") as f:
            f.write(f'experiment: "restart"\nlisten: "unix:{cls.dir}/controller.sock"\n'
                    f'store: "{cls.dir}/store"\nallow_unsynchronized: true\n'
                    f'delay_node {{ id: "dn1" address: "unix:{cls.dir}/dn.sock" link: "l" }}\n'
                    'event { at: "1s" link: "l" direction: "a_to_b" set { delay: "7ms" } }\n'
                    'event { at: "5min" link: "l" direction: "a_to_b" down: true }\n')
        cls.controller = Process([os.path.join(BUILD, "controller", "amber-controller"),
                                  "--topology", topology],
                                 os.path.join(cls.dir, "controller.log"), "serving on",
                                 "amber-controller")

    @classmethod
    def start_node(cls):
        return Process(cls.node_argv, os.path.join(cls.dir, "dn.log"), "agent listening on",
                       "amber-delaynode")

    @classmethod
    def tearDownClass(cls):
        for p in (getattr(cls, "controller", None), getattr(cls, "node", None)):
            if p:
                p.stop()
        lab.sh("rm", "-rf", cls.dir, "/var/run/dpdk/amb-rst", check=False)

    def ctl(self, *args, **kw):
        return amberctl(BUILD, f"unix:{self.dir}/controller.sock", *args, **kw)

    def node_status(self):
        st = self.ctl("status")
        return st, next(a for a in st["agents"] if a["kind"] == "delay node")

    def a_to_b(self, node):
        return next(p for p in node["pipes"] if p["pipe"]["direction"] == "a_to_b")

    def experiment_ns(self):
        st = self.ctl("status")
        return int(st["experiment_ns"]) if "experiment_ns" in st else None

    def test_a_node_started_afresh_keeps_experiment_time_and_its_events(self):
        # The event at 1 s has fired: the delay stands at 7 ms.
        lab.wait_for(lambda: (self.experiment_ns() or 0) > 1.5 * S, 30, "experiment time 1.5 s")
        _, node = self.node_status()
        self.assertEqual(int(self.a_to_b(node)["delay_now_ns"]), 7 * MS)
        # A pause of 3 s: the node's virtual clock falls 3 s behind real
        # time, as experiment time does.
        self.ctl("pause", "--for", "3s", json_out=False)
        lab.wait_for(lambda: not self.node_status()[1]["frozen"], 30, "the end of the pause")
        checkpoint = self.ctl("checkpoint", "--label", "before the restart")
        at_checkpoint = self.experiment_ns()
        # The controller reads experiment time every 2 s between operations:
        # let it read after the checkpoint's freeze.
        lab.wait_for(lambda: self.experiment_ns() > at_checkpoint + 5 * S, 30,
                     "experiment time 5 s past the checkpoint")

        before = self.experiment_ns()
        t0 = time.monotonic()
        self.node.kill()
        type(self).node = self.start_node()
        lab.wait_for(lambda: "started afresh" in self.node_status()[1].get("timeline", ""), 30,
                     "the controller to map the restarted node")
        st, node = self.node_status()
        elapsed = time.monotonic() - t0
        timeline = node["timeline"]
        self.assertIn("from the controller's reading", timeline)
        self.assertIn("1 event, 1 past ones applied at once", timeline)
        # Experiment time ran on through the restart; read from the new
        # clock with the old epoch it would be 3 s (the pause) ahead.
        now = int(st["experiment_ns"])
        print(f"\nexperiment time after the restart: {now / S:.3f} s; before it "
              f"{before / S:.3f} s + {elapsed:.3f} s of wall time = "
              f"{before / S + elapsed:.3f} s (the status reads lag a little)", file=sys.stderr)
        self.assertLess(abs(now - (before + elapsed * S)), 1 * S,
                        f"experiment time {now / S:.3f} s, {before / S:.3f} s + {elapsed:.3f} s "
                        f"before the restart")
        pipe = self.a_to_b(node)
        self.assertEqual(int(pipe["delay_now_ns"]), 7 * MS, "the past event applied again")
        self.assertEqual([(e["change"], int(e["at_experiment_ns"])) for e in pipe["events"]],
                         [("down", 300 * S)], "the event still ahead sent again")
        text = self.ctl("status", json_out=False).stdout
        self.assertIn("started afresh", text)

        # A restore maps experiment time as the checkpoint did.
        self.ctl("restore", checkpoint["id"])
        st, node = self.node_status()
        self.assertEqual(node.get("timeline", ""), "")
        back = int(st["experiment_ns"])
        self.assertGreaterEqual(back, at_checkpoint - 1 * S)
        self.assertLess(back, at_checkpoint + 3 * S)
        pipe = self.a_to_b(node)
        self.assertEqual(int(pipe["delay_now_ns"]), 7 * MS)
        self.assertEqual([(e["change"], int(e["at_experiment_ns"])) for e in pipe["events"]],
                         [("down", 300 * S)])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    BUILD = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
