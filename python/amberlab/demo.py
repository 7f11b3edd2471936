"""amber's demo: a whole network experiment checkpointed transparently.

Two QEMU VMs are joined through one DPDK delay node (vhost-user) that
emulates a long fat link; the VM-host agent, the delay node's agent and the
controller run with a ptp4l pair for synchronized time. iperf3 runs from
vm1 to vm2 for a minute, four times side by side:

  baseline   no checkpoints (twice: the run-to-run spread)
  amber      a synchronized checkpoint of both VMs *and* the frames in
             flight inside the delay node every 5 s, then resume
  naive      the VMs stopped, saved and resumed at the same instants while
             the delay node keeps running (what pausing VMs without
             checkpointing the network does)

then one of the amber run's checkpoints is restored and its iperf3 transfer
continues from there. The guests measure themselves (guest/probe.c): when
each packet arrived, how long 10 ms sleeps and a fixed CPU unit took, by
their own clocks. The end is a short report in the terminal and a report
folder: report.md, plots/*.png, eval.sqlite, the raw data (iperf3 JSON,
the guests' packet captures, the checkpoint manifests, a pcap of the frames
the delay node held at the restored checkpoint) and the timeline.

usage: scripts/demo.sh [--rate 100Mbit] [--delay 20ms] [--loss 0] [--duration 60]
                       [--interval 5] [--restore 3] [--topology vhost|testbed]
                       [--out DIR] [--quick]
Run as root: scripts/demo.sh does the set-up first, then runs this module
(amberlab.demo; once set up, also scripts/amber-py demo). Everything
started is stopped and everything created outside the report folder
removed, also on Ctrl-C or failure."""

import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time

import amberlab
from amberlab.transparency import evaluate


def main():
    p = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", default="100Mbit", help="link bandwidth, both directions")
    p.add_argument("--delay", default="20ms", help="one-way propagation delay")
    p.add_argument("--loss", default="0", help='random loss per direction ("0.1%%")')
    p.add_argument("--duration", type=int, default=60, help="iperf3 seconds per run")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between checkpoints")
    p.add_argument("--restore", type=int, default=3, help="the amber checkpoint to restore (0: none)")
    p.add_argument("--runs", default="baseline,amber,naive,baseline")
    p.add_argument("--topology", choices=("vhost", "testbed"), default="vhost",
                   help="vhost: both VMs on the delay node's vhost-user ports (one host); "
                        "testbed: each VM on a tap in a host namespace of its own, the delay "
                        "node on kernel ports as on a machine of its own")
    p.add_argument("--out", help="report folder (default ./amber-report-DATE-TIME)")
    p.add_argument("--quick", action="store_true",
                   help="20 s runs, a checkpoint every 4 s (about 3 minutes in all)")
    p.add_argument("--build", default=os.path.join(amberlab.SOURCE_DIR, "build"))
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: run as root (namespaces, hugepages, QEMU): sudo scripts/demo.sh")
    if a.quick:
        a.duration, a.interval = 20, 4.0
        a.restore = min(a.restore, 2) if a.restore else 0
    if a.duration < 2 * a.interval:
        sys.exit("demo: --duration must be at least twice --interval")
    a.build = os.path.abspath(a.build)
    a.eval_dir = os.path.abspath(a.out or datetime.datetime.now().strftime("amber-report-%Y%m%d-%H%M%S"))
    a.quiet = False
    if os.path.exists(a.eval_dir) and os.listdir(a.eval_dir):
        sys.exit(f"demo: {a.eval_dir} exists and is not empty: give another --out")
    # SIGTERM cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    runs = len(a.runs.split(","))
    minutes = (runs * (a.duration + 25) + 60 + (a.duration if a.restore else 0)) / 60
    print(f"[demo] {a.rate}, {a.delay} one way, loss {a.loss}; {runs} runs of {a.duration} s "
          f"(about {minutes:.0f} minutes); report in {a.eval_dir}", flush=True)
    t0 = time.monotonic()
    try:
        evaluate.evaluate(a, keep=capture_extras)
    except KeyboardInterrupt:
        print("\n[demo] interrupted: everything started was stopped and removed", file=sys.stderr)
        return 130
    rc = subprocess.call(amberlab.module_command("transparency.report", a.eval_dir),
                         env=amberlab.module_env())
    print(f"[demo] done in {(time.monotonic() - t0) / 60:.1f} minutes: {a.eval_dir}/report.md")
    return rc


def capture_extras(ev, a):
    """Before the experiment is torn down: the checkpoint manifests and a
    pcap of the frames the delay node held at the restored checkpoint, into
    the report folder (the store itself is removed with the experiment)."""
    raw = os.path.join(a.eval_dir, "raw")
    os.makedirs(os.path.join(raw, "checkpoints"), exist_ok=True)
    store = os.path.join(ev.exp.store, "e2e")
    for cid in ev.exp.checkpoints_on_disk():
        shutil.copy(os.path.join(store, cid, "MANIFEST"), os.path.join(raw, "checkpoints", f"{cid}.manifest"))
    restored = ev.restored_id
    if restored:
        image = os.path.join(store, restored, "delaynodes", "dn1.img")
        subprocess.run([os.path.join(a.build, "core-checkpoint", "amber-image"), "pcap", image,
                        os.path.join(raw, f"in-flight-{restored}")], capture_output=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
