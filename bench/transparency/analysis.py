"""The numbers of a transparency evaluation (bench/transparency/README.md):
an evaluation folder loaded into runs, every guest series on one axis
(guest seconds since iperf3 started, in each VM's own clock), and the
per-checkpoint statistics against the baseline at the same elapsed time.
report.py turns them into Markdown, plots and SQLite."""

import json
import os

import numpy as np

import guest

NS = 1e9


def _load_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


class Run:
    """One run folder: run.json, iperf3.json, probe/<vm>/*.bin."""

    def __init__(self, eval_dir, run_id):
        self.id = run_id
        self.dir = os.path.join(eval_dir, "runs", run_id)
        self.meta = _load_json(os.path.join(self.dir, "run.json"), {})
        self.kind = self.meta.get("name", run_id.split("-")[0])
        self.iperf = _load_json(os.path.join(self.dir, "iperf3.json"))
        self.probes = {}
        probe_root = os.path.join(self.dir, "probe")
        if os.path.isdir(probe_root):
            for vm in sorted(os.listdir(probe_root)):
                self.probes[vm] = guest.read_probe_dir(os.path.join(probe_root, vm))
        self.checkpoints = sorted(self.meta.get("checkpoints", []), key=lambda c: c["freeze_ns"])
        self.start_host = self.meta.get("iperf_start_host_ns")
        self.end_host = self.meta.get("iperf_end_host_ns")
        self.clocks = {}
        self.raw_residuals_us = {}
        self.drift_us = {}         # residuals over stretches without a pause
        self.pause_excess_us = {}  # guest time lost per pause beyond the recorded pause
        for vm, anchors in self.meta.get("guest_clock", {}).items():
            if not anchors:
                continue
            rtts = [a["rtt_ns"] for a in anchors if a.get("rtt_ns")]
            limit = max(2_000_000, 3 * float(np.median(rtts))) if rtts else None
            m = guest.ClockMap(anchors, self.pauses(vm), max_rtt_ns=limit)
            res = m.residuals()
            self.raw_residuals_us[vm] = [r / 1e3 for r in res]
            self.drift_us[vm], self.pause_excess_us[vm] = [], []
            for prev, a, r in zip(m.anchors, m.anchors[1:], res[1:]):
                n = m.pauses_between(prev["host_ns"], a["host_ns"])
                if n:
                    self.pause_excess_us[vm].append(-r / n / 1e3)
                else:
                    self.drift_us[vm].append(r / 1e3)
            m.fit_rate()
            self.clocks[vm] = m
        self.receiver = self.meta.get("receiver") or next(
            (vm for vm, p in self.probes.items() if "rx" in p), None)
        self.sender = self.meta.get("sender") or next(
            (vm for vm in self.clocks if vm != self.receiver), None)
        self.iperf_error = (self.iperf or {}).get("error") if self.iperf else "no iperf3.json"
        self._series = {}
        self.iperf_lag_s = self._iperf_lag()

    def pauses(self, vm):
        """(stop, resume) host ns of the VM: its own QEMU events if the
        driver recorded them, else the checkpoint's freeze/resume instants."""
        out = []
        for c in self.checkpoints:
            ev = c.get("vms", {}).get(vm)
            if ev and ev.get("stop_ns") and ev.get("resume_ns"):
                out.append((ev["stop_ns"], ev["resume_ns"]))
            else:
                out.append((c["freeze_ns"], c["resume_ns"]))
        return out

    def elapsed(self, vm, guest_mono_ns):
        """Guest seconds since iperf3 was started (the host instant
        iperf_start_host_ns mapped into the VM's clock)."""
        zero = self.clocks[vm].to_guest(self.start_host)
        return (np.asarray(guest_mono_ns, dtype=np.float64) - zero) / NS

    def checkpoint_elapsed(self, vm):
        """Each checkpoint's instant in the VM's elapsed guest time: when
        its guest clock stopped."""
        return [float(self.elapsed(vm, self.clocks[vm].to_guest(stop))) for stop, _ in self.pauses(vm)]

    # ---- series (elapsed seconds, values) ----

    def rx_data(self):
        """Receiver: (elapsed s of each arriving data segment, payload bytes)."""
        if "rx" not in self._series:
            f = self.probes.get(self.receiver, {}).get("rx")
            if f is None or self.receiver not in self.clocks:
                self._series["rx"] = (np.array([]), np.array([]))
            else:
                r = f.records
                data = (r["payload"] > 0) & (r["dir"] == 0)
                mono = f.mono_times()[data]
                order = np.argsort(mono, kind="stable")
                self._series["rx"] = (self.elapsed(self.receiver, mono[order]),
                                      r["payload"][data][order].astype(np.int64))
        return self._series["rx"]

    def timed(self, vm, kind):
        """timer or cpu of one VM: (elapsed start s, duration s)."""
        key = (vm, kind)
        if key not in self._series:
            f = self.probes.get(vm, {}).get(kind)
            if f is None or vm not in self.clocks:
                self._series[key] = (np.array([]), np.array([]))
            else:
                self._series[key] = (self.elapsed(vm, f.records["start_ns"]),
                                     f.records["duration_ns"] / NS)
        return self._series[key]

    def nominal(self, vm, kind):
        f = self.probes.get(vm, {}).get(kind)
        if f is None:
            return None
        return f.header["sleep_ns"] / NS if kind == "timer" else f.header["calibrated_ns"] / NS

    def _iperf_lag(self):
        """Seconds from iperf_start_host_ns to the first data segment at the
        receiver: where iperf3's own t = 0 lies on the elapsed axis."""
        t, _ = self.rx_data()
        return float(t[0]) if len(t) else 0.0

    def intervals(self):
        """iperf3's intervals: dicts with start/end on the elapsed axis."""
        if not self.iperf or "intervals" not in self.iperf:
            return []
        out = []
        for iv in self.iperf["intervals"]:
            s = iv["sum"]
            st = iv["streams"][0] if iv.get("streams") else {}
            out.append({"start": s["start"] + self.iperf_lag_s, "end": s["end"] + self.iperf_lag_s,
                        "iperf_start": s["start"], "iperf_end": s["end"],
                        "bytes": s.get("bytes", 0), "bps": s.get("bits_per_second", 0.0),
                        "retransmits": s.get("retransmits", st.get("retransmits", 0)) or 0,
                        "snd_cwnd": st.get("snd_cwnd"), "rtt_us": st.get("rtt"),
                        "omitted": s.get("omitted", False)})
        return out

    def throughput_mbps(self):
        if not self.iperf or "end" not in self.iperf:
            return None
        end = self.iperf["end"]
        s = end.get("sum_received") or end.get("sum")
        return s["bits_per_second"] / 1e6 if s else None

    def retransmits(self):
        if not self.iperf or "end" not in self.iperf:
            return None
        return self.iperf["end"].get("sum_sent", {}).get("retransmits")

    def drops(self):
        return self.meta.get("delaynode", {}).get("dropped", {})

    def probe_losses(self):
        """Records the probes could not keep (buffer full, kernel ring full)."""
        out = {}
        for vm, files in self.probes.items():
            for kind, f in files.items():
                out[f"{vm}/{kind}"] = f.header["lost_full"] + f.header["lost_kernel"]
        return out


# ---- window statistics ----

def max_gap_in(t, lo, hi):
    """Largest gap between consecutive instants t (sorted) that overlaps
    [lo, hi]; NaN without two instants around the window."""
    if len(t) < 2:
        return float("nan")
    i0 = max(int(np.searchsorted(t, lo, "left")) - 1, 0)
    i1 = min(int(np.searchsorted(t, hi, "right")) + 1, len(t))
    seg = t[i0:i1]
    if len(seg) < 2 or seg[0] > hi or seg[-1] < lo:
        return float("nan")
    return float(np.diff(seg).max())


def max_duration_in(start, dur, lo, hi):
    """Largest duration of the records overlapping [lo, hi]."""
    if len(start) == 0:
        return float("nan")
    sel = (start < hi) & (start + dur > lo)
    return float(dur[sel].max()) if sel.any() else float("nan")


def gap_at(t, x):
    """The gap between consecutive instants t (sorted) that contains x."""
    i = int(np.searchsorted(t, x, "right"))
    if i == 0 or i >= len(t):
        return float("nan")
    return float(t[i] - t[i - 1])


def duration_at(start, dur, x):
    """The duration of the first record still running at x (the one a
    pause at x falls into, or the next one if x is between two)."""
    if len(start) == 0:
        return float("nan")
    i = int(np.searchsorted(start + dur, x, "right"))
    return float(dur[i]) if i < len(start) and start[i] <= x + 0.05 else float("nan")


METRICS = {
    # name: (what it is, unit, target in that unit): *_max over the window
    # around a checkpoint, *_at the one gap/sleep/unit the instant falls into.
    "ipt_max": ("largest inter-packet time at the receiver", "us", 100.0),
    "sleep_max": ("longest 10 ms sleep", "us", 80.0),
    "cpu_max": ("slowest CPU work unit", "us", 1000.0),
    "ipt_at": ("inter-packet time spanning the instant", "us", 100.0),
    "sleep_at": ("10 ms sleep spanning the instant", "us", 80.0),
    "cpu_at": ("CPU unit spanning the instant", "us", 1000.0),
}


def _kind(metric):
    return {"ipt": "rx", "sleep": "timer", "cpu": "cpu"}[metric.split("_")[0]]


def window_stat(run, metric, vm, lo, hi):
    """The metric's statistic for `run` in elapsed window [lo, hi] (seconds)."""
    kind, at = _kind(metric), metric.endswith("_at")
    if kind == "rx":
        t, _ = run.rx_data()
        return gap_at(t, (lo + hi) / 2) if at else max_gap_in(t, lo, hi)
    start, dur = run.timed(vm, kind)
    return duration_at(start, dur, (lo + hi) / 2) if at else max_duration_in(start, dur, lo, hi)


def metric_vms(run, metric):
    kind = _kind(metric)
    if kind == "rx":
        return [run.receiver] if run.receiver and len(run.rx_data()[0]) else []
    return [vm for vm in sorted(run.probes) if kind in run.probes[vm] and vm in run.clocks]


def quantiles(values):
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"n": 0}
    q = np.percentile(v, [25, 50, 75, 99])
    ci = bootstrap_ci(v, np.median)
    return {"n": int(len(v)), "median": float(q[1]), "iqr_lo": float(q[0]), "iqr_hi": float(q[2]),
            "p99": float(q[3]), "max": float(v.max()), "min": float(v.min()),
            "ci_lo": ci[0], "ci_hi": ci[1]}


def bootstrap_ci(v, stat, n=2000, seed=1):
    """95 % percentile-bootstrap interval of stat(v); deterministic."""
    v = np.asarray(v, dtype=np.float64)
    if len(v) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.choice(v, size=(n, len(v)), replace=True)
    s = np.apply_along_axis(stat, 1, draws)
    return (float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5)))


def median_difference(a, b):
    """median(a) - median(b) with a bootstrap 95 % interval, and the
    probability that a random a exceeds a random b (0.5: no effect)."""
    a = np.asarray([x for x in a if np.isfinite(x)])
    b = np.asarray([x for x in b if np.isfinite(x)])
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(2)
    diffs = [np.median(rng.choice(a, len(a))) - np.median(rng.choice(b, len(b))) for _ in range(2000)]
    greater = (a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean()
    return {"diff": float(np.median(a) - np.median(b)), "ci_lo": float(np.percentile(diffs, 2.5)),
            "ci_hi": float(np.percentile(diffs, 97.5)), "p_greater": float(greater)}


class Evaluation:
    def __init__(self, eval_dir, window_s=1.0, tcp_window_s=2.0):
        self.dir = eval_dir
        self.params = _load_json(os.path.join(eval_dir, "params.json"), {})
        self.timeline = _load_json(os.path.join(eval_dir, "timeline.json"), {})
        runs_dir = os.path.join(eval_dir, "runs")
        ids = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
        order = self.params.get("runs") or ids
        self.runs = [Run(eval_dir, r) for r in order if os.path.isdir(os.path.join(runs_dir, r))]
        self.window_s = window_s
        self.tcp_window_s = tcp_window_s
        self.baselines = [r for r in self.runs if r.kind == "baseline" and not r.iperf_error]
        self.checked = [r for r in self.runs if r.kind != "baseline"]

    def baseline_stat(self, metric, vm_index, lo, hi):
        """The median over baseline runs of the statistic in [lo, hi]."""
        vals = []
        for b in self.baselines:
            vms = metric_vms(b, metric)
            if vm_index < len(vms):
                vals.append(window_stat(b, metric, vms[vm_index], lo, hi))
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.median(vals)) if vals else float("nan")

    def effects(self, run):
        """Per checkpoint (and per control window halfway between two) and
        metric: the run's statistic, the baseline's at the same elapsed
        window, and their difference (seconds)."""
        rows = []
        half = self.window_s / 2
        for metric in METRICS:
            for vi, vm in enumerate(metric_vms(run, metric)):
                instants = run.checkpoint_elapsed(vm)
                controls = [(a + b) / 2 for a, b in zip(instants, instants[1:])]
                for label, points in (("checkpoint", instants), ("control", controls)):
                    for i, e in enumerate(points):
                        value = window_stat(run, metric, vm, e - half, e + half)
                        base = self.baseline_stat(metric, vi, e - half, e + half)
                        cid = run.checkpoints[i]["id"] if label == "checkpoint" else None
                        rows.append({"run": run.id, "metric": metric, "vm": vm, "window": label,
                                     "checkpoint": cid, "elapsed_s": e, "value": value,
                                     "baseline": base, "added": value - base})
        return rows

    def null_effects(self):
        """Two baseline runs against each other at the amber run's checkpoint
        windows: what 'added' looks like without any checkpoint."""
        if len(self.baselines) < 2:
            return []
        ref = next((r for r in self.checked if r.kind == "amber"), None) or \
            (self.checked[0] if self.checked else None)
        if ref is None:
            return []
        b1, b2 = self.baselines[:2]
        rows = []
        half = self.window_s / 2
        for metric in METRICS:
            v1, v2 = metric_vms(b1, metric), metric_vms(b2, metric)
            for vi, vm in enumerate(metric_vms(ref, metric)):
                if vi >= len(v1) or vi >= len(v2):
                    continue
                for e in ref.checkpoint_elapsed(vm):
                    a = window_stat(b2, metric, v2[vi], e - half, e + half)
                    b = window_stat(b1, metric, v1[vi], e - half, e + half)
                    rows.append({"run": f"{b2.id} vs {b1.id}", "metric": metric, "vm": vm,
                                 "window": "null", "checkpoint": None, "elapsed_s": e,
                                 "value": a, "baseline": b, "added": a - b})
        return rows

    def tcp_per_checkpoint(self, run):
        """Per checkpoint: retransmits in the iperf3 intervals overlapping
        [e - W/4, e + 3W/4] (W = tcp_window_s) minus the baselines' mean there,
        and the congestion window after over before."""
        if not run.sender or run.sender not in run.clocks:
            return []
        ivs = run.intervals()
        out = []
        for c, e in zip(run.checkpoints, run.checkpoint_elapsed(run.sender)):
            lo, hi = e - self.tcp_window_s / 4, e + 3 * self.tcp_window_s / 4
            retr = sum(iv["retransmits"] for iv in ivs if iv["start"] < hi and iv["end"] > lo)
            base = [sum(iv["retransmits"] for iv in b.intervals() if iv["start"] < hi and iv["end"] > lo)
                    for b in self.baselines]
            before = [iv["snd_cwnd"] for iv in ivs if iv["end"] <= e and iv["snd_cwnd"]]
            after = [iv["snd_cwnd"] for iv in ivs if iv["start"] >= e + self.tcp_window_s / 2
                     and iv["snd_cwnd"]]
            out.append({"checkpoint": c["id"], "elapsed_s": e, "retransmits": retr,
                        "baseline_retransmits": float(np.mean(base)) if base else float("nan"),
                        "cwnd_before": before[-1] if before else None,
                        "cwnd_after": after[0] if after else None})
        return out
