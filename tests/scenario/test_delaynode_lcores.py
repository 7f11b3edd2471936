#!/usr/bin/env python3
"""amber-delaynode spreads link directions over its worker lcores: two
links on net_null ports (which receive without end) with three lcores (the
main one and two workers, mapped onto this machine's two CPUs) both forward,
each direction on its own loop, and SIGTERM stops them all cleanly.

usage: test_delaynode_lcores.py BUILD_DIR
Needs root (hugepages); exits 77 (skipped) with the reason otherwise."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import amberlab as lab  # noqa: E402

BUILD = None
CONFIG = '''node_id: "lcores"
link { name: "one" port_a: "net_null0" port_b: "net_null1" both { delay: "1ms" } }
link { name: "two" port_a: "net_null2" port_b: "net_null3" both { delay: "1ms" rate: "1Gbit" } }
'''


class SpreadOverLcores(unittest.TestCase):
    def test_two_links_on_two_workers_both_forward(self):
        vdevs = []
        for i in range(4):
            vdevs += ["--vdev", f"net_null{i},size=64"]
        binary = os.path.join(BUILD, "controller", "amber-delaynode")
        with lab.DelayNode(binary, CONFIG, [], "amb-lc-node", lcores="0@0,1@1,2@1",
                           extra_eal=vdevs) as node:
            self.assertIn("2 link(s) on 2 worker(s)", node.output())
            first = node.telemetry("/amber/stats")
            time.sleep(0.5)
            second = node.telemetry("/amber/stats")
            for d in ("one/a_to_b", "one/b_to_a", "two/a_to_b", "two/b_to_a"):
                self.assertGreater(second[d]["frames_out"], first[d]["frames_out"], d)
            # The rate-limited link holds to its rate: 1 Gbit/s of 64-byte
            # frames is at most 1.95 M frames/s.
            rate = (second["two/a_to_b"]["frames_out"] - first["two/a_to_b"]["frames_out"]) / 0.5
            self.assertLess(rate, 1.05e9 / (64 * 8) * 1.2)
        out = node.final_output
        self.assertEqual(node.proc.returncode, 0, out)
        self.assertIn("[final] two/b_to_a", out)


def main():
    global BUILD
    BUILD, rc = lab.test_main(__doc__, tools=())
    return rc if rc is not None else lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
