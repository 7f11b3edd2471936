"""The report's PNG plots (matplotlib, Agg backend)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amberlab.transparency import analysis as an  # noqa: E402

COLORS = {"baseline": "tab:gray", "amber": "tab:blue", "naive": "tab:red", "sham": "tab:olive"}


def _color(run):
    return COLORS.get(run.kind, "tab:green")


def _mark_checkpoints(ax, run, vm):
    if not vm or vm not in run.clocks:
        return
    for e in run.checkpoint_elapsed(vm):
        ax.axvline(e, color="k", ls="--", lw=0.7, alpha=0.6)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n, height=2.2):
    fig, axes = plt.subplots(n, 1, figsize=(10, height * n + 0.6), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def throughput(ev, path):
    fig, axes = _grid(len(ev.runs))
    for ax, r in zip(axes, ev.runs):
        ivs = r.intervals()
        if ivs:
            ax.step([iv["start"] for iv in ivs], [iv["bps"] / 1e6 for iv in ivs], where="post",
                    color=_color(r), label="iperf3 interval (sender)")
        t, b = r.rx_data()
        if len(t):
            bins = np.arange(0, t[-1] + 0.1, 0.1)
            h, _ = np.histogram(t, bins=bins, weights=b)
            ax.plot(bins[:-1] + 0.05, h * 8 / 0.1 / 1e6, color="k", lw=0.5, alpha=0.5,
                    label="goodput in the receiver, 100 ms bins")
        _mark_checkpoints(ax, r, r.sender or r.receiver)
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{r.id}", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("elapsed guest time since iperf3 start (s); dashed: checkpoints")
    return _save(fig, path)


def cwnd(ev, path):
    fig, axes = _grid(len(ev.runs))
    for ax, r in zip(axes, ev.runs):
        ivs = [iv for iv in r.intervals() if iv["snd_cwnd"]]
        if ivs:
            ax.step([iv["start"] for iv in ivs], [iv["snd_cwnd"] / 1e3 for iv in ivs], where="post",
                    color=_color(r))
            rt = [iv for iv in ivs if iv["retransmits"]]
            if rt:
                ax.scatter([iv["start"] for iv in rt], [iv["snd_cwnd"] / 1e3 for iv in rt], marker="x",
                           color="r", zorder=3, label="interval with retransmits")
                ax.legend(fontsize=7)
        _mark_checkpoints(ax, r, r.sender)
        ax.set_ylabel("cwnd (kB)")
        ax.set_title(r.id, fontsize=9, loc="left")
    axes[-1].set_xlabel("elapsed guest time since iperf3 start (s)")
    return _save(fig, path)


def inter_packet(ev, path):
    fig, axes = _grid(len(ev.runs))
    for ax, r in zip(axes, ev.runs):
        t, _ = r.rx_data()
        if len(t) > 1:
            ax.plot(t[1:], np.diff(t) * 1e3, ",", color=_color(r))
            ax.set_yscale("log")
        _mark_checkpoints(ax, r, r.receiver)
        ax.set_ylabel("gap (ms)")
        ax.set_title(f"{r.id}: receiver inter-packet time", fontsize=9, loc="left")
    axes[-1].set_xlabel("elapsed guest time since iperf3 start (s)")
    return _save(fig, path)


def sleep_cpu(ev, path):
    fig, axes = plt.subplots(len(ev.runs), 2, figsize=(12, 2.2 * len(ev.runs) + 0.6), sharex=True,
                             squeeze=False)
    for row, r in zip(axes, ev.runs):
        for ax, kind, label in ((row[0], "timer", "10 ms sleep (ms)"), (row[1], "cpu", "CPU unit (ms)")):
            for vm in sorted(r.probes):
                if kind in r.probes[vm] and vm in r.clocks:
                    s, d = r.timed(vm, kind)
                    ax.plot(s, d * 1e3, ".", ms=1.5, label=vm)
                    _mark_checkpoints(ax, r, vm)
            ax.set_ylabel(label)
            ax.set_title(r.id, fontsize=9, loc="left")
            if ax.lines:
                ax.legend(fontsize=7, markerscale=5)
    for ax in axes[-1]:
        ax.set_xlabel("elapsed guest time since iperf3 start (s)")
    return _save(fig, path)


def effects_plot(ev, effects, path):
    metrics = list(an.METRICS)
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        groups = {}
        for e in effects:
            if e["metric"] == metric and np.isfinite(e["added"]):
                groups.setdefault(f"{e['run']}\n{e['window']}", []).append(e["added"] * 1e3)
        labels = sorted(groups, key=lambda k: ("null" in k, "control" in k, k))
        for i, k in enumerate(labels):
            v = groups[k]
            jitter = (np.random.default_rng(i).random(len(v)) - 0.5) * 0.3
            ax.scatter(np.full(len(v), i) + jitter, v, s=12, alpha=0.8)
            ax.hlines(np.median(v), i - 0.3, i + 0.3, color="k")
        target = an.METRICS[metric][2] / 1e3
        ax.axhline(target, color="g", ls=":", label=f"target {target:g} ms")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=30)
        ax.set_ylabel(f"added {metric} (ms)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.legend(fontsize=7)
    return _save(fig, path)


def zoom(ev, path, span=(-0.3, 0.6)):
    """Receiver's bytes around one checkpoint of each checkpointed run
    (the save/restore one if any), with the baseline at the same window."""
    runs = [r for r in ev.checked if r.checkpoints and len(r.rx_data()[0])]
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, r in zip(axes[0], runs):
        idx = next((i for i, c in enumerate(r.checkpoints) if c.get("restore")), 0)
        e = r.checkpoint_elapsed(r.receiver)[idx]
        for run in [r] + ev.baselines[:1]:
            t, b = run.rx_data()
            sel = (t >= e + span[0]) & (t <= e + span[1])
            if sel.any():
                ax.plot((t[sel] - e) * 1e3, np.cumsum(b[sel]) / 1e6, ".", ms=1.5, color=_color(run),
                        label=run.id)
        ax.axvline(0, color="k", ls="--", lw=0.7)
        ax.set_title(f"{r.id}: checkpoint {r.checkpoints[idx]['id']}"
                     f"{' (save/restore)' if r.checkpoints[idx].get('restore') else ''}", fontsize=9)
        ax.set_xlabel("guest ms from the checkpoint")
        ax.set_ylabel("MB received in the window")
        ax.legend(fontsize=7, markerscale=5)
    return _save(fig, path)


def owd_around(ev, packet_rows, path):
    """One-way delay distortion of the segments in flight at each checkpoint
    (against the link's replay), by when they were sent relative to the
    sender's instant: amber flat, naive dipping; the baseline at the same
    instants and the control windows show the noise."""
    kinds = [("checkpoint", "amber"), ("checkpoint", "naive"), ("checkpoint", "sham"),
             ("control", "amber"), ("null", "baseline")]
    panels = [(w, k) for w, k in kinds if any(r["window"] == w and r["run"].split("-")[0] == k
                                                and r["owd"] is not None for r in packet_rows)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharey=True,
                             squeeze=False)
    for ax, (window, kind) in zip(axes[0], panels):
        for r in packet_rows:
            if r["window"] != window or r["run"].split("-")[0] != kind or r["owd"] is None:
                continue
            ax.plot(r["owd_tx"] / 1e6, r["owd"] / 1e6, ".", ms=1.2, alpha=0.5,
                    color=COLORS.get(kind, "tab:green"))
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{kind}: {window}", fontsize=9)
        ax.set_xlabel("sent (ms, 0 = the sender stopped)")
    axes[0][0].set_ylabel("OWD − link replay (ms)")
    axes[0][0].set_yscale("symlog", linthresh=1)
    return _save(fig, path)


def bursts(ev, packet_rows, path):
    """The burst index around each checkpoint (most wire bytes received in a
    5 ms window over what the link carries in 5 ms) and the stall around
    it, per run and kind of window."""
    groups = {}
    for r in packet_rows:
        key = f"{r['run']}\n{r['window']}"
        groups.setdefault(key, {"burst": [], "stall": []})
        if np.isfinite(r["burst"]):
            groups[key]["burst"].append(r["burst"])
        if np.isfinite(r["stall"]):
            groups[key]["stall"].append(r["stall"] / 1e6)
    if not groups:
        return None
    labels = sorted(groups, key=lambda k: ("null" in k, "control" in k, k))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, label in ((axes[0], "burst", "burst index (5 ms)"),
                              (axes[1], "stall", "longest receive gap around it (ms)")):
        for i, k in enumerate(labels):
            v = groups[k][metric]
            jitter = (np.random.default_rng(i).random(len(v)) - 0.5) * 0.3
            ax.scatter(np.full(len(v), i) + jitter, v, s=14, alpha=0.8)
            if v:
                ax.hlines(np.median(v), i - 0.3, i + 0.3, color="k")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=30)
        ax.set_ylabel(label)
    axes[0].axhline(1, color="g", ls=":", label="the link's rate")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def timeline(ev, path):
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(ev.runs) + 1.2))
    t0 = min((r.start_host for r in ev.runs if r.start_host), default=0)
    for i, r in enumerate(ev.runs):
        if r.start_host and r.end_host:
            ax.barh(i, (r.end_host - r.start_host) / 1e9, left=(r.start_host - t0) / 1e9, height=0.5,
                    color=_color(r), alpha=0.4)
        for c in r.checkpoints:
            ax.barh(i, (c["resume_ns"] - c["freeze_ns"]) / 1e9, left=(c["freeze_ns"] - t0) / 1e9,
                    height=0.5, color="k" if not c.get("restore") else "tab:orange")
    ax.set_yticks(range(len(ev.runs)))
    ax.set_yticklabels([r.id for r in ev.runs])
    ax.set_xlabel("host time (s); black: pauses, orange: pauses with save/restore")
    return _save(fig, path)


def all_plots(ev, effects, plot_dir, packet_rows=()):
    os.makedirs(plot_dir, exist_ok=True)
    out = []
    for title, fn, args in (("One-way delay of the segments in flight at each checkpoint", owd_around,
                             (packet_rows,)),
                            ("Bursts and stalls around each checkpoint", bursts, (packet_rows,)),
                            ("Throughput over time", throughput, ()),
                            ("Congestion window", cwnd, ()),
                            ("Receiver inter-packet time", inter_packet, ()),
                            ("Sleeps and CPU units", sleep_cpu, ()),
                            ("What each checkpoint adds", effects_plot, (effects,)),
                            ("Around one checkpoint", zoom, ()),
                            ("Timeline (host time)", timeline, ())):
        path = os.path.join(plot_dir, f"{fn.__name__}.png")
        done = fn(ev, *args, path)
        if done:
            out.append((title, done))
    return out
