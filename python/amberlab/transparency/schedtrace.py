"""Who had the CPUs while a resumed receiver was late: the kernel's
scheduler trace (ftrace sched_switch and sched_wakeup) around each resume.

transparency.paths says how long, in the receiver's guest time, the first
segment to reach its tap after a resume took to reach the guest. This says
why, from the host's scheduler: from the receiver's resume to that
segment's receive in the guest, how long the receiver's vCPU thread ran,
waited for a CPU (runnable, not running) and slept (halted: the guest had
nothing to do, or was not told of a frame), how long its QEMU main loop
waited for a CPU, and which threads held the CPUs while the vCPU waited.

    scripts/amber-py transparency.schedtrace record OUT -- COMMAND...
        runs COMMAND (e.g. transparency.evaluate ... --topology testbed
        --capture-taps) with the two events on (root; tracefs), then writes
        the trace to OUT and CLOCK_REALTIME - CLOCK_MONOTONIC to OUT.offset
    scripts/amber-py transparency.schedtrace show OUT EVAL_DIR
        the table, for each run of the evaluation with tap captures and
        QEMU's thread ids (run.json qemu_threads)
    scripts/amber-py transparency.schedtrace cpu OUT EVAL_DIR
        each thread's CPU in steady state and in the 100 ms after each
        receiver resume, per run kind (amber against pause: what the host
        runs after a save that it does not after a pause)

The trace holds every context switch of the machine: about 3 MB a second
on the 2-core test machine, kept in a ring of --buffer-mib per CPU (the
oldest events go first)."""

import argparse
import bisect
import collections
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from amberlab.transparency import analysis, paths

TRACEFS = "/sys/kernel/tracing"
EVENTS = ("sched/sched_switch", "sched/sched_wakeup")
_SWITCH = re.compile(r"\[(\d+)\].*? (\d+)\.(\d+): sched_switch: prev_comm=(.*?) prev_pid=(\d+) "
                     r"prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
_WAKEUP = re.compile(r" (\d+)\.(\d+): sched_wakeup: comm=(.*?) pid=(\d+) ")


def _write(name, value):
    with open(os.path.join(TRACEFS, name), "w") as f:
        f.write(str(value))


def _read(name):
    with open(os.path.join(TRACEFS, name)) as f:
        return f.read()


def thread_owners():
    """{tid: its process's name} of every thread on the machine now (the
    trace names threads, not the processes they belong to)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
            for tid in os.listdir(f"/proc/{pid}/task"):
                out[tid] = name
        except OSError:
            pass  # it ended meanwhile
    return out


def record(out, command, buffer_mib=256):
    """Runs command with the scheduler events traced; its exit code. The
    tracing state is left as it was found (tracefs unmounted again if it
    was not mounted)."""
    mounted = not os.path.exists(os.path.join(TRACEFS, "trace"))
    if mounted:
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    old_kb = _read("buffer_size_kb").split()[0]
    old_on = _read("tracing_on").strip()
    old_clock = _read("trace_clock").split("[")[1].split("]")[0]
    _write("tracing_on", 0)
    _write("trace_clock", "mono")
    _write("buffer_size_kb", buffer_mib * 1024)
    _write("trace", "")
    try:
        for e in EVENTS:
            _write(f"events/{e}/enable", 1)
        offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
            time.CLOCK_MONOTONIC)
        with open(out + ".offset", "w") as f:
            f.write(f"{offset}\n")
        _write("tracing_on", 1)
        proc = subprocess.Popen(command)
        owners = {}
        while proc.poll() is None:
            owners.update(thread_owners())
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        rc = proc.returncode
        _write("tracing_on", 0)
        with open(out + ".threads", "w") as f:
            json.dump(owners, f)
        lost = 0
        for cpu in os.listdir(os.path.join(TRACEFS, "per_cpu")):
            with open(os.path.join(TRACEFS, "per_cpu", cpu, "stats")) as f:
                lost += sum(int(line.split()[1]) for line in f if line.startswith("overrun:"))
        if lost:
            print(f"schedtrace: the ring overflowed, {lost} of the earliest events are lost "
                  "(show leaves out the resumes before the first one kept; raise --buffer-mib)",
                  file=sys.stderr)
        with open(os.path.join(TRACEFS, "trace")) as src, open(out, "w") as dst:
            for line in src:
                dst.write(line)
        return rc
    finally:
        _write("tracing_on", 0)
        for e in EVENTS:
            _write(f"events/{e}/enable", 0)
        _write("trace", "")
        _write("buffer_size_kb", old_kb)
        _write("trace_clock", old_clock)
        _write("tracing_on", old_on)
        if mounted:
            subprocess.run(["umount", TRACEFS], check=False)


class Trace:
    """The context switches and wake-ups of a recorded trace within
    [lo, hi] (host CLOCK_REALTIME ns)."""

    def __init__(self, path, lo, hi):
        with open(path + ".offset") as f:
            offset = int(f.read())
        try:
            with open(path + ".threads") as f:
                self.owners = json.load(f)
        except OSError:
            self.owners = {}  # recorded before record noted them
        self.switches, self.wakeups, self.names = [], [], {}
        first_on = {}
        before = {}  # per CPU, the last switch before lo: who was on it at lo
        with open(path, errors="replace") as f:
            for line in f:
                m = _SWITCH.search(line)
                if m:
                    self.names[int(m.group(5))] = m.group(4)
                    self.names[int(m.group(8))] = m.group(7)
                    t = int(m.group(2)) * 10**9 + int(m.group(3)) * 1000 + offset
                    first_on.setdefault(int(m.group(1)), t)
                    switch = (t, int(m.group(1)), int(m.group(5)), m.group(6), int(m.group(8)))
                    if t < lo:
                        before[switch[1]] = switch
                    elif t <= hi:
                        self.switches.append(switch)
                    continue
                m = _WAKEUP.search(line)
                if m:
                    t = int(m.group(1)) * 10**9 + int(m.group(2)) * 1000 + offset
                    if lo <= t <= hi:
                        self.wakeups.append((t, int(m.group(4))))
        self.switches[:0] = sorted(before.values())
        # From when every CPU's events are there: each CPU has its own ring,
        # and one that overflowed lost its earliest events.
        self.first = max(first_on.values()) if first_on else None
        self.by_cpu = collections.defaultdict(list)
        for s in self.switches:
            self.by_cpu[s[1]].append(s)
        self.times = {cpu: [s[0] for s in on] for cpu, on in self.by_cpu.items()}

    def owned_name(self, tid):
        """A thread's name, after its process's where record noted it and
        they differ ("amber-controller: grpcpp_sync_ser")."""
        name = self.names.get(tid, str(tid))
        owner = self.owners.get(str(tid))
        return f"{owner}: {name}" if owner and owner != name else name

    def states(self, tid, a, b):
        """({"run", "wait", "sleep"}: ns of tid in [a, b]), [(from, to) it waited]."""
        events = sorted([(t, "run") for t, _, _, _, nxt in self.switches if nxt == tid]
                        + [(t, "wait" if st.startswith("R") else "sleep")
                           for t, _, prev, st, _ in self.switches if prev == tid]
                        + [(t, "woken") for t, p in self.wakeups if p == tid])

        def step(state, event):
            if event == "woken":
                return state if state == "run" else "wait"
            return event
        state = "sleep"
        for t, e in events:
            if t > a:
                break
            state = step(state, e)
        spent, waits, t0 = collections.Counter(), [], a
        for t, e in events:
            if t <= a:
                continue
            if t >= b:
                break
            spent[state] += t - t0
            if state == "wait":
                waits.append((t0, t))
            state, t0 = step(state, e), t
        spent[state] += b - t0
        if state == "wait":
            waits.append((t0, b))
        return spent, waits

    def holders(self, a, b):
        """{tid: ns on a CPU within [a, b]}, over every CPU."""
        held = collections.Counter()
        for cpu, on in self.by_cpu.items():
            i = bisect.bisect_right(self.times[cpu], a)
            cur, t0 = (on[i - 1][4] if i else None), a
            for t, _, _, _, nxt in on[i:bisect.bisect_right(self.times[cpu], b)]:
                held[cur] += t - t0
                cur, t0 = nxt, t
            held[cur] += b - t0
        return +held  # without the threads that held none of it


def resumes(run):
    """[(resume host ns, first segment at the receiver's tap after it, its
    receive in the guest, as host ns)] per receiver resume."""
    got = paths.receiver_frames(run)
    if got is None:
        return []
    seqs, rx_t, rt, clock = got
    out = []
    for resume, _, after_sel in paths.resume_windows(run, rt, after_ns=None):
        after = np.nonzero(after_sel)[0]
        if not len(after):
            continue
        p = int(np.searchsorted(seqs, rt[0][after[0]]))
        if p >= len(seqs) or seqs[p] != rt[0][after[0]]:
            continue
        # After the resume the guest clock runs with the host's.
        rx_host = resume + int(rx_t[p] - clock.to_guest(resume))
        out.append((resume, int(rt[1][after[0]]), rx_host))
    return out


def show(trace_path, eval_dir):
    runs = []
    for name in sorted(os.listdir(os.path.join(eval_dir, "runs"))):
        run = analysis.Run(eval_dir, name)
        threads = run.meta.get("qemu_threads", {}).get(run.receiver)
        windows = resumes(run)
        if threads and windows:
            runs.append((run, threads, windows))
    if not runs:
        print("(no run with tap captures and QEMU's thread ids: evaluate --topology testbed "
              "--capture-taps)")
        return
    lo = min(w[0] for _, _, ws in runs for w in ws) - 10**8
    hi = max(w[2] for _, _, ws in runs for w in ws) + 10**8
    trace = Trace(trace_path, lo, hi)
    print("From the receiver's resume to its guest's receive of the first segment after it, "
          "ms: the receiver's vCPU thread running, waiting for a CPU and sleeping, its QEMU "
          "main loop waiting; who held the CPUs while the vCPU waited")
    print()
    print("| run | checkpoint | segment at the tap | in the guest | vCPU runs | vCPU waits "
          "| vCPU sleeps | main loop waits | CPUs while the vCPU waited |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    totals = collections.defaultdict(lambda: collections.defaultdict(list))
    for run, threads, windows in runs:
        vcpu = next((int(t) for t, n in threads["threads"].items() if n.startswith("CPU 0/")),
                    None)
        main = int(threads["pid"])
        label = {int(t): f"{vm} {n}" for vm, q in run.meta.get("qemu_threads", {}).items()
                 for t, n in q["threads"].items()}
        for k, (resume, tap, rx) in enumerate(windows):
            if trace.first is None or resume < trace.first + 10**8:
                print(f"| {run.id} | {k + 1} | (before the trace's first event) |")
                continue
            spent, waits = trace.states(vcpu, resume, rx)
            main_spent, _ = trace.states(main, resume, rx)
            held = collections.Counter()
            for a, b in waits:
                held.update(trace.holders(a, b))
            top = ", ".join(f"{label.get(t) or trace.names.get(t, t)} {ns / 1e6:.1f}"
                            for t, ns in held.most_common(3) if t is not None)
            cells = [(tap - resume) / 1e6, (rx - resume) / 1e6, spent["run"] / 1e6,
                     spent["wait"] / 1e6, spent["sleep"] / 1e6, main_spent["wait"] / 1e6]
            print(f"| {run.id} | {k + 1} | " + " | ".join(f"{x:.2f}" for x in cells)
                  + f" | {top} |")
            for key, x in zip(("in the guest", "vCPU runs", "vCPU waits", "vCPU sleeps",
                               "main loop waits"), cells[1:]):
                totals[analysis.run_kind(run.id)][key].append(x)
    print()
    print("Medians over the checkpoints, ms:")
    print()
    keys = ("in the guest", "vCPU runs", "vCPU waits", "vCPU sleeps", "main loop waits")
    print("| run | checkpoints | " + " | ".join(keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for kind, cols in totals.items():
        print(f"| {kind} | {len(cols['vCPU runs'])} | "
              + " | ".join(f"{np.median(cols[k]):.2f}" for k in keys) + " |")


def thread_labels(run, trace):
    """{tid: role}: QEMU's threads by VM ("vm2 vCPU", "vm2 main loop",
    "vm2 other"), idle, and every other thread by its command name."""
    labels = {0: "idle"}
    for vm, q in run.meta.get("qemu_threads", {}).items():
        for t, n in q["threads"].items():
            labels[int(t)] = f"{vm} vCPU" if n.startswith("CPU ") else f"{vm} QEMU other"
        labels[int(q["pid"])] = f"{vm} main loop"
    return lambda tid: labels.get(tid) or trace.owned_name(tid)


def cpu_windows(run):
    """[(freeze ns, the receiver's resume ns)] per checkpoint of a run: the
    resume is its guest clock's start where the run has it."""
    out = []
    for c in run.meta.get("checkpoints", []):
        v = c.get("vms", {}).get(run.receiver, {})
        out.append((c["freeze_ns"], v.get("clock_start_ns") or c["resume_ns"]))
    return out


# Windows of cpu(), ns relative to the checkpoint: steady state well before
# the freeze, and two stretches after the receiver's resume.
CPU_WINDOWS = (("steady", "freeze", -2000 * 10**6, -1600 * 10**6),
               ("resume +0-20 ms", "resume", 0, 20 * 10**6),
               ("+20-100 ms", "resume", 20 * 10**6, 100 * 10**6))


def cpu(trace_path, eval_dir, top=8):
    """Who held the host's CPUs around each checkpoint, per run kind: each
    thread's CPU per 20 ms, in steady state and after the receiver's
    resume (the mean over the checkpoints). Tells what runs after an amber
    resume that does not after a pause, and what the guests wait behind."""
    runs = [analysis.Run(eval_dir, n) for n in sorted(os.listdir(os.path.join(eval_dir, "runs")))]
    runs = [r for r in runs if cpu_windows(r)]
    if not runs:
        print("(no run with checkpoints)")
        return
    edges = [w for r in runs for w in cpu_windows(r)]
    trace = Trace(trace_path, min(f for f, _ in edges) - 2 * 10**9,
                  max(r for _, r in edges) + 2 * 10**8)
    per_kind = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    counts = collections.Counter()
    for run in runs:
        label = thread_labels(run, trace)
        kind = analysis.run_kind(run.id)
        for freeze, resume in cpu_windows(run):
            if trace.first is None or freeze + CPU_WINDOWS[0][2] < trace.first:
                continue
            counts[kind] += 1
            for name, base, a, b in CPU_WINDOWS:
                at = (freeze if base == "freeze" else resume)
                scale = 20e6 / (b - a) / 1e6  # ms per 20 ms
                for tid, ns in trace.holders(at + a, at + b).items():
                    per_kind[kind][name][label(tid)] += ns * scale
    if not counts:
        print("(every checkpoint lies before the trace's first event: a larger --buffer-mib)")
        return
    print("CPU held per 20 ms of the host's 2 x 20 CPU-ms, ms, mean over the checkpoints: "
          "steady (2 to 1.6 s before the freeze, before the driver's amberctl starts) and "
          "after the receiver's guest clock started")
    print()
    kinds = sorted(per_kind)
    total = collections.Counter()
    for kind in kinds:
        for name, _, _, _ in CPU_WINDOWS:
            for who, ms in per_kind[kind][name].items():
                total[who] += ms / counts[kind]
    whos = [w for w, _ in total.most_common(top)]
    head = [f"{k} ({counts[k]}): {n}" for k in kinds for n, _, _, _ in CPU_WINDOWS]
    print("| thread | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for who in whos + ["(others)"]:
        cells = []
        for kind in kinds:
            for name, _, _, _ in CPU_WINDOWS:
                got = per_kind[kind][name]
                ms = (got[who] if who != "(others)"
                      else sum(v for w, v in got.items() if w not in whos))
                cells.append(f"{ms / counts[kind]:.1f}")
        print(f"| {who} | " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.schedtrace",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("record", help="run a command with the scheduler traced")
    r.add_argument("out")
    r.add_argument("--buffer-mib", type=int, default=256, help="ring per CPU (default 256)")
    s = sub.add_parser("show", help="the receiver's vCPU after each resume")
    s.add_argument("trace")
    s.add_argument("eval_dir")
    c = sub.add_parser("cpu", help="each thread's CPU in steady state and after each resume")
    c.add_argument("trace")
    c.add_argument("eval_dir")
    c.add_argument("--top", type=int, default=8, help="threads shown (default 8)")
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command after "--" is not ours to parse (it has options of its own).
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if a.what == "record":
        if not command:
            ap.error("record: give the command after --")
        if a.buffer_mib < 1:
            ap.error(f"--buffer-mib {a.buffer_mib}: at least 1")
        return record(a.out, command, a.buffer_mib)
    if a.what == "cpu":
        cpu(a.trace, a.eval_dir, a.top)
        return 0
    show(a.trace, a.eval_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
