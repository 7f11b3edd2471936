"""Where the one-way delay of the segments in flight at a checkpoint goes,
split at the two VMs' taps (testbed topology, transparency.evaluate
--capture-taps): for each data segment,

  sender leg    its transmit in the sender's guest -> it passes the
                sender's tap (QEMU's tap backend and the sender's guest),
  network leg   sender's tap -> receiver's tap (bridges, veths, the delay
                node and its link),
  receiver leg  receiver's tap -> its receive in the receiver's guest
                (QEMU and the receiver's guest),

each in guest time: a tap's host instant is mapped into the VM's guest
clock (transparency.guest.ClockMap, which stands still while the VM is
stopped), so a frame that waits at a stopped VM's tap costs that VM
nothing, as it should, and the three legs sum to the segment's one-way
delay. Per checkpoint, each leg's distortion is its median over the
segments in flight (the same ones analysis.Evaluation's OWD statistic
takes) less its median over the segments sent in the REF_S before them.
A transparent checkpoint leaves all three at 0; where amber's in-flight
segments come late, this says which leg made them late. A baseline's rows
(at the same instants, nothing stopped) are each leg's noise.

  scripts/amber-py transparency.paths EVAL_DIR [EVAL_DIR ...]"""

import argparse
import os
import sys

import numpy as np

from amberlab.transparency import analysis, packets

REF_S = 0.3
MARGIN_NS = 2_000_000


def tap_times(run, vm, isn):
    """(unwrapped seq, host ns) of the first pass of each data segment of
    the connection's data direction through `vm`'s tap, sorted by seq; None
    without the capture."""
    path = os.path.join(run.dir, "taps", f"{vm}.pcap")
    if not os.path.exists(path):
        return None
    rows = analysis.pcap_tcp_data(path, run.meta.get("sender_addr"), run.meta.get("receiver_addr"))
    if not rows:
        return None
    t = np.array([r[0] for r in rows], dtype=np.int64)
    seq = packets._unwrap(np.array([r[1] for r in rows], dtype=np.int64), isn)
    order = np.lexsort((t, seq))
    seq, t = seq[order], t[order]
    first = np.concatenate(([True], seq[1:] != seq[:-1]))
    return seq[first], t[first]


def _lookup(table, seqs):
    """Host ns for each of seqs in a tap_times table (NaN where missing)."""
    keys, t = table
    pos = np.clip(np.searchsorted(keys, seqs), 0, len(keys) - 1)
    hit = keys[pos] == seqs
    return np.where(hit, t[pos].astype(np.float64), np.nan)


def _to_guest(clock, host_ns):
    return np.array([clock.to_guest(int(h)) if np.isfinite(h) else np.nan for h in host_ns])


def legs(run, inflight_tx):
    """The three legs' distortions (ns, medians over the in-flight segments
    whose transmit instants are `inflight_tx`, sender's guest ns) and how
    many of them both taps saw: {"sender", "network", "receiver", "total",
    "n"}; None without captures or references."""
    flow = run.flow()
    seg = flow.segments() if flow is not None else None
    if seg is None or inflight_tx is None or not len(inflight_tx):
        return None
    st, rt = tap_times(run, run.sender, flow.isn), tap_times(run, run.receiver, flow.isn)
    if st is None or rt is None:
        return None
    seqs, tx_t, rx_t, _ = seg
    first = int(np.min(inflight_tx))
    flying = np.isin(tx_t, inflight_tx)
    ref = (tx_t >= first - int(REF_S * 1e9)) & (tx_t < first - MARGIN_NS)
    out = {}
    pick = flying | ref
    s_h = _lookup(st, seqs[pick])
    r_h = _lookup(rt, seqs[pick])
    s_g = _to_guest(run.clocks[run.sender], s_h)
    r_g = _to_guest(run.clocks[run.receiver], r_h)
    tx, rx = tx_t[pick].astype(np.float64), rx_t[pick].astype(np.float64)
    leg = {"sender": s_g - tx, "network": r_g - s_g, "receiver": rx - r_g, "total": rx - tx}
    fl, rf = flying[pick], ref[pick]
    seen = np.isfinite(s_g) & np.isfinite(r_g)
    if (seen & rf).sum() < 5 or not (seen & fl).any():
        return None
    for name, v in leg.items():
        out[name] = float(np.median(v[seen & fl]) - np.median(v[seen & rf]))
    out["n"] = int((seen & fl).sum())
    return out


def rows(eval_dir):
    """Per run and checkpoint window ("checkpoint", or "null" for a
    baseline at the checkpointed run's instants): the legs, ms."""
    ev = analysis.Evaluation(eval_dir)
    out = []
    for r in ev.all_packet_effects():
        if r["window"] not in ("checkpoint", "null") or r.get("owd_tx") is None:
            continue
        run = next(x for x in ev.checked + ev.baselines if x.id == r["run"])
        instant = _sender_instant(run, r)
        got = legs(run, np.asarray(r["owd_tx"], dtype=np.int64) + instant)
        if got is None:
            continue
        out.append(dict({k: (v / 1e6 if k != "n" else v) for k, v in got.items()},
                        run=r["run"], checkpoint=r["checkpoint"],
                        owd_ms=float(np.median(r["owd"])) / 1e6))
    return out


def _sender_instant(run, row):
    if row["window"] == "null":
        return run.mono_at_elapsed(run.sender, row["elapsed_s"])
    i = [c["id"] for c in run.checkpoints].index(row["checkpoint"])
    return run.mono_instants(run.sender)[i]


def table(eval_dirs):
    print("| evaluation | run | checkpoint | in flight, both taps saw | OWD distortion (link "
          "replay), ms | total, ms | sender leg, ms | network leg, ms | receiver leg, ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    per_run = {}
    for d in eval_dirs:
        for x in rows(d):
            print(f"| {os.path.basename(d.rstrip('/'))} | {x['run']} | {x['checkpoint']} | "
                  f"{x['n']} | {x['owd_ms']:.2f} | {x['total']:.2f} | {x['sender']:.2f} | "
                  f"{x['network']:.2f} | {x['receiver']:.2f} |")
            per_run.setdefault(x["run"].rstrip("0123456789-_"), []).append(x)
    if not per_run:
        print("(no run with tap captures: evaluate with --topology testbed --capture-taps)")
        return
    print()
    print("Median over the checkpoints, ms:")
    print()
    print("| run | checkpoints | total | sender leg | network leg | receiver leg |")
    print("|---|---:|---:|---:|---:|---:|")
    for run, xs in per_run.items():
        cells = [f"{np.median([x[k] for x in xs]):.2f}"
                 for k in ("total", "sender", "network", "receiver")]
        print(f"| {run} | {len(xs)} | " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.paths", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR")
    a = ap.parse_args(argv)
    table(a.eval_dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
