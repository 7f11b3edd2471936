#!/usr/bin/env python3
"""amber's demo as far as it goes today: a real DPDK delay node between two
network namespaces emulates a long fat link; iperf3 runs across it; the
node is frozen at an instant through its agent, its in-flight frames are
listed and saved to an image, and it thaws. The report says what the link
held, what the image holds, and that nothing was lost. Then the link model
alone shows the freeze is invisible in virtual time when the endpoints are
frozen too (amber-pipe-sim), which is what the VM demo will show end to end.

usage: scripts/demo.py [--rate 100Mbit] [--delay 20ms] [--loss 0] [--seconds 12]
                       [--freeze-at 5] [--freeze-for 2] [--build build] [--keep DIR]
Run as root (scripts/demo.sh does the set-up first)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "scenario"))
import amberlab as lab  # noqa: E402


def say(text):
    print(f"[demo] {text}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", default="100Mbit")
    p.add_argument("--delay", default="20ms")
    p.add_argument("--loss", default="0")
    p.add_argument("--seconds", type=int, default=12, help="iperf3 duration")
    p.add_argument("--freeze-at", type=float, default=5, help="seconds into the transfer")
    p.add_argument("--freeze-for", type=float, default=2, help="seconds frozen")
    p.add_argument("--build", default=os.path.join(here, "..", "build"))
    p.add_argument("--keep", help="keep the image and logs in this folder")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: run as root (namespaces, hugepages)")
    if a.freeze_at + a.freeze_for + 2 > a.seconds:
        sys.exit("demo: --seconds must exceed --freeze-at + --freeze-for + 2")
    binary = os.path.join(a.build, "controller", "amber-delaynode")
    amberctl = os.path.join(a.build, "controller", "amberctl")
    work = a.keep or tempfile.mkdtemp(prefix="amb-demo-")
    os.makedirs(work, exist_ok=True)
    sock = os.path.join(work, "agent.sock")
    loss = "" if a.loss in ("0", "0%") else f'random_loss {{ probability: "{a.loss}" }}'
    config = f'''node_id: "demo"
link {{
  name: "lfn"
  port_a: "net_af_packet0"
  port_b: "net_af_packet1"
  both {{ rate: "{a.rate}" delay: "{a.delay}" queue_frames: 5000 {loss} }}
}}
'''

    def ctl(*args):
        r = subprocess.run([amberctl, "--agent", f"unix:{sock}", *args], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"amberctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    say(f"two namespaces joined through amber-delaynode: {a.rate}, {a.delay} one way, loss {a.loss}")
    with lab.TwoHosts("amb-demo", subnet=83) as hosts, \
         lab.DelayNode(binary, config, hosts.host_if, "amb-demo-node", agent=f"unix:{sock}") as node:
        lab.wait_for(lambda: os.path.exists(sock), 10, "the agent")
        ping = lab.ping(hosts, 0, hosts.addr[1], 10, interval=0.1)
        say(f"ping RTT {ping['avg_ms']:.2f} ms (configured 2 x {a.delay})")
        result = {}

        def transfer():
            result["iperf"] = lab.iperf3(hosts, server=1, client=0, seconds=a.seconds)

        t = threading.Thread(target=transfer)
        t.start()
        time.sleep(a.freeze_at)
        say(f"freezing the delay node in 50 ms, for {a.freeze_for} s")
        say(ctl("freeze", "--in", "50ms").strip())
        time.sleep(0.1)
        frames = ctl("frames", "lfn", "a_to_b", "--limit", "5")
        say("held frames (first 5):\n" + "\n".join("    " + l for l in frames.splitlines()))
        image = os.path.join(work, "delaynode.img")
        saved = ctl("save", image).strip()
        say(saved)
        time.sleep(max(0.0, a.freeze_for - 0.3))
        say(ctl("thaw", "--in", "50ms").strip())
        t.join()
        stats = ctl("stats")
        say("delay node counters:\n" + "\n".join("    " + l for l in stats.splitlines()))
        j = result["iperf"]
        intervals = [i["sum"]["bits_per_second"] / 1e6 for i in j["intervals"]]
        say("iperf3 throughput per second, sender's view (Mbit/s): " + " ".join(f"{x:.0f}" for x in intervals))
        say(f"iperf3: {j['end']['sum_received']['bits_per_second'] / 1e6:.1f} Mbit/s, "
            f"{j['end']['sum_sent'].get('retransmits', 0)} retransmits "
            "(the namespaces are not frozen with the link, so TCP sees the pause; "
            "with VMs frozen too it will not)")
        subprocess.run([os.path.join(a.build, "core-checkpoint", "amber-image"), "info", image])
    print()
    say("the link model alone, endpoints frozen with it (amber-pipe-sim):")
    sim = subprocess.run([os.path.join(a.build, "link-emulator", "amber-pipe-sim"),
                          "--rate", a.rate, "--delay", a.delay, "--frames", "100000",
                          "--freeze-for", "10s"], text=True)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return sim.returncode


if __name__ == "__main__":
    sys.exit(main())
