"""The transparency report of one evaluation folder (layout in
bench/transparency/README.md):

    scripts/amber-py transparency.report EVAL_DIR [--window S] [--tcp-window S]

writes EVAL_DIR/report.md (Markdown with tables), EVAL_DIR/plots/*.png and
EVAL_DIR/eval.sqlite (runs x checkpoints x metrics, iperf3 intervals), and
prints a short summary. --window is the width of the guest-time window
around each checkpoint (default 1 s), --tcp-window the one for
retransmits and the congestion window (default 2 s)."""

import argparse
import json
import os
import sqlite3
import sys

import numpy as np

from amberlab.transparency import analysis as an
from amberlab.transparency import plots

US = 1e6


def fmt(v, spec=".0f", none="–"):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return none
    return format(v, spec)


def run_rows(ev):
    rows = []
    for r in ev.runs:
        drops = r.drops()
        cwnd = [iv["snd_cwnd"] for iv in r.intervals() if iv["snd_cwnd"]]
        resid = [abs(x) for v in r.drift_us.values() for x in v]
        excess = [x for v in r.pause_excess_us.values() for x in v]
        rows.append({"run": r.id, "kind": r.kind, "throughput_mbps": r.throughput_mbps(),
                     "retransmits": r.retransmits(),
                     "retransmit_kinds": r.retransmit_kinds(),
                     "cwnd_median_kb": float(np.median(cwnd)) / 1e3 if cwnd else None,
                     "cwnd_min_kb": float(np.min(cwnd)) / 1e3 if cwnd else None,
                     "drops": sum(drops.values()) if drops else 0,
                     "tap_drops": sum(r.meta.get("tap_dropped", {}).values()),
                     "drop_causes": {k: v for k, v in drops.items() if v},
                     "frames_in": r.meta.get("delaynode", {}).get("frames_in"),
                     "checkpoints": len(r.checkpoints),
                     "pause_s": sum(c["resume_ns"] - c["freeze_ns"] for c in r.checkpoints) / 1e9,
                     "clock_residual_us": max(resid) if resid else None,
                     "pause_excess_us": float(np.median(excess)) if excess else None,
                     "rate_ppm": {vm: (m.rate - 1) * 1e6 for vm, m in r.clocks.items()},
                     "probe_losses": sum(r.probe_losses().values()),
                     "error": r.iperf_error})
    return rows


def summarize(rows):
    """{(run, metric, window): quantiles of `added` in microseconds}."""
    groups = {}
    for row in rows:
        groups.setdefault((row["run"], row["metric"], row["window"]), []).append(row["added"] * US)
    return {k: an.quantiles(v) for k, v in groups.items()}


def throughput_spread(ev):
    """(lo, hi, how): the baseline's run-to-run spread of throughput."""
    tps = [b.throughput_mbps() for b in ev.baselines if b.throughput_mbps()]
    if len(tps) >= 2:
        return min(tps), max(tps), f"range of {len(tps)} baseline runs"
    if len(tps) == 1:
        iv = [x["bps"] / 1e6 for x in ev.baselines[0].intervals() if not x["omitted"]]
        if len(iv) >= 4:
            lo, hi = an.bootstrap_ci(iv, np.mean)
            return lo, hi, "one baseline run: 95 % bootstrap interval of its interval mean (a proxy)"
        return tps[0], tps[0], "one baseline run"
    return None, None, "no baseline run"


def packet_columns(ev):
    """The side-by-side table's columns: the baselines at the first amber
    run's instants (null), then every run with checkpoints, in order."""
    return ["baseline"] + [r.id for r in ev.checked]


def _column_rows(rows, column):
    if column == "baseline":
        return [r for r in rows if r["window"] == "null"]
    return [r for r in rows if r["window"] == "checkpoint" and r["run"] == column]


def _median_ci(values, scale=1.0, spec=".2f"):
    v = [x * scale for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "–"
    q = an.quantiles(v)
    return f"{q['median']:{spec}} [{fmt(q['ci_lo'], spec)}, {fmt(q['ci_hi'], spec)}]"


def side_by_side(ev, rows, runs):
    """The issue #15 statistics, one line each, baseline / amber / naive /
    sham side by side: [(statistic, {kind: text}, what)]."""
    columns = packet_columns(ev)
    by_kind = {k: _column_rows(rows, k) for k in columns}
    run_by_id = {r["run"]: r for r in runs}
    out = []

    def per(kind, metric, fn):
        return [fn(r) for r in by_kind[kind] if r.get(metric) is not None]

    def owd_median(kind):
        return _median_ci(per(kind, "owd", lambda r: float(np.median(r["owd"]))), 1e-6)

    def owd_pooled(kind, key, spec=".2f"):
        arrays = [r["owd"] for r in by_kind[kind] if r["owd"] is not None and len(r["owd"])]
        if not arrays:
            return "–"
        return format(an.distortion_summary(np.concatenate(arrays))[key], spec)

    def early(kind, metric):
        pairs = [r[metric] for r in by_kind[kind] if r[metric][0] is not None]
        if not pairs:
            return "–"
        return f"{sum(p[0] for p in pairs)} of {sum(p[1] for p in pairs)}"

    out.append(("OWD distortion of the segments in flight, per checkpoint (ms)",
                {k: owd_median(k) for k in columns},
                "median over checkpoints of each one's median [95 % CI]; 0 = as the link would have "
                "delivered them, negative = early"))
    out.append(("\\|OWD distortion\\| over all in-flight segments: median / p99 (ms)",
                {k: f"{owd_pooled(k, 'median_abs')} / {owd_pooled(k, 'p99_abs')}" for k in columns},
                "every in-flight segment of every checkpoint pooled"))
    out.append(("segments faster than the path allows", {k: early(k, "owd_early") for k in columns},
                "one-way delay below the propagation delay (from the ACKs) by over 1 ms"))
    out.append(("RTT distortion at the sender, per checkpoint (ms)",
                {k: _median_ci(per(k, "rtt", lambda r: float(np.median(r["rtt"]))), 1e-6)
                 for k in columns},
                "RTT of the in-flight segments minus the RTT just before; the queue's swings show here"))
    out.append(("RTT samples shorter than the two propagation delays", {k: early(k, "rtt_early") for k in columns},
                "what TCP's estimator would see as a path faster than light"))
    out.append(("burst index (5 ms)", {k: _median_ci(per(k, "burst", lambda r: r["burst"]), 1.0)
                                       for k in columns},
                "most bytes in any 5 ms at the receiver within ±0.5 s, over the link's 5 ms; > 1: compressed"))
    out.append(("longest receive gap around the instant (ms)",
                {k: _median_ci(per(k, "stall", lambda r: r["stall"]), 1e-6) for k in columns},
                "among the 32 segments each side of the checkpoint's segment (amber: the first one the "
                "node held)"))
    goodput = {k: fmt(run_by_id[k]["throughput_mbps"], ".1f") if k in run_by_id else "–" for k in columns}
    goodput["baseline"] = ", ".join(fmt(r["throughput_mbps"], ".1f") for r in runs
                                    if r["kind"] == "baseline") or "–"
    out.append(("goodput (Mbit/s)", goodput,
                f"TCP's maximum on this link: {fmt(ev.tcp_max_mbps(), '.1f')}"))
    return out


def packet_verdicts(ev, rows, runs):
    """The issue #15 targets for every amber run."""
    out = []
    null = [r["burst"] for r in rows if r["window"] == "null" and np.isfinite(r["burst"])]
    burst_limit = float(np.percentile(null, 99)) if null else float("nan")
    tcp_max = ev.tcp_max_mbps()
    # The measurement's own floor: the baselines' segments at the amber
    # run's instants, where nothing was stopped. A target below it cannot
    # be told from noise here, and the note says so.
    floor_arrays = [r["owd"] for r in rows
                    if r["window"] == "null" and r["owd"] is not None and len(r["owd"])]
    floor = an.distortion_summary(np.concatenate(floor_arrays)) if floor_arrays else {"n": 0}

    # The machine's floor for a checkpoint: `pause` runs stop and resume
    # the VMs (and freeze the network) as amber does, without the save. A
    # target below what they reach is below what this machine's VMs allow.
    paused = [an.pooled(rows, r.id, "checkpoint", "owd") for r in ev.checked if r.kind == "pause"]
    paused = [x for x in paused if len(x)]
    pause = an.distortion_summary(np.concatenate(paused)) if paused else {"n": 0}

    def floor_note(key, target):
        notes = []
        if floor["n"]:
            notes.append(f"baselines at the same instants: {floor[key]:.2f} ms"
                         + (" (above the target: not resolvable here)" if floor[key] >= target
                            else ""))
        if pause["n"]:
            notes.append(f"pause (the VMs' stop and resume without the save): {pause[key]:.2f} ms"
                         + (" (above the target: below this machine's floor)"
                            if pause[key] >= target else ""))
        return "; ".join(notes)

    def stall_added(run_id):
        st = [r["stall"] for r in rows if r["run"] == run_id and r["window"] == "checkpoint"
              and np.isfinite(r["stall"])]
        cs = [r["stall"] for r in rows if r["run"] == run_id and r["window"] == "control"
              and np.isfinite(r["stall"])]
        return (np.median(st), np.median(cs)) if st and cs else None

    pause_stalls = [x for x in (stall_added(r.id) for r in ev.checked if r.kind == "pause") if x]

    for run in ev.checked:
        if run.kind != "amber":
            continue
        mine = [r for r in rows if r["run"] == run.id and r["window"] == "checkpoint"]
        taps = run.meta.get("tap_dropped")
        if taps:
            out.append((run.id, "frames dropped at the VMs' taps = 0",
                        ", ".join(f"{vm} {n}" for vm, n in sorted(taps.items())),
                        sum(taps.values()) == 0, "testbed topology: a tap holds txqueuelen frames"))
        pooled = an.pooled(rows, run.id, "checkpoint", "owd")
        if len(pooled):
            d = an.distortion_summary(pooled)
            out.append((run.id, "OWD distortion of in-flight segments: median |·| < 0.5 ms",
                        f"{d['median_abs']:.2f} ms ({d['n']} segments, {len(mine)} checkpoints)",
                        d["median_abs"] < 0.5, floor_note("median_abs", 0.5)))
            out.append((run.id, "OWD distortion of in-flight segments: p99 |·| < 2 ms",
                        f"{d['p99_abs']:.2f} ms", d["p99_abs"] < 2.0, floor_note("p99_abs", 2.0)))
        else:
            out.append((run.id, "OWD distortion of in-flight segments", "not measured (no sender "
                        "records or too few segments)", False, ""))
        bursts = [r["burst"] for r in mine if np.isfinite(r["burst"])]
        if bursts and np.isfinite(burst_limit):
            out.append((run.id, "burst index no higher than the baselines' p99",
                        f"max {max(bursts):.2f} vs {burst_limit:.2f}", max(bursts) <= burst_limit,
                        "the baselines at the same instants"))
        stall = stall_added(run.id)
        if stall:
            added = (stall[0] - stall[1]) / 1e6
            note = ""
            if pause_stalls:
                floor_ms = float(np.median([(a - b) / 1e6 for a, b in pause_stalls]))
                note = (f"pause (the VMs' stop and resume without the save): {floor_ms:.2f} ms"
                        + (" (above the target: below this machine's floor)"
                           if floor_ms >= 0.5 else ""))
            out.append((run.id, "receive stall at the instant, added over control: median < 0.5 ms",
                        f"{added:.2f} ms (checkpoints {stall[0] / 1e6:.2f}, control "
                        f"{stall[1] / 1e6:.2f})", added < 0.5, note))
    for r in runs:
        tp = r["throughput_mbps"]
        if tp is not None and r["kind"] != "baseline" and tp > tcp_max:
            out.append((r["run"], "goodput at most TCP's maximum on the link",
                        f"{tp:.1f} > {tcp_max:.1f} Mbit/s: time was compressed", False, ""))
    return out


def verdicts(ev, summary, tcp, runs):
    """The issue #8 targets for every amber run: (target, value, met, note)."""
    out = []
    by_id = {r["run"]: r for r in runs}
    base_drops = max([by_id[b.id]["drops"] for b in ev.baselines] or [0])
    lo, hi, how = throughput_spread(ev)
    for r in ev.checked:
        if r.kind != "amber":
            continue
        rid = r.id
        t = tcp.get(rid, [])
        extra = sum(max(0, x["retransmits"] - (x["baseline_retransmits"] if np.isfinite(
            x["baseline_retransmits"]) else 0)) for x in t)
        out.append((rid, "retransmits caused by checkpoints = 0",
                    f"{extra:.0f} (around checkpoints, over the baseline; total {by_id[rid]['retransmits']})",
                    extra == 0, ""))
        around = [c.get("delaynode_dropped_around") for c in r.checkpoints]
        if around and all(x is not None for x in around):
            d = sum(around)
            lost = [c.get("delaynode_lost_around") for c in r.checkpoints]
            model = (f"; the loss model's own drops, not counted: {sum(lost)}"
                     if all(x is not None for x in lost) and sum(lost) else "")
            out.append((rid, "delay-node drops caused by checkpoints = 0",
                        f"{d} around checkpoints (run {by_id[rid]['drops']}, baseline max {base_drops})",
                        d == 0, "counted from just before each freeze to a while after the resume" + model))
        else:
            d = by_id[rid]["drops"] - base_drops
            out.append((rid, "delay-node drops caused by checkpoints = 0",
                        f"{max(d, 0)} (run {by_id[rid]['drops']}, baseline max {base_drops})", d <= 0,
                        "run totals: the driver recorded no per-checkpoint counts"))
        tp = by_id[rid]["throughput_mbps"]
        ok = tp is not None and lo is not None and lo <= tp <= hi
        out.append((rid, "throughput within the baseline's run-to-run spread",
                    f"{fmt(tp, '.1f')} Mbit/s vs [{fmt(lo, '.1f')}, {fmt(hi, '.1f')}]", ok, how))
        for metric, (what, unit, target) in an.METRICS.items():
            s = summary.get((rid, metric, "checkpoint"), {"n": 0})
            ctrl = summary.get((rid, metric, "control"), {"n": 0})
            null = summary.get((f"{ev.baselines[1].id} vs {ev.baselines[0].id}" if len(ev.baselines) > 1
                                else "", metric, "null"), {"n": 0})
            if s["n"] == 0:
                out.append((rid, f"added {what} ({metric}) < {target:.0f} {unit} (p99)", "not measured", False, ""))
                continue
            floor = max([x["p99"] for x in (ctrl, null) if x["n"]] or [float("nan")])
            note = ""
            if np.isfinite(floor) and floor >= target:
                note = (f"noise floor: the same statistic away from checkpoints or between two baselines "
                        f"reaches {floor:.0f} {unit} at p99, above the target: not resolvable here")
            out.append((rid, f"added {what} ({metric}) < {target:.0f} {unit} (p99 over {s['n']} checkpoints)",
                        f"p99 {s['p99']:.0f}, median {s['median']:.0f} {unit}", s["p99"] < target, note))
    return out


def write_sqlite(path, ev, runs, effects, summary, tcp, targets):
    if os.path.exists(path):
        os.unlink(path)
    eval_id = f"{os.path.basename(os.path.abspath(ev.dir))}@{ev.params.get('started_host_ns', 0)}"
    db = sqlite3.connect(path)
    c = db.cursor()
    c.executescript("""
    CREATE TABLE evaluation (eval_id TEXT, key TEXT, value TEXT);
    CREATE TABLE runs (eval_id TEXT, run TEXT, kind TEXT, iperf_start_host_ns INTEGER,
      iperf_end_host_ns INTEGER, throughput_mbps REAL, retransmits INTEGER, delaynode_frames_in INTEGER,
      delaynode_dropped INTEGER, checkpoints INTEGER, pause_s REAL, clock_residual_us REAL,
      probe_losses INTEGER, error TEXT);
    CREATE TABLE checkpoints (eval_id TEXT, run TEXT, checkpoint INTEGER, freeze_ns INTEGER,
      resume_ns INTEGER, pause_ns INTEGER, restore INTEGER, elapsed_guest_s REAL);
    CREATE TABLE metrics (eval_id TEXT, run TEXT, checkpoint INTEGER, window TEXT, vm TEXT,
      metric TEXT, elapsed_guest_s REAL, value_us REAL, baseline_us REAL, added_us REAL);
    CREATE TABLE tcp (eval_id TEXT, run TEXT, checkpoint INTEGER, elapsed_guest_s REAL,
      retransmits INTEGER, baseline_retransmits REAL, cwnd_before INTEGER, cwnd_after INTEGER);
    CREATE TABLE summary (eval_id TEXT, run TEXT, metric TEXT, window TEXT, n INTEGER,
      median_us REAL, iqr_lo_us REAL, iqr_hi_us REAL, p99_us REAL, max_us REAL, ci_lo_us REAL,
      ci_hi_us REAL);
    CREATE TABLE targets (eval_id TEXT, run TEXT, target TEXT, value TEXT, met INTEGER, note TEXT);
    CREATE TABLE iperf_intervals (eval_id TEXT, run TEXT, start_s REAL, end_s REAL,
      elapsed_start_s REAL, bytes INTEGER, bits_per_second REAL, retransmits INTEGER,
      snd_cwnd INTEGER, rtt_us INTEGER, omitted INTEGER);
    CREATE TABLE drops (eval_id TEXT, run TEXT, cause TEXT, frames INTEGER);
    CREATE TABLE clock_anchors (eval_id TEXT, run TEXT, vm TEXT, host_ns INTEGER, guest_ns INTEGER,
      rtt_ns INTEGER, residual_us REAL);
    """)
    for k, v in ev.params.items():
        c.execute("INSERT INTO evaluation VALUES (?,?,?)", (eval_id, k, json.dumps(v)))
    for r, row in zip(ev.runs, runs):
        c.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (eval_id, r.id, r.kind, r.start_host, r.end_host, row["throughput_mbps"],
                   row["retransmits"], row["frames_in"], row["drops"], row["checkpoints"],
                   row["pause_s"], row["clock_residual_us"], row["probe_losses"], row["error"]))
        elapsed = r.checkpoint_elapsed(r.sender) if r.sender in r.clocks else [None] * len(r.checkpoints)
        for ck, e in zip(r.checkpoints, elapsed):
            c.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?)",
                      (eval_id, r.id, ck["id"], ck["freeze_ns"], ck["resume_ns"],
                       ck["resume_ns"] - ck["freeze_ns"], int(bool(ck.get("restore"))), e))
        for iv in r.intervals():
            c.execute("INSERT INTO iperf_intervals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (eval_id, r.id, iv["iperf_start"], iv["iperf_end"], iv["start"], iv["bytes"],
                       iv["bps"], iv["retransmits"], iv["snd_cwnd"], iv["rtt_us"], int(iv["omitted"])))
        for cause, n in r.drops().items():
            c.execute("INSERT INTO drops VALUES (?,?,?,?)", (eval_id, r.id, cause, n))
        for vm, m in r.clocks.items():
            for a, res in zip(m.anchors, r.raw_residuals_us.get(vm, [])):
                c.execute("INSERT INTO clock_anchors VALUES (?,?,?,?,?,?,?)",
                          (eval_id, r.id, vm, a["host_ns"], a["guest_ns"], a.get("rtt_ns"), res))
    for e in effects:
        c.execute("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (eval_id, e["run"], e["checkpoint"], e["window"], e["vm"], e["metric"], e["elapsed_s"],
                   e["value"] * US, e["baseline"] * US, e["added"] * US))
    for rid, rows in tcp.items():
        for t in rows:
            c.execute("INSERT INTO tcp VALUES (?,?,?,?,?,?,?,?)",
                      (eval_id, rid, t["checkpoint"], t["elapsed_s"], t["retransmits"],
                       t["baseline_retransmits"], t["cwnd_before"], t["cwnd_after"]))
    for (rid, metric, window), q in summary.items():
        c.execute("INSERT INTO summary VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (eval_id, rid, metric, window, q["n"], q.get("median"), q.get("iqr_lo"),
                   q.get("iqr_hi"), q.get("p99"), q.get("max"), q.get("ci_lo"), q.get("ci_hi")))
    for rid, target, value, met, note in targets:
        c.execute("INSERT INTO targets VALUES (?,?,?,?,?,?)", (eval_id, rid, target, value, int(met), note))
    db.commit()
    db.close()


def markdown(ev, runs, effects, summary, tcp, targets, plot_files, packet_rows=()):
    p = ev.params
    L = ["# amber transparency report", ""]
    m = p.get("machine", {})
    L.append(f"Link {p.get('rate', '?')}, {p.get('delay', '?')} one way, loss {p.get('loss', '0')}; "
             f"iperf3 {p.get('duration_s', '?')} s per run, a checkpoint every {p.get('interval_s', '?')} s. "
             f"Machine: {m.get('cpus', '?') if isinstance(m, dict) else m} CPUs"
             f"{', ' + m.get('cpu_model', '') if isinstance(m, dict) and m.get('cpu_model') else ''}"
             f"{', load ' + format(m['load_avg_at_start'], '.1f') if isinstance(m, dict) and 'load_avg_at_start' in m else ''}"
             f"{'; driver: ' + p['driver'] if p.get('driver') else ''}.")
    L.append("")
    L.append(f"All guest-side numbers are in guest time (each VM's CLOCK_MONOTONIC), on the axis "
             f"*elapsed guest seconds since iperf3 started*; a checkpoint's effect is the statistic in a "
             f"{ev.window_s:g} s window around it minus the baseline's statistic in the same window "
             f"(median over {len(ev.baselines)} baseline run(s)). *Control* windows lie halfway between "
             f"two checkpoints of the same run, *null* compares two baseline runs at the checkpoint "
             f"instants: both show what the difference looks like without a checkpoint.")
    table = side_by_side(ev, packet_rows, runs)
    if packet_rows:
        columns = packet_columns(ev)
        L += ["", "## What a naive checkpoint breaks and amber keeps", "",
              "Per checkpoint, in guest time, for the data segments in flight at the instant (sent in "
              "the last one-way delay before the sender stopped). *baseline*: the baseline runs at the "
              "amber run's instants (no checkpoint: the measurement's own noise); *sham*: the host work "
              "of a checkpoint without stopping anything.", "",
              "| statistic | " + " | ".join(columns) + " | how |",
              "|---|" + "---|" * len(columns) + "---|"]
        for name, cols, how in table:
            L.append(f"| {name} | " + " | ".join(cols[k] for k in columns) + f" | {how} |")
        ambers = [r.id for r in ev.checked if r.kind == "amber"]
        others = [r.id for r in ev.checked if r.kind in ("naive", "sham", "pause")]
        comp = [(a, b, an.compare_runs(packet_rows, a, b)) for a in ambers for b in others]
        comp = [c for c in comp if c[2]]
        if comp:
            L += ["", "amber against the others directly (per checkpoint: the median |OWD distortion| "
                  "of its in-flight segments):", "",
                  "| runs | amber (ms) | other (ms) | ratio | difference [95 % CI] | P(amber smaller) |",
                  "|---|---|---|---|---|---|"]
            for a, b, c in comp:
                L.append(f"| {a} vs {b} | {c['a']:.2f} | {c['b']:.2f} | {c['ratio']:.2f} | "
                         f"{c['diff']:.2f} [{c['ci_lo']:.2f}, {c['ci_hi']:.2f}] | {c['p_a_smaller']:.2f} |")
    L += ["", "## Targets", "", "| run | target | measured | met | note |", "|---|---|---|---|---|"]
    for rid, target, value, met, note in targets:
        L.append(f"| {rid} | {target} | {value} | {'**yes**' if met else '**no**'} | {note} |")
    if not targets:
        L.append("| – | no amber run in this evaluation | | | |")
    L += ["", "## Runs", "",
          "| run | kind | throughput (Mbit/s) | retransmits | cwnd median / min (kB) | delay-node drops "
          "| checkpoints | paused (s) | clock residual (µs) | extra guest pause per checkpoint (µs) "
          "| guest clock rate (ppm) | probe losses |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        causes = ", ".join(f"{k} {v}" for k, v in r["drop_causes"].items())
        tap = f"; taps dropped {r['tap_drops']}" if r["tap_drops"] else ""
        ppm = ", ".join(f"{vm} {v:+.1f}" for vm, v in r["rate_ppm"].items())
        kinds = ", ".join(f"{k} {v}" for k, v in r["retransmit_kinds"].items())
        kinds = f" ({kinds})" if kinds and r["retransmits"] else ""
        L.append(f"| {r['run']} | {r['kind']} | {fmt(r['throughput_mbps'], '.1f')} | {fmt(r['retransmits'])}{kinds} "
                 f"| {fmt(r['cwnd_median_kb'])} / {fmt(r['cwnd_min_kb'])} | {r['drops']}"
                 f"{' (' + causes + ')' if causes else ''}"
                 f"{tap} | {r['checkpoints']} | {r['pause_s']:.2f} "
                 f"| {fmt(r['clock_residual_us'])} | {fmt(r['pause_excess_us'])} | {ppm} | {r['probe_losses']} |")
        if r["error"]:
            L.append(f"| {r['run']} | iperf3 error: {r['error']} | | | | | | | | | | |")
    lo, hi, how = throughput_spread(ev)
    L += ["", f"Baseline throughput spread: [{fmt(lo, '.1f')}, {fmt(hi, '.1f')}] Mbit/s ({how}). "
          "Clock residual: the largest difference between an anchor's guest clock and the mapping "
          "guest = anchor + (host − anchor) from the anchor before it, over stretches without a pause "
          "(drift plus the anchors' own error, at most half their round trip). Extra guest pause: over "
          "stretches with pauses, how much more guest time was missing than the VMs' QEMU STOP → RESUME "
          "events account for, per pause (median; positive: the guest clock stood still longer). "
          "Anchors taken between checkpoints absorb it; the rate column is the guest clock rate fitted "
          "over pause-free stretches and applied to every mapping."]
    L += ["", "## What a checkpoint adds, across checkpoints (µs)", "",
          "| run | metric | windows | n | median [95 % CI] | IQR | p99 | max |", "|---|---|---|---|---|---|---|---|"]
    for (rid, metric, window), q in sorted(summary.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        if q["n"] == 0:
            continue
        L.append(f"| {rid} | {metric} | {window} | {q['n']} | {q['median']:.0f} [{fmt(q['ci_lo'])}, "
                 f"{fmt(q['ci_hi'])}] | {q['iqr_lo']:.0f} … {q['iqr_hi']:.0f} | {q['p99']:.0f} | {q['max']:.0f} |")
    L += ["", "Effect against the control windows (median of checkpoint windows − median of control "
          "windows, bootstrap 95 % CI; P(ckpt > ctrl) is 0.5 without an effect):", "",
          "| run | metric | difference (µs) [95 % CI] | P(ckpt > ctrl) |", "|---|---|---|---|"]
    for r in ev.checked:
        for metric in an.METRICS:
            a = [e["added"] * US for e in effects if e["run"] == r.id and e["metric"] == metric
                 and e["window"] == "checkpoint"]
            b = [e["added"] * US for e in effects if e["run"] == r.id and e["metric"] == metric
                 and e["window"] == "control"]
            d = an.median_difference(a, b)
            if d:
                L.append(f"| {r.id} | {metric} | {d['diff']:.0f} [{d['ci_lo']:.0f}, {d['ci_hi']:.0f}] "
                         f"| {d['p_greater']:.2f} |")
    L += ["", "## Per checkpoint", ""]
    for r in ev.checked:
        L += [f"### {r.id}", "", "| # | elapsed (s) | paused (ms) | save/restore | guest clock stop … start "
              "after the freeze … resume instant (ms) | VM STOP after the instant (ms) "
              "| rings up after RESUME (ms) | delay-node drops around it | "
              + " | ".join(f"added {m} (µs)" for m in an.METRICS)
              + " | retransmits (baseline) | cwnd before → after |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(an.METRICS) + "---|---|"]
        t_by = {t["checkpoint"]: t for t in tcp.get(r.id, [])}
        for i, c in enumerate(r.checkpoints):
            def added(metric):
                vals = [e["added"] * US for e in effects if e["run"] == r.id and e["metric"] == metric
                        and e["window"] == "checkpoint" and e["checkpoint"] == c["id"]]
                return " / ".join(fmt(v) for v in vals) if vals else "–"
            t = t_by.get(c["id"], {})
            el = t.get("elapsed_s")
            steps = c.get("vms", {}).values()
            late = " / ".join(f"{(v['stop_ns'] - c['freeze_ns']) / 1e6:.1f}" for v in steps if "stop_ns" in v)
            clock = " / ".join(f"{(v['clock_stop_ns'] - c['freeze_ns']) / 1e6:+.1f} … "
                               f"{(v['clock_start_ns'] - c['resume_ns']) / 1e6:+.1f}"
                               for v in steps if "clock_stop_ns" in v)
            # When the guest could receive again: its rings up (from the
            # node's link log), else QEMU's reply to cont.
            cont = " / ".join(f"{(v.get('rings_up_ns', v.get('resume_reply_ns')) - v['resume_ns']) / 1e6:.1f}"
                              for v in steps if "resume_ns" in v and
                              ("rings_up_ns" in v or "resume_reply_ns" in v))
            L.append(f"| {c['id']} | {fmt(el, '.2f')} | {(c['resume_ns'] - c['freeze_ns']) / 1e6:.0f} "
                     f"| {'yes' if c.get('restore') else ''} | {clock or '–'} | {late or '–'} | {cont or '–'} "
                     f"| {fmt(c.get('delaynode_dropped_around'))} | "
                     + " | ".join(added(m) for m in an.METRICS)
                     + f" | {t.get('retransmits', '–')} ({fmt(t.get('baseline_retransmits'), '.1f')}) "
                     f"| {fmt(t.get('cwnd_before'))} → {fmt(t.get('cwnd_after'))} |")
        L.append("")
        L.append("VM columns list one value per VM: QEMU's STOP event after the checkpoint instant, and the "
                 "VM's vhost-user rings up again (the delay node's link log) after the RESUME event: QEMU 7.2 "
                 "sends RESUME, starts the guest clock, restarts the vhost-user back end, then the vCPUs, so "
                 "that much guest time passes in which the guest can receive nothing. Sleep and CPU columns list one value per VM measuring it "
                 f"(sleep: {', '.join(an.metric_vms(r, 'sleep_max'))}; cpu: {', '.join(an.metric_vms(r, 'cpu_max'))}).")
        L.append("")
    L += ["## Timeline", ""]
    events = ev.timeline.get("events", []) if isinstance(ev.timeline, dict) else []
    if events:
        t0 = min(e["host_ns"] for e in events)
        L += ["| host time (s) | run | event | detail |", "|---|---|---|---|"]
        for e in sorted(events, key=lambda e: e["host_ns"]):
            detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("host_ns", "run", "kind"))
            L.append(f"| {(e['host_ns'] - t0) / 1e9:.3f} | {e.get('run', '')} | {e.get('kind', '')} | {detail} |")
    else:
        L.append("No timeline.json.")
    L += ["", "## Plots", ""]
    for title, f in plot_files:
        L += [f"### {title}", "", f"![{title}](plots/{os.path.basename(f)})", ""]
    L += ["## Method", "",
          "- Receiver inter-packet time: kernel receive timestamps of the iperf3 data segments on the "
          "experiment NIC (AF_PACKET ring, GRO off), inside the receiving guest.",
          "- Sleep: a loop of 10 ms CLOCK_MONOTONIC sleeps (SCHED_FIFO), each timed; CPU: a fixed "
          "work unit calibrated once to about 10 ms, repeated and timed.",
          "- Host instants (CLOCK_REALTIME) map to guest time through clock anchors (minimum-RTT UDP "
          "exchanges with the guest probe) minus each VM's own pauses (its QEMU STOP..RESUME events).",
          "- Retransmits and the congestion window come from the iperf3 client's JSON; its intervals "
          "are placed on the elapsed axis at the first data segment the receiver saw.",
          f"- Windows: {ev.window_s:g} s around each checkpoint for the guest metrics, "
          f"[-{ev.tcp_window_s / 4:g}, +{3 * ev.tcp_window_s / 4:g}] s for retransmits."]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir")
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--tcp-window", type=float, default=2.0)
    a = ap.parse_args(argv)
    ev = an.Evaluation(a.eval_dir, a.window, a.tcp_window)
    if not ev.runs:
        print(f"transparency.report: no runs under {a.eval_dir}/runs", file=sys.stderr)
        return 1
    runs = run_rows(ev)
    effects = [e for r in ev.checked for e in ev.effects(r)] + ev.null_effects()
    summary = summarize(effects)
    tcp = {r.id: ev.tcp_per_checkpoint(r) for r in ev.checked}
    packet_rows = ev.all_packet_effects()
    targets = packet_verdicts(ev, packet_rows, runs) + verdicts(ev, summary, tcp, runs)
    plot_dir = os.path.join(a.eval_dir, "plots")
    plot_files = plots.all_plots(ev, effects, plot_dir, packet_rows)
    with open(os.path.join(a.eval_dir, "report.md"), "w") as f:
        f.write(markdown(ev, runs, effects, summary, tcp, targets, plot_files, packet_rows))
    write_sqlite(os.path.join(a.eval_dir, "eval.sqlite"), ev, runs, effects, summary, tcp, targets)
    print(f"transparency report: {a.eval_dir}/report.md, eval.sqlite, {len(plot_files)} plots")
    for r in runs:
        print(f"  {r['run']:<12} {fmt(r['throughput_mbps'], '6.1f')} Mbit/s  retransmits {fmt(r['retransmits'])}"
              f"  drops {r['drops']}  checkpoints {r['checkpoints']}")
    if packet_rows:
        columns = packet_columns(ev)
        print(f"  {'':<58}" + "".join(f"{k:>22}" for k in columns))
        for name, cols, _ in side_by_side(ev, packet_rows, runs):
            print(f"  {name.replace(chr(92), '')[:58]:<58}" + "".join(f"{cols[k][:21]:>22}" for k in columns))
    for (rid, metric, window), q in sorted(summary.items()):
        if window == "checkpoint" and q["n"]:
            print(f"  {rid:<12} added {metric:<9} median {q['median']:8.0f} µs  p99 {q['p99']:8.0f} µs"
                  f"  (n={q['n']})")
    for rid, target, value, met, note in targets:
        floor = f" ({note})" if ("same instants" in note or note.startswith("pause (")) else ""
        print(f"  [{'met' if met else 'NOT met'}] {rid}: {target}: {value}{floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
