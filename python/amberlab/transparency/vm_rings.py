"""When each VM really stopped and came back, per checkpoint of an
evaluation: QEMU's STOP and RESUME events (from the controller's manifest)
against the instants the delay node saw the VM's vhost-user rings go down
and come up again (its "port ... link up|down at" log lines).

The guest's clock stops just before its rings go down and starts again at
RESUME, but the guest can receive nothing until its rings are up: the time
from RESUME to "up" is guest time in which the network looks silent.

usage: scripts/amber-py transparency.vm_rings EVAL_DIR [RUN]   (RUN: amber, the default, or naive...)
"""

import json
import os
import re
import statistics
import sys

LINE = re.compile(r"port net_vhost(\d+) link (up|down) at (\d+)\.(\d+)")


def ring_changes(log_path):
    """[(ns, vm, 'up'|'down')]; net_vhostN is vm(N+1), as the evaluation wires them."""
    changes = []
    with open(log_path, errors="replace") as f:
        for line in f:
            m = LINE.search(line)
            if m:
                ns = int(m.group(3)) * 10**9 + int(m.group(4))
                changes.append((ns, f"vm{int(m.group(1)) + 1}", m.group(2)))
    return changes


def first(changes, vm, kind, after, before):
    return next((t for t, v, k in changes if v == vm and k == kind and after <= t < before), None)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    eval_dir, run = argv[1], argv[2] if len(argv) > 2 else "amber"
    with open(os.path.join(eval_dir, "runs", run, "run.json")) as f:
        checkpoints = json.load(f)["checkpoints"]
    changes = ring_changes(os.path.join(eval_dir, "logs", "delaynode.log"))
    print(f"{'#':>3} {'vm':4} {'STOP-T':>8} {'down-T':>8} {'RESUME-T2':>10} {'up-T2':>8} "
          f"{'up-RESUME':>10}   (µs)")
    silent = []
    for ck in checkpoints:
        freeze, resume = ck["freeze_ns"], ck["resume_ns"]
        for vm, ev in sorted(ck["vms"].items()):
            down = first(changes, vm, "down", freeze - 10**9, resume)
            up = first(changes, vm, "up", resume - 10**8, resume + 10**9)
            us = lambda a, b: f"{(a - b) / 1e3:.0f}" if a is not None and b is not None else "-"
            if up is not None and "resume_ns" in ev:
                silent.append((up - ev["resume_ns"]) / 1e3)
            print(f"{ck['id']:>3} {vm:4} {us(ev.get('stop_ns'), freeze):>8} {us(down, freeze):>8} "
                  f"{us(ev.get('resume_ns'), resume):>10} {us(up, resume):>8} "
                  f"{us(up, ev.get('resume_ns')):>10}")
    if silent:
        silent.sort()
        print(f"rings up after RESUME: median {statistics.median(silent):.0f} µs, "
              f"max {silent[-1]:.0f} µs over {len(silent)} VM resumes")


if __name__ == "__main__":
    main(sys.argv)
