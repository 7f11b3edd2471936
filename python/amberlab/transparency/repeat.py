"""Several transparency evaluations of one configuration, and the figures
across them: one evaluation's per-checkpoint medians say little about the
next (a VM's stop can land 1 ms or 30 ms late), so a figure worth quoting
is the spread over evaluations.

  scripts/amber-py transparency.repeat BUILD_DIR OUT_DIR -n 3 -- [evaluate options]
      runs transparency.evaluate n times into OUT_DIR/e1 ... OUT_DIR/eN,
      then prints the table below
  scripts/amber-py transparency.repeat --summarize OUT_DIR/e1 OUT_DIR/e2 ...
      the table for evaluations already made

Per evaluation and run (amber, naive, pause, sham; a baseline at the same
instants without a checkpoint): the median over checkpoints of each checkpoint's median one-way-delay distortion of
the segments in flight (ms) with its range; the earliest of them (each
checkpoint's 5th percentile, median over checkpoints: naive delivers these
a link delay early); the pooled |distortion| median and p99 over every such
segment; the sender's retransmits near a checkpoint (0.1 s before its
instant to 1.5 s after) and in all; then, per run, the median and range
of those figures over the evaluations; frames the VMs' taps dropped per
run; from the VM hosts' logs, the latest a QMP stop/cont left after its
instant and the largest offset of a guest clock from its instant (every
run of the evaluation); and in how many evaluations amber's worst
checkpoint stayed below naive's best.
(root; each evaluation as transparency.evaluate says: about duration + 25 s per run
plus ~1 min)"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np

import amberlab
from amberlab.transparency import analysis


def figures(eval_dir):
    """run -> {ckpt: [per-checkpoint medians, ms], pooled: summary}."""
    ev = analysis.Evaluation(eval_dir)
    rows = ev.all_packet_effects()
    loaded = {r.id: r for r in ev.runs}
    out = {}
    for run in sorted({r["run"] for r in rows}):
        # A baseline has no checkpoint: its windows at the same instants.
        window = "null" if kind(run) == "baseline" else "checkpoint"
        per = [v / 1e6 for v in analysis.per_window(rows, run, window, "owd")]
        if not per:
            continue
        earliest = [v / 1e6 for v in analysis.per_window(rows, run, window, "owd", percentile=5)]
        windows = [r["owd"] / 1e6 for r in rows if r["run"] == run and r["window"] == window
                   and r["owd"] is not None and len(r["owd"])]
        out[run] = {"ckpt": per, "earliest": float(np.median(earliest)), "windows": windows,
                    "pooled": analysis.distortion_summary(analysis.pooled(rows, run, window, "owd")),
                    "retransmits": retransmits(loaded[run])}
    return out


def retransmits(r):
    """(near a checkpoint, all) of the sender's retransmits in run `r`, or
    (None, None) if its iperf3 result is missing. A baseline has no
    checkpoint: its "near" are only those iperf3 counted and the probe did
    not locate."""
    total = r.retransmits()
    if total is None:
        return None, None
    return r.retransmits_near_checkpoints(), total


def tap_drops(eval_dir, run):
    """Frames the VMs' taps dropped in a run (testbed topology), or None."""
    try:
        with open(os.path.join(eval_dir, "runs", run, "run.json")) as f:
            dropped = json.load(f).get("tap_dropped")
    except (OSError, ValueError):
        return None
    return sum(dropped.values()) if dropped else None


# The VM host's line per VM and step (vmhost/vmhost_agent.cpp).
STEP_LINE = re.compile(r"sent (-?[0-9.]+) ms before it; clock ([+-]?[0-9.]+) ms")


def step_timing(eval_dir):
    """Over every StopAt/ResumeAt of the evaluation (all runs), from the VM
    hosts' logs: the latest a QMP command left after its instant and the
    largest offset of a guest clock's stop or start from its instant (ms)."""
    late, off = None, None
    for path in glob.glob(os.path.join(eval_dir, "logs", "vmhost*.log")):
        with open(path, errors="replace") as f:
            for m in STEP_LINE.finditer(f.read()):
                sent_after = -float(m.group(1))
                late = sent_after if late is None else max(late, sent_after)
                off = abs(float(m.group(2))) if off is None else max(off, abs(float(m.group(2))))
    return late, off


# The VM host's StopAt line: where the guest clock stopped against the
# instant; the delay node's line when a run-on ends (delaynode_agent.cpp):
# how long after the VM stopped the node was told.
STOP_LINE = re.compile(r"StopAt \S+: instant .*? clock ([+-]?[0-9.]+) ms")
REPLY_LINE = re.compile(r"StopAt \S+: .*; reply ready ([+-]?[0-9.]+) ms after the clock")
RUN_ON_LINE = re.compile(r"ran on [0-9.]+ ms past the freeze \(its VM stopped -([0-9.]+) ms from now\)")


def stop_lags_and_reports(eval_dir):
    """Every StopAt's guest-clock lag after its instant, when the VM host's
    reply was ready after the clock stopped, and every run-on's report
    latency (the node told after the VM stopped), in ms."""
    lags, replies, reports = [], [], []
    for path in glob.glob(os.path.join(eval_dir, "logs", "*.log")):
        with open(path, errors="replace") as f:
            text = f.read()
        lags += [float(m.group(1)) for m in STOP_LINE.finditer(text)]
        replies += [float(m.group(1)) for m in REPLY_LINE.finditer(text)]
        reports += [float(m.group(1)) for m in RUN_ON_LINE.finditer(text)]
    return lags, replies, reports


def spread(values):
    """'median [min, max] (n)', or '–'."""
    if not values:
        return "–"
    return f"{np.median(values):.2f} [{min(values):.2f}, {max(values):.2f}] ({len(values)})"


kind = analysis.run_kind


def table(eval_dirs):
    per_eval = [(d, figures(d)) for d in eval_dirs]
    print("| evaluation | run | per-checkpoint median, ms: median [range] | earliest in-flight, ms "
          "| pooled abs, ms: median / p99 | n | retransmits: near a checkpoint / all "
          "| frames the taps dropped |")
    print("|---|---|---|---:|---|---:|---:|---:|")
    across = {}
    for d, f in per_eval:
        for run, v in f.items():
            c = v["ckpt"]
            p = v["pooled"]
            taps = tap_drops(d, run)
            near, total = v["retransmits"]
            retx = "–" if total is None else f"{near} / {total}"
            print(f"| {os.path.basename(d.rstrip('/'))} | {run} | {np.median(c):.2f} "
                  f"[{min(c):.2f}, {max(c):.2f}] | {v['earliest']:.2f} "
                  f"| {p['median_abs']:.2f} / {p['p99_abs']:.2f} | {p['n']} "
                  f"| {retx} | {'–' if taps is None else taps} |")
            a = across.setdefault(kind(run), {"median": [], "earliest": [], "median_abs": [],
                                              "p99_abs": [], "near": []})
            a["median"].append(float(np.median(c)))
            a["earliest"].append(v["earliest"])
            a["median_abs"].append(p["median_abs"])
            a["p99_abs"].append(p["p99_abs"])
            if near is not None:
                a["near"].append(near)
    print()
    print(f"Across {len(per_eval)} evaluations (median [range] of the per-evaluation figures; "
          f"earliest in-flight: each checkpoint's 5th percentile of the distortion, median over "
          f"the checkpoints, negative = early; retransmits near a checkpoint: 0.1 s before its "
          f"instant to 1.5 s after, in the sender's guest time, summed over the runs):")
    print()
    print("| run | per-checkpoint median, ms | earliest in-flight, ms | pooled abs median, ms "
          "| pooled abs p99, ms | runs with a retransmit near a checkpoint | those retransmits |")
    print("|---|---|---|---|---|---:|---:|")
    for k, a in across.items():
        cells = [f"{np.median(a[m]):.2f} [{min(a[m]):.2f}, {max(a[m]):.2f}]"
                 for m in ("median", "earliest", "median_abs", "p99_abs")]
        cells.append(f"{sum(1 for n in a['near'] if n)} of {len(a['near'])}")
        cells.append(str(sum(a["near"])))
        print(f"| {k} | " + " | ".join(cells) + " |")
    print()
    print("| evaluation | latest QMP command after its instant, ms | largest guest-clock offset from its instant, ms |")
    print("|---|---:|---:|")
    all_lags, all_replies, all_reports = [], [], []
    for d, _ in per_eval:
        late, off = step_timing(d)
        cells = ["–" if v is None else f"{v:.2f}" for v in (late, off)]
        print(f"| {os.path.basename(d.rstrip('/'))} | {cells[0]} | {cells[1]} |")
        lags, replies, reports = stop_lags_and_reports(d)
        all_lags += lags
        all_replies += replies
        all_reports += reports
    print()
    print("Every StopAt: the guest clock's stop after the instant, the VM host's reply ready after "
          "it; every run-on: the node told after its VM stopped. ms: median [range] (n)")
    print()
    print(f"| stop lag | {spread(all_lags)} |")
    print(f"| VM host's reply ready | {spread(all_replies)} |")
    print(f"| run-on report at the node | {spread(all_reports)} |")
    wins = 0
    counted = 0
    for _, f in per_eval:
        amber = [v for r, v in f.items() if r.split("-")[0] == "amber"]
        naive = [v for r, v in f.items() if r.split("-")[0] == "naive"]
        if amber and naive:
            counted += 1
            worst_amber = max(abs(x) for x in amber[0]["ckpt"])
            best_naive = min(abs(x) for x in naive[0]["ckpt"])
            wins += worst_amber < best_naive
    if counted:
        print()
        print(f"amber's worst checkpoint below naive's best: {wins} of {counted} evaluations")
    floor_table(per_eval)


def p99_difference(a, b, n=2000, seed=3):
    """p99 |.| of a's segments pooled minus b's, with a 95 % bootstrap
    interval that resamples whole checkpoints (a checkpoint's segments
    share its stop and resume, so they are not independent)."""
    rng = np.random.default_rng(seed)

    def p99(windows, pick):
        return float(np.percentile(np.abs(np.concatenate([windows[i] for i in pick])), 99))
    diffs = [p99(a, rng.integers(len(a), size=len(a))) - p99(b, rng.integers(len(b), size=len(b)))
             for _ in range(n)]
    return (p99(a, range(len(a))) - p99(b, range(len(b))), float(np.percentile(diffs, 2.5)),
            float(np.percentile(diffs, 97.5)))


def floor_table(per_eval):
    """amber against the machine's floor: every checkpoint of every
    evaluation pooled by run kind, and amber minus pause (the VMs' stop and
    resume as amber's, without the save) with 95 % bootstrap intervals. An
    interval that holds 0 says the save added nothing this many
    checkpoints can resolve; one above 0, by how much amber is worse."""
    kinds = {}
    for _, f in per_eval:
        for run, v in f.items():
            d = kinds.setdefault(kind(run), {"ckpt": [], "windows": []})
            d["ckpt"] += [abs(x) for x in v["ckpt"]]
            d["windows"] += v["windows"]
    if "pause" not in kinds or not any(k.startswith("amber") for k in kinds):
        return
    print()
    print(f"Every checkpoint of the {len(per_eval)} evaluations pooled by run (per-checkpoint: "
          "the median |distortion| of its in-flight segments; pooled: all their segments), ms:")
    print()
    print("| run | checkpoints | per-checkpoint \|median\|: median | pooled \|·\| median "
          "| pooled \|·\| p99 |")
    print("|---|---:|---:|---:|---:|")
    order = ["baseline"] + sorted(k for k in kinds if k.startswith("amber")) + ["pause", "naive",
                                                                               "sham"]
    for k in order:
        if k not in kinds or not kinds[k]["windows"]:
            continue
        seg = np.abs(np.concatenate(kinds[k]["windows"]))
        print(f"| {k} | {len(kinds[k]['ckpt'])} | {np.median(kinds[k]['ckpt']):.2f} "
              f"| {np.median(seg):.2f} | {np.percentile(seg, 99):.2f} |")
    print()
    for k in order:
        if not k.startswith("amber") or not kinds[k]["windows"]:
            continue
        d = analysis.median_difference(kinds[k]["ckpt"], kinds["pause"]["ckpt"])
        p, lo, hi = p99_difference(kinds[k]["windows"], kinds["pause"]["windows"])
        if d:
            print(f"{k} - pause, per-checkpoint |median|: {d['diff']:+.2f} ms "
                  f"[{d['ci_lo']:+.2f}, {d['ci_hi']:+.2f}], P({k}'s larger) {d['p_greater']:.2f}")
        print(f"{k} - pause, pooled p99: {p:+.2f} ms [{lo:+.2f}, {hi:+.2f}]")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.repeat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("-n", type=int, default=3, help="evaluations (default 3)")
    ap.add_argument("--summarize", nargs="+", metavar="EVAL_DIR",
                    help="only print the table for these evaluation folders")
    a = ap.parse_args(argv)
    if a.summarize:
        table(a.summarize)
        return 0
    if not a.build or not a.out:
        ap.error("give BUILD_DIR and OUT_DIR (or --summarize EVAL_DIR...)")
    if a.n < 1:
        ap.error(f"-n {a.n}: at least one evaluation")
    dirs = []
    for i in range(1, a.n + 1):
        d = os.path.join(a.out, f"e{i}")
        print(f"== evaluation {i} of {a.n}: {d}", flush=True)
        r = subprocess.run(amberlab.module_command("transparency.evaluate", a.build, d, "--quiet", *extra),
                           env=amberlab.module_env())
        if r.returncode != 0:
            print(f"evaluation {i} failed (exit {r.returncode}); the table covers those that finished",
                  file=sys.stderr)
            continue
        dirs.append(d)
    if not dirs:
        return 1
    table(dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
