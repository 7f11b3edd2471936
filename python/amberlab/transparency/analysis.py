"""The numbers of a transparency evaluation (bench/transparency/README.md):
an evaluation folder loaded into runs, every guest series on one axis
(guest seconds since iperf3 started, in each VM's own clock), and the
per-checkpoint statistics against the baseline at the same elapsed time.
report.py turns them into Markdown, plots and SQLite."""

import glob
import json
import os
import struct

import numpy as np

from amberlab.transparency import guest, packets

NS = 1e9
SETTLE_NS = 500_000_000  # after a checkpoint, before statistics may look back at it


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
        """(stop, resume) host ns of the VM: when its guest clock stopped and
        started (QEMU's trace lines) if the driver recorded them, else its
        QEMU STOP/RESUME events, else the checkpoint's instants."""
        out = []
        for c in self.checkpoints:
            ev = c.get("vms", {}).get(vm)
            if ev and ev.get("clock_stop_ns") and ev.get("clock_start_ns"):
                out.append((ev["clock_stop_ns"], ev["clock_start_ns"]))
            elif ev and ev.get("stop_ns") and ev.get("resume_ns"):
                out.append((ev["stop_ns"], ev["resume_ns"]))
            else:
                out.append((c["freeze_ns"], c["resume_ns"]))
        return out

    def elapsed(self, vm, guest_mono_ns):
        """Guest seconds since iperf3 was started (the host instant
        iperf_start_host_ns mapped into the VM's clock)."""
        zero = self.clocks[vm].to_guest(self.start_host)
        return (np.asarray(guest_mono_ns, dtype=np.float64) - zero) / NS

    def mono_instants(self, vm):
        """Each checkpoint's instant in the VM's guest CLOCK_MONOTONIC ns:
        when its clock stopped (QEMU's STOP event through the clock map)."""
        return [int(self.clocks[vm].to_guest(stop)) for stop, _ in self.pauses(vm)]

    def mono_at_elapsed(self, vm, elapsed_s):
        return int(self.clocks[vm].to_guest(self.start_host) + elapsed_s * NS)

    def flow(self):
        """The data connection as both guests recorded it (packets.Flow), or
        None without a receiver's rx file."""
        if "flow" not in self._series:
            rx = self.probes.get(self.receiver, {}).get("rx")
            tx = self.probes.get(self.sender, {}).get("rx")
            try:
                self._series["flow"] = packets.Flow(tx, rx) if rx is not None else None
            except ValueError:
                self._series["flow"] = None
        return self._series["flow"]

    def held(self, checkpoint):
        """The data segments the delay node held at a checkpoint, from the
        pcaps of its image the driver exported (held/<id>/*.pcap): their TCP
        sequence numbers, or None."""
        d = os.path.join(self.dir, "held", str(checkpoint["id"]))
        files = sorted(glob.glob(os.path.join(d, "*.pcap")))
        if not files:
            return None
        seqs = []
        for f in files:
            seqs += tcp_data_seqs(f, self.meta.get("sender_addr"), self.meta.get("receiver_addr"))
        return np.array(seqs, dtype=np.int64)

    def receiver_identity(self, checkpoint):
        """The checkpoint at the receiver by packet identity: (instant, index)
        where index is the position, in the receiver's arrivals, of the first
        data segment the delay node held, and instant the arrival before it
        (guest ns). None without the node's held frames."""
        seqs, flow = self.held(checkpoint), self.flow()
        if seqs is None or not len(seqs) or flow is None:
            return None
        first = packets._unwrap(seqs, flow.isn).min()
        after = np.nonzero(flow.rx.num >= first)[0]
        if not len(after) or after[0] == 0:
            return None
        return int(flow.rx.t[after[0] - 1]), int(after[0])

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
                data = (r["payload"] > 0) & (r["dir"] == 0)  # arriving, to the port
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

    def tcp_counters(self, vm):
        """What the guest's /proc/net/snmp and netstat counters counted
        during the run ("Tcp.RetransSegs", "TcpExt.TCPLossProbes", ...):
        the end's minus those from before it (since boot when the folder
        has no "before"); {} if missing."""
        def read(name):
            try:
                with open(os.path.join(self.dir, f"{vm}-{name}.txt")) as f:
                    return parse_proc_counters(f.read())
            except OSError:
                return {}
        after, before = read("tcp-counters"), read("tcp-counters-before")
        return {k: v - before.get(k, 0) for k, v in after.items()}

    def retransmit_kinds(self, vm=None):
        """What made the sender retransmit, from its kernel's counters:
        {"loss probe": n, "timeout": n, "fast": n, ...}, the kinds seen only."""
        c = self.tcp_counters(vm or self.sender)
        kinds = {"loss probe": "TcpExt.TCPLossProbes", "timeout": "TcpExt.TCPTimeouts",
                 "fast": "TcpExt.TCPFastRetrans", "slow start": "TcpExt.TCPSlowStartRetrans",
                 "spurious timeout": "TcpExt.TCPSpuriousRTOs",
                 "lost retransmit": "TcpExt.TCPLostRetransmit"}
        return {k: c[key] for k, key in kinds.items() if c.get(key)}

    def retransmit_times(self):
        """Elapsed guest seconds (the sender's) of each segment it resent."""
        flow = self.flow()
        if flow is None or self.sender not in self.clocks:
            return []
        return [float(x) for x in self.elapsed(self.sender, flow.retransmissions())]

    def retransmits_near_checkpoints(self, before_s=0.1, after_s=1.5):
        """How many of the sender's retransmits a checkpoint can have caused:
        those it sent from before_s ahead of a checkpoint's instant to after_s
        past it (guest time, which the pause does not advance: a loss probe,
        a timeout or a fast retransmit a checkpoint sets off goes within a few
        round trips of the resume), plus every retransmit iperf3 counted that
        the probe did not see (a SYN's, or a record the probe lost)."""
        times = self.retransmit_times()
        marks = self.checkpoint_elapsed(self.sender) if self.sender in self.clocks else []
        near = sum(1 for t in times if any(-before_s <= t - m <= after_s for m in marks))
        return near + max(0, (self.retransmits() or 0) - len(times))

    def retransmit_diagnosis(self):
        """One line on the sender's retransmits: how many, of which kind,
        when, and how far each lay from the nearest checkpoint."""
        times = self.retransmit_times()
        marks = self.checkpoint_elapsed(self.sender) if self.sender in self.clocks else []
        near = [min((t - m for m in marks), key=abs) for t in times] if marks else []
        more = f" (the first 12 of {len(times)})" if len(times) > 12 else ""
        # Where a segment can have been lost or held back: the receiver's
        # kernel, the sender's view of it, the taps, the delay node.
        watch = ("TcpExt.TCPRcvQDrop", "TcpExt.TCPOFODrop", "TcpExt.TCPBacklogDrop",
                 "TcpExt.PruneCalled", "TcpExt.OfoPruned", "TcpExt.TCPZeroWindowDrop",
                 "Ip.InDiscards", "TcpExt.TCPOFOQueue", "TcpExt.TCPDSACKOldSent")
        rx = {k.split(".", 1)[1]: v for k, v in self.tcp_counters(self.receiver).items()
              if (k in watch or k.endswith(("_drop", "_fifo"))) and v} if self.receiver else {}
        tx = {k.split(".", 1)[1]: v for k, v in self.tcp_counters(self.sender).items()
              if (k in ("TcpExt.TCPDSACKRecv", "TcpExt.TCPSACKReorder", "TcpExt.TCPTSReorder",
                        "TcpExt.TCPSpuriousRtxHostQueues", "TcpExt.TCPLossUndo")
                  or k.endswith(("_drop", "_fifo"))) and v}
        return (f"{self.id}: {self.retransmits()} retransmits, kinds "
                f"{self.retransmit_kinds()}, iperf3 intervals {self.retransmit_intervals()}, "
                f"resent at {[round(t, 3) for t in times[:12]]} s{more}, "
                f"from the nearest checkpoint {[round(x * 1e3, 1) for x in near[:12]]} ms, "
                f"checkpoints at {[round(m, 3) for m in marks]} s; receiver's counters {rx}, "
                f"sender's {tx}, taps dropped {self.meta.get('tap_dropped')}, "
                f"the kernel's interfaces dropped {self.meta.get('path_dropped')}, "
                f"passed the receiver's tap and never reached its guest "
                f"{self._lost_after_tap()}, "
                f"node dropped {({k: v for k, v in self.drops().items() if v})}")

    def _lost_after_tap(self):
        """transparency.paths.lost_after_tap, shortened: '-' without tap
        captures."""
        from amberlab.transparency import paths
        lost = paths.lost_after_tap(self)
        if lost is None:
            return "- (no tap capture)"
        return f"{len(lost)} at {[round(x[2], 1) for x in lost if x[2] is not None][:8]} ms " \
               f"from a freeze"

    def retransmit_intervals(self):
        """[(iperf3 interval start s, retransmits)] for the intervals with any."""
        out = []
        for i in (self.iperf or {}).get("intervals", []):
            n = i.get("sum", {}).get("retransmits", 0)
            if n:
                out.append((round(i["sum"]["start"], 1), n))
        return out

    def probe_losses(self):
        """Records the probes could not keep (buffer full, kernel ring full)."""
        out = {}
        for vm, files in self.probes.items():
            for kind, f in files.items():
                out[f"{vm}/{kind}"] = f.header["lost_full"] + f.header["lost_kernel"]
        return out


def run_kind(run_id):
    """A run folder's name without its number: "amber-shift-2" -> "amber-shift"
    (variants stay apart; Run.kind is the bare kind)."""
    return run_id.rstrip("0123456789-_")


def parse_proc_counters(text):
    """/proc/net/snmp and /proc/net/netstat text -> {"Group.Name": int}: each
    group is a header line and a value line with the same prefix; and
    /proc/net/dev's interface lines -> {"Dev.eth0.rx_drop": int, ...}."""
    out, header = {}, {}
    for line in text.splitlines():
        group, _, rest = line.partition(":")
        fields = rest.split()
        if not group or not fields:
            continue
        if group not in header and len(fields) == 16 and all(f.isdigit() for f in fields):
            # A /proc/net/dev line: "  eth0: rx bytes packets errs drop fifo
            # frame compressed multicast, tx bytes packets errs drop ...".
            dev = group.strip()
            for name, k in (("rx_packets", 1), ("rx_drop", 3), ("rx_fifo", 4),
                            ("tx_packets", 9), ("tx_drop", 11), ("tx_fifo", 12)):
                out[f"Dev.{dev}.{name}"] = int(fields[k])
            continue
        if group not in header:
            header[group] = fields
            continue
        names = header.pop(group)
        if len(names) != len(fields):
            continue
        for name, value in zip(names, fields):
            try:
                out[f"{group}.{name}"] = int(value)
            except ValueError:
                pass
    return out


def tcp_data_seqs(path, src=None, dst=None):
    """TCP sequence numbers of the frames with payload in a pcap (Ethernet,
    IPv4), optionally only from `src` to `dst` (dotted addresses)."""
    return [seq for _, seq in pcap_tcp_data(path, src, dst)]


def pcap_tcp_data(path, src=None, dst=None, sport=None):
    """(capture instant ns, TCP sequence number) of each frame with payload
    in a pcap (Ethernet, IPv4; micro- or nanosecond stamps), optionally only
    from `src` to `dst` (dotted addresses) and from TCP port `sport`."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = struct.unpack_from(endian + "I", data)[0] == 0xA1B23C4D
    out, off = [], 24
    want = (bytes(int(x) for x in src.split(".")) if src else None,
            bytes(int(x) for x in dst.split(".")) if dst else None)
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        tot = struct.unpack_from(">H", frame, 16)[0]
        if (want[0] and frame[26:30] != want[0]) or (want[1] and frame[30:34] != want[1]):
            continue
        tcp = 14 + ihl
        if len(frame) < tcp + 20:
            continue
        doff = (frame[tcp + 12] >> 4) * 4
        if sport is not None and struct.unpack_from(">H", frame, tcp)[0] != sport:
            continue
        if tot - ihl - doff > 0:
            t = sec * 1_000_000_000 + (frac if nano else frac * 1000)
            out.append((t, struct.unpack_from(">I", frame, tcp + 4)[0]))
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

    # ---- packet-level statistics (packets.py) ----

    def tcp_max_mbps(self):
        """The most goodput TCP can get through the link at the run's MTU."""
        return packets.tcp_max_mbps(self.link_rate_bps(),
                                    packets.tcp_mss(self.params.get("mtu", 1500)))

    def link_rate_bps(self):
        from_params = self.params.get("rate_bps")
        if from_params:
            return float(from_params)
        text = str(self.params.get("rate", "0")).lower().replace("bit", "").replace("/s", "")
        scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:], 1.0)
        try:
            return float(text.rstrip("kmg")) * scale
        except ValueError:
            return float("nan")

    def reverse_delay_ns(self):
        """The ACK direction's configured one-way delay (the link's delay)."""
        text = str(self.params.get("delay", "")).strip().lower()
        for unit, scale in (("ms", 1e6), ("us", 1e3), ("ns", 1.0), ("s", 1e9)):
            if text.endswith(unit):
                try:
                    return float(text[:-len(unit)]) * scale
                except ValueError:
                    return None
        return None

    def packet_at(self, run, sender_instant, receiver_instant, identity_index=None, not_before=None):
        """At one instant: the OWD distortions (ns array, against the link's
        replay) and RTT distortions (against the RTT just before) of the
        segments in flight, how many of them were faster than the path
        allows (owd_early, rtt_early: count, of n), and the burst index."""
        flow = run.flow()
        out = {"owd": None, "owd_tx": None, "rtt": None, "burst": float("nan"), "rtt_ref": None,
               "owd_early": (None, 0), "rtt_early": (None, 0), "stall": float("nan")}
        if flow is None:
            return out
        rate = self.link_rate_bps()
        delay = self.reverse_delay_ns()
        rtt = flow.rtt_samples()
        rtt_flight = None
        if rtt is not None and len(rtt[0]):
            rtt_flight = packets.flight_time(rtt[0], rtt[1], sender_instant)
            d, ref, _ = packets.in_flight_distortion(rtt[0], rtt[1], sender_instant, rtt_flight)
            out["rtt"], out["rtt_ref"] = d, ref
            if delay is not None:  # faster than the two propagation delays
                out["rtt_early"] = packets.early(rtt[0], rtt[1], sender_instant, rtt_flight, 2 * delay)
        seg = flow.segments()
        acks = flow.ack_delays()
        if seg is not None and len(seg[0]) and rtt_flight is not None:
            # The data's one-way flight: the RTT less the ACK's way back.
            flight = rtt_flight - delay if delay is not None else rtt_flight / 2
            floor = packets.owd_floor(*(acks or (None, None)), sender_instant, delay,
                                      not_before=not_before)
            out["owd"], out["owd_tx"] = packets.link_replay(seg[1], seg[2], seg[3], sender_instant,
                                                            flight, rate, floor)
            if out["owd_tx"] is not None:
                out["owd_tx"] = out["owd_tx"] - sender_instant
            out["owd_early"] = packets.early(seg[1], seg[2], sender_instant, flight, floor)
        if np.isfinite(rate) and rate > 0:
            out["burst"] = packets.burst_index(flow.rx.t, flow.rx.payload, receiver_instant,
                                               int(self.window_s / 2 * NS), rate)
        out["stall"] = packets.stall_around(flow.rx.t, receiver_instant, first_after=identity_index)
        return out

    def packet_effects(self, run, reference=None):
        """Per checkpoint (window "checkpoint"), control instant halfway
        between two ("control"), and for a baseline run at the reference
        run's checkpoint instants ("null"): the packet statistics. Rows carry
        `owd`/`rtt` (ns arrays of the in-flight segments, or None) and
        `burst`."""
        if run.sender not in run.clocks or run.receiver not in run.clocks or run.flow() is None:
            return []
        rows = []
        if reference is not None:  # a baseline at another run's instants
            if reference.sender not in reference.clocks:
                return []
            for c, e in zip(reference.checkpoints, reference.checkpoint_elapsed(reference.sender)):
                s = run.mono_at_elapsed(run.sender, e)
                r = run.mono_at_elapsed(run.receiver, e)
                rows.append(dict(self.packet_at(run, s, r), run=run.id, window="null",
                                 checkpoint=c["id"], elapsed_s=e, identity=False))
            return rows
        s_inst, r_inst = run.mono_instants(run.sender), run.mono_instants(run.receiver)
        elapsed = run.checkpoint_elapsed(run.sender)
        for i, c in enumerate(run.checkpoints):
            ident = run.receiver_identity(c)
            r = ident[0] if ident else r_inst[i]
            # Windows reaching back stop short of the previous checkpoint.
            settle = s_inst[i - 1] + SETTLE_NS if i else None
            rows.append(dict(self.packet_at(run, s_inst[i], r, ident[1] if ident else None, settle),
                             run=run.id, window="checkpoint", checkpoint=c["id"],
                             elapsed_s=elapsed[i], identity=ident is not None))
        for i in range(len(run.checkpoints) - 1):
            s = (s_inst[i] + s_inst[i + 1]) // 2
            r = (r_inst[i] + r_inst[i + 1]) // 2
            rows.append(dict(self.packet_at(run, s, r, not_before=s_inst[i] + SETTLE_NS), run=run.id,
                             window="control", checkpoint=None,
                             elapsed_s=(elapsed[i] + elapsed[i + 1]) / 2, identity=False))
        return rows

    def all_packet_effects(self):
        rows = [row for r in self.checked for row in self.packet_effects(r)]
        ref = next((r for r in self.checked if r.kind == "amber"), None) or \
            (self.checked[0] if self.checked else None)
        if ref is not None:
            for b in self.baselines:
                rows += self.packet_effects(b, reference=ref)
        return rows


def pooled(rows, run, window, metric):
    """Every in-flight segment's distortion (ns) of a run's windows, pooled."""
    arrays = [r[metric] for r in rows if r["run"] == run and r["window"] == window
              and r[metric] is not None and len(r[metric])]
    return np.concatenate(arrays) if arrays else np.array([], dtype=np.int64)


def per_window(rows, run, window, metric, percentile=50):
    """The median distortion (ns) of each window (or another percentile:
    5 is its earliest segments'), or the burst index."""
    out = []
    for r in rows:
        if r["run"] != run or r["window"] != window:
            continue
        v = r[metric]
        if metric == "burst":
            out.append(v)
        elif v is not None and len(v):
            out.append(float(np.percentile(v, percentile)))
    return out


def distortion_summary(values_ns):
    """median, median |.|, p99 |.| (ms) and n of pooled distortions."""
    v = np.asarray(values_ns, dtype=np.float64) / 1e6
    if len(v) == 0:
        return {"n": 0}
    a = np.abs(v)
    return {"n": int(len(v)), "median": float(np.median(v)), "median_abs": float(np.median(a)),
            "p99_abs": float(np.percentile(a, 99)), "min": float(v.min()), "max": float(v.max())}


def compare_runs(rows, run_a, run_b, metric="owd", window="checkpoint"):
    """Run a against run b directly, checkpoint by checkpoint: the median
    of a's per-checkpoint median |distortion| (ms), the same of b's, their
    ratio, the difference of medians with a bootstrap 95 % interval, and
    P(|a| < |b|) over pairs of checkpoints (0.5: no difference)."""
    a = np.abs(per_window(rows, run_a, window, metric))
    b = np.abs(per_window(rows, run_b, window, metric))
    if metric != "burst":
        a, b = a / 1e6, b / 1e6
    if len(a) < 2 or len(b) < 2:
        return None
    d = median_difference(a, b)
    less = 1.0 - d["p_greater"]
    ma, mb = float(np.median(a)), float(np.median(b))
    return {"a": ma, "b": mb, "ratio": ma / mb if mb else float("inf"), "diff": d["diff"],
            "ci_lo": d["ci_lo"], "ci_hi": d["ci_hi"], "p_a_smaller": less, "n_a": len(a), "n_b": len(b)}
