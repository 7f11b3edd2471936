"""What QEMU does right after each resume, from its trace lines: how long
from the guest clock's start until the delay node had the VM's vhost-user
rings up again, and how many guest pages took TCG's slow path on their
first write (a page QEMU marks clean: every page after a migration).

    scripts/amber-py transparency.evaluate build DIR --runs pause,amber \\
        --qemu-trace runstate_set,vhost_user_write,memory_notdirty_set_dirty
    scripts/amber-py transparency.qemu_resume DIR...

Per run kind, over every VM's resumes: the median clock start -> rings up
(vhost-user topology: the node's log), the vhost-user messages QEMU sent to
restart them and how soon after its last one the node had them up, and
the median count of
memory_notdirty_set_dirty lines in the first 20 ms, 100 ms and 1 s after
the clock started. (Each trace line is a write to qemu.log, so the trace
makes the slow path slower; the counts are what it measures.)"""

import argparse
import bisect
import json
import os
import statistics
import sys

from amberlab.transparency import analysis

WINDOWS_NS = (20 * 10**6, 100 * 10**6, 10**9)
# The vhost-user restart's messages: those QEMU sends this soon after the
# clock started.
RESTART_NS = 50 * 10**6


def trace_times(log, event):
    """Sorted host ns of every `event` line of a qemu.log."""
    out = []
    try:
        with open(log, errors="replace") as f:
            for line in f:
                at = line.find("@")
                colon = line.find(":", at)
                if at < 0 or not line.startswith(event + " ", colon + 1):
                    continue
                sec, usec = line[at + 1:colon].split(".")
                out.append(int(sec) * 10**9 + int(usec) * 1000)
    except (OSError, ValueError):
        pass
    return sorted(out)


def resumes(run_dir):
    """[(clock start -> rings up ms or None, [slow writes per window],
    vhost-user messages QEMU sent in the 50 ms after the clock started,
    its last of them -> rings up ms or None)] for every VM's resume in a
    run folder."""
    with open(os.path.join(run_dir, "run.json")) as f:
        meta = json.load(f)
    out = []
    for vm in sorted({vm for c in meta.get("checkpoints", []) for vm in c.get("vms", {})}):
        log = os.path.join(run_dir, f"{vm}-qemu.log")
        writes = trace_times(log, "memory_notdirty_set_dirty")
        messages = trace_times(log, "vhost_user_write")
        for c in meta["checkpoints"]:
            v = c["vms"].get(vm, {})
            start = v.get("clock_start_ns")
            if start is None:
                continue
            up = v.get("rings_up_ns")
            counts = [bisect.bisect(writes, start + w) - bisect.bisect(writes, start)
                      for w in WINDOWS_NS]
            sent = messages[bisect.bisect(messages, start):
                            bisect.bisect(messages, start + RESTART_NS)]
            last = (up - sent[-1]) / 1e6 if up and sent else None
            out.append(((up - start) / 1e6 if up else None, counts, len(sent), last))
    return out


def table(eval_dirs):
    kinds = {}
    for d in eval_dirs:
        for name in sorted(os.listdir(os.path.join(d, "runs"))):
            if os.path.exists(os.path.join(d, "runs", name, "run.json")):
                kinds.setdefault(analysis.run_kind(name), []).extend(
                    resumes(os.path.join(d, "runs", name)))
    print("| run | resumes | clock start -> rings up, median ms | QEMU's vhost-user messages, "
          "median | its last message -> rings up, max ms | first writes to a clean page after "
          "the clock started, median: 20 ms / 100 ms / 1 s |")
    print("|---|---:|---:|---:|---:|---|")

    def cell(values, how, fmt):
        values = [v for v in values if v is not None]
        return format(how(values), fmt) if values else "–"
    for kind, rows in kinds.items():
        if not rows:
            continue
        counts = " / ".join(f"{statistics.median(r[1][i] for r in rows):.0f}"
                            for i in range(len(WINDOWS_NS)))
        print(f"| {kind} | {len(rows)} | {cell([r[0] for r in rows], statistics.median, '.2f')} "
              f"| {cell([r[2] or None for r in rows], statistics.median, '.0f')} "
              f"| {cell([r[3] for r in rows], max, '.2f')} | {counts} |")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.qemu_resume",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", nargs="+")
    a = ap.parse_args(argv)
    table(a.eval_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
