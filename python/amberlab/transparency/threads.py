"""Who has the CPUs around a checkpoint: per-thread scheduler statistics of
the experiment's processes (delay node, QEMU, agents, controller, the
evaluation itself), sampled every few milliseconds from
/proc/PID/task/TID/schedstat (time on a CPU, time runnable but waiting for
one), plus the machine's CPU states and dirty pages.

    sampler = ThreadSampler(lambda: {"node": pid, "vm1": qemu_pid, ...})
    sampler.start(); ... ; sampler.stop(); sampler.save(PATH)   # JSON
    scripts/amber-py transparency.threads EVAL_DIR   # per checkpoint: who ran, who waited

A thread that waits while the guests should run is the post-resume
starvation issue #15 asks about."""

import json
import os
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _cpu_states():
    """user, nice, system, idle, iowait, irq, softirq, steal (jiffies)."""
    line = (_read("/proc/stat") or "cpu 0 0 0 0 0 0 0 0").split("\n", 1)[0]
    return [int(x) for x in line.split()[1:9]]


def _dirty():
    text = _read("/proc/vmstat") or ""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k in ("nr_dirty", "nr_writeback"):
            out[k] = int(v)
    return out


class ThreadSampler:
    """Samples every thread of the processes pids_fn() names (a dict
    label -> pid, re-read every second so restarted processes are found)."""

    def __init__(self, pids_fn, period_s=0.02):
        self.pids_fn = pids_fn
        self.period = period_s
        self.samples = []   # (host_ns, cpu states, dirty, {tid: (run_ns, wait_ns)})
        self.names = {}     # tid -> "label/comm"
        self._stop = threading.Event()
        self._thread = None

    def _tasks(self):
        out = []
        for label, pid in (self.pids_fn() or {}).items():
            if not pid:
                continue
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                comm = (_read(f"/proc/{pid}/task/{tid}/comm") or "?").strip()
                self.names[int(tid)] = f"{label}/{comm}"
                out.append(int(tid))
        return out

    def _loop(self):
        tasks, refreshed = [], 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - refreshed > 1.0:
                tasks, refreshed = self._tasks(), now
            stats = {}
            for tid in tasks:
                text = _read(f"/proc/{tid}/schedstat")
                if text:
                    run, wait, _ = text.split()
                    stats[tid] = (int(run), int(wait))
            self.samples.append((time.time_ns(), _cpu_states(), _dirty(), stats))
            self._stop.wait(self.period)

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"clk_tck": CLK_TCK, "names": {str(k): v for k, v in self.names.items()},
                       "samples": [[t, c, d, {str(k): v for k, v in s.items()}]
                                   for t, c, d, s in self.samples]}, f)


def load(path):
    with open(path) as f:
        return json.load(f)


def window(data, t0, t1):
    """Between host instants t0 and t1: {thread: (ms on a CPU, ms waiting
    for one)} and the machine's busy share ({state: ms of CPU})."""
    s = data["samples"]
    inside = [x for x in s if t0 <= x[0] <= t1]
    if len(inside) < 2:
        return {}, {}
    a, b = inside[0], inside[-1]
    out = {}
    for tid, (run1, wait1) in b[3].items():
        if tid in a[3]:
            run0, wait0 = a[3][tid]
            if run1 - run0 or wait1 - wait0:
                out[data["names"].get(tid, tid)] = ((run1 - run0) / 1e6, (wait1 - wait0) / 1e6)
    tick_ms = 1000.0 / data["clk_tck"]
    states = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    cpu = {k: (y - x) * tick_ms for k, x, y in zip(states, a[1], b[1])}
    cpu["dirty_mb_end"] = b[2].get("nr_dirty", 0) * 4096 / 1e6
    cpu["writeback_mb_end"] = b[2].get("nr_writeback", 0) * 4096 / 1e6
    return out, cpu


def report(eval_dir, before_s=0.2, after_s=1.5, top=8):
    """Per checkpoint of every run with a threads.json: the threads that ran
    or waited most from before_s before the resume to after_s after it."""
    lines = []
    for run in sorted(os.listdir(os.path.join(eval_dir, "runs"))):
        path = os.path.join(eval_dir, "runs", run, "threads.json")
        meta_path = os.path.join(eval_dir, "runs", run, "run.json")
        if not os.path.exists(path) or not os.path.exists(meta_path):
            continue
        data = load(path)
        with open(meta_path) as f:
            meta = json.load(f)
        for c in meta.get("checkpoints", []):
            t = c["resume_ns"]
            threads, cpu = window(data, t - int(before_s * 1e9), t + int(after_s * 1e9))
            if not threads:
                continue
            busy = sorted(threads.items(), key=lambda kv: -kv[1][0])[:top]
            waiting = sorted(threads.items(), key=lambda kv: -kv[1][1])[:top]
            lines.append(f"{run} checkpoint {c['id']}: [-{before_s}, +{after_s}] s around the resume; "
                         f"CPU ms user {cpu['user']:.0f} system {cpu['system']:.0f} idle {cpu['idle']:.0f} "
                         f"iowait {cpu['iowait']:.0f} softirq {cpu['softirq']:.0f} steal {cpu['steal']:.0f}; "
                         f"dirty {cpu['dirty_mb_end']:.0f} MB, writeback {cpu['writeback_mb_end']:.0f} MB")
            lines.append("   ran:    " + ", ".join(f"{n} {r:.0f}" for n, (r, _) in busy))
            lines.append("   waited: " + ", ".join(f"{n} {w:.0f}" for n, (_, w) in waiting))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    print(report(sys.argv[1]))
