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
delay. Per in-flight segment (the same ones analysis.Evaluation's OWD
statistic takes), each guest's leg less that leg's median over the
segments sent in the REF_S before them is its distortion; the network
leg's is what they leave of the segment's OWD distortion against the
link's replay (the headline statistic, which follows the node's queue as
it builds and drains). Per checkpoint: the medians. A transparent
checkpoint leaves all three at 0; where amber's in-flight segments come
late, this says which leg made them late. A baseline's rows (at the same
instants, nothing stopped) are each leg's noise.

And, per checkpoint, the receiver leg of the first segment to reach the
receiver's tap after its VM resumed: guest time that passed before the
resumed guest took anything in. With QEMU's virtqueue_flush and
virtio_queue_notify trace lines in the receiver's qemu.log (evaluate
--qemu-trace), that leg splits at the guest's receive ring: tap -> ring
(QEMU's main loop reads the tap and fills the ring) and ring -> guest (the
guest's vCPU takes the frame in).

It also lists, per run, the data segments that passed the receiver's tap
and never reached its guest (lost_after_tap): QEMU's tap back end drops
the frame it holds for a full guest receive ring at every VM stop, which
no counter of the node, the kernel or the taps sees.

  scripts/amber-py transparency.paths EVAL_DIR [EVAL_DIR ...]"""

import argparse
import os
import re
import sys

import numpy as np

from amberlab.transparency import analysis, packets

REF_S = 0.3
MARGIN_NS = 2_000_000


def tap_passes(run, vm):
    """(unwrapped seq, host ns) of every pass of a data segment of the data
    connection (its client port: iperf3's control connection shares the
    server's) through `vm`'s tap, in capture order; None without the
    capture."""
    path = os.path.join(run.dir, "taps", f"{vm}.pcap")
    flow = run.flow()
    if flow is None or not os.path.exists(path):
        return None
    rows = analysis.pcap_tcp_data(path, run.meta.get("sender_addr"), run.meta.get("receiver_addr"),
                                  flow.port)
    if not rows:
        return None
    t = np.array([r[0] for r in rows], dtype=np.int64)
    return packets._unwrap(np.array([r[1] for r in rows], dtype=np.int64), flow.isn), t


def tap_times(run, vm):
    """(unwrapped seq, host ns) of the first pass of each data segment
    through `vm`'s tap, sorted by seq; None without the capture."""
    passes = tap_passes(run, vm)
    if passes is None:
        return None
    seq, t = passes
    order = np.lexsort((t, seq))
    seq, t = seq[order], t[order]
    first = np.concatenate(([True], seq[1:] != seq[:-1]))
    return seq[first], t[first]


def lost_after_tap(run):
    """Data segments whose first copy passed the receiver's tap but never
    reached the receiver's guest (its probe saw fewer copies than the tap
    passed): lost in QEMU or the guest, where no counter of the node, the
    kernel or the taps sees it. QEMU's tap back end drops the frame it holds
    for a full guest receive ring when the VM stops. [(seq, host ns at the
    tap of the first copy, ms from the nearest checkpoint's freeze)], or
    None without the capture."""
    passes = tap_passes(run, run.receiver)
    if passes is None:
        return None
    seq, t = passes
    flow = run.flow()
    tap_seq, tap_first, tap_n = np.unique(seq, return_index=True, return_counts=True)
    got_seq, got_n = np.unique(flow.rx.num, return_counts=True)
    pos = np.clip(np.searchsorted(got_seq, tap_seq), 0, max(len(got_seq) - 1, 0))
    got = np.where(len(got_seq) and (got_seq[pos] == tap_seq), got_n[pos], 0)
    # The probe's records start a little after the transfer and end with
    # it: only segments inside what it saw count.
    inside = (tap_seq >= flow.rx.num.min()) & (tap_seq <= flow.rx.num.max())
    lost = np.nonzero((got < tap_n) & inside)[0]
    freezes = [c["freeze_ns"] for c in run.checkpoints]
    out = []
    for i in lost:
        at = int(t[tap_first[i]])
        near = min(((at - f) / 1e6 for f in freezes), key=abs) if freezes else None
        out.append((int(tap_seq[i]), at, near))
    return out


def backlog_at_stops(run):
    """Per checkpoint: how many data segments had passed the receiver's tap
    before its VM's clock stopped but reached its guest only after (in the
    tap's queue, QEMU's or the guest's receive ring): the receiver's backlog
    at the stop; None for a stop outside the transfer (before its guest
    received the first segment or after the last). When the backlog fills
    the guest's ring, QEMU holds one frame and drops it at the stop
    (lost_after_tap). None without the capture."""
    flow = run.flow()
    if flow is None or run.receiver not in run.clocks:
        return None
    rt = tap_times(run, run.receiver)
    if rt is None:
        return None
    seqs, host = rt
    clock = run.clocks[run.receiver]
    gseq, first = np.unique(flow.rx.num, return_index=True)
    gt = flow.rx.t[first]
    never = np.iinfo(np.int64).max
    out = []
    for stop_h, _ in run.pauses(run.receiver):
        stop_g = clock.to_guest(stop_h)
        passed = seqs[host < stop_h]
        if not len(gseq) or not flow.rx.t.min() < stop_g < flow.rx.t.max():
            out.append(None)
            continue
        pos = np.clip(np.searchsorted(gseq, passed), 0, len(gseq) - 1)
        got_t = np.where(gseq[pos] == passed, gt[pos], never)
        out.append(int((got_t >= stop_g).sum()))
    return out


def receiver_frames(run):
    """(seqs, rx_t, tap table, clock) for the receiver: its guest's data
    segments (sorted seqs, guest receive ns), its tap's first passes
    (tap_times) and its ClockMap; None without the capture."""
    flow = run.flow()
    seg = flow.segments() if flow is not None else None
    rt = tap_times(run, run.receiver)
    if seg is None or rt is None or run.receiver not in run.clocks:
        return None
    seqs, _, rx_t, _ = seg
    return seqs, rx_t, rt, run.clocks[run.receiver]


def resume_windows(run, rt, ref_ns=(1_000_000_000, 700_000_000), after_ns=100_000_000):
    """Per receiver pause: (resume host ns, the tap passes from ref_ns[0] to
    ref_ns[1] before the stop, those from the resume to after_ns after it
    (None: no end)), as masks over the tap table rt."""
    for stop_h, resume_h in run.pauses(run.receiver):
        ref = (rt[1] >= stop_h - ref_ns[0]) & (rt[1] < stop_h - ref_ns[1])
        after = rt[1] >= resume_h
        if after_ns is not None:
            after &= rt[1] < resume_h + after_ns
        yield resume_h, ref, after


def _in_guest(seqs, keys):
    """(positions in seqs, which of keys the guest received)."""
    pos = np.clip(np.searchsorted(seqs, keys), 0, len(seqs) - 1)
    return pos, seqs[pos] == keys


def first_frame_after_resume(run):
    """Per checkpoint: the receiver leg (ms, against its median over the
    frames of resume_windows' reference before the receiver stopped) of
    the first data segment to reach the receiver's tap after its VM
    resumed: guest time that passed before the resumed guest took in
    anything. None without the capture."""
    got = receiver_frames(run)
    if got is None:
        return None
    seqs, rx_t, rt, clock = got

    def legs(sel):
        pos, ok = _in_guest(seqs, rt[0][sel])
        return rx_t[pos[ok]] - _to_guest(clock, rt[1][sel][ok])

    out = []
    for _, ref_sel, after_sel in resume_windows(run, rt):
        ref, after = legs(ref_sel), legs(after_sel)
        out.append(float(after[0] - np.median(ref)) / 1e6 if len(ref) >= 5 and len(after)
                   else None)
    return out


_TRACE = re.compile(r"^\d+@(\d+)\.(\d+):(virtqueue_flush|virtio_queue_notify|virtio_notify) (.*)$")


def ring_fills(log):
    """(fills, interrupts): host ns of every fill of the busiest virtio
    receive queue (queue 0 of a device, known from a virtio_queue_notify
    line) and of every interrupt QEMU raised for it (virtio_notify: with the
    guest's notifications suppressed a fill raises none), sorted, in a
    qemu.log with those trace lines; None without them."""
    fills, irqs, rx = {}, {}, set()
    try:
        with open(log, errors="replace") as f:
            for line in f:
                m = _TRACE.match(line)
                if not m:
                    continue
                vq = re.search(r"vq (0x[0-9a-f]+)", m.group(4))
                if vq is None:
                    continue
                if m.group(3) == "virtio_queue_notify":
                    if re.search(r" n 0 ", m.group(4)):
                        rx.add(vq.group(1))
                    continue
                t = int(m.group(1)) * 10**9 + int(m.group(2)) * 1000
                into = fills if m.group(3) == "virtqueue_flush" else irqs
                into.setdefault(vq.group(1), []).append(t)
    except OSError:
        return None
    queues = [q for q in fills if q in rx]
    if not queues:
        return None
    q = max(queues, key=lambda q: len(fills[q]))
    return (np.array(sorted(fills[q]), dtype=np.int64),
            np.array(sorted(irqs.get(q, [])), dtype=np.int64))


def first_frame_split(run):
    """Per checkpoint, for the first data segment to reach the receiver's
    tap after its VM resumed: (tap -> ring, ring -> guest), ms of the
    receiver's guest time, and the same legs' medians over the frames of
    resume_windows' reference; None without the capture or the trace lines
    (ring_fills). Also "ring_irq": ms from that fill to QEMU's next
    interrupt for the queue (0: raised with the fill; more: the guest had
    its notifications off and took the frame in only when it polled)."""
    got = receiver_frames(run)
    traced = ring_fills(os.path.join(run.dir, f"{run.receiver}-qemu.log"))
    if got is None or traced is None:
        return None
    seqs, rx_t, rt, clock = got
    fills, irqs = traced

    def split(sel):
        pos, ok = _in_guest(seqs, rt[0][sel])
        tap = rt[1][sel][ok]
        at = np.searchsorted(fills, tap)
        ok2 = at < len(fills)
        tap, ring, rx = tap[ok2], fills[at[ok2]], rx_t[pos[ok][ok2]]
        return ((_to_guest(clock, ring) - _to_guest(clock, tap)) / 1e6,
                (rx - _to_guest(clock, ring)) / 1e6, ring)

    out = []
    for _, ref_sel, after_sel in resume_windows(run, rt):
        ref, after = split(ref_sel), split(after_sel)
        if not len(after[0]) or len(ref[0]) < 5:
            out.append(None)
            continue
        at = np.searchsorted(irqs, after[2][0])
        irq = (float(clock.to_guest(int(irqs[at])) - clock.to_guest(int(after[2][0]))) / 1e6
               if at < len(irqs) else None)
        out.append({"tap_ring": float(after[0][0]), "ring_guest": float(after[1][0]),
                    "ring_irq": irq,
                    "ref_tap_ring": float(np.median(ref[0])),
                    "ref_ring_guest": float(np.median(ref[1]))})
    return out


def _lookup(table, seqs):
    """Host ns for each of seqs in a tap_times table (NaN where missing)."""
    keys, t = table
    pos = np.clip(np.searchsorted(keys, seqs), 0, len(keys) - 1)
    hit = keys[pos] == seqs
    return np.where(hit, t[pos].astype(np.float64), np.nan)


def _to_guest(clock, host_ns):
    return np.array([clock.to_guest(int(h)) if np.isfinite(h) else np.nan for h in host_ns])


def legs(run, inflight_tx, owd=None):
    """The legs' distortions (ns, medians over the in-flight segments whose
    transmit instants are `inflight_tx`, sender's guest ns) and how many of
    them both taps saw: {"sender", "network", "receiver", "total", "n"}.
    Each guest's leg is against its median over the REF_S of segments
    sent before them. With `owd` (their distortions against the link's
    replay, aligned with inflight_tx: the headline statistic) the total is
    that and the network leg what the guests' legs leave of it, so the
    node's queue building and draining, which the replay follows, does not
    show as distortion; without, the network leg is against its own
    reference too. None without captures or references."""
    flow = run.flow()
    seg = flow.segments() if flow is not None else None
    if seg is None or inflight_tx is None or not len(inflight_tx):
        return None
    st, rt = tap_times(run, run.sender), tap_times(run, run.receiver)
    if st is None or rt is None:
        return None
    seqs, tx_t, rx_t, _ = seg
    inflight_tx = np.asarray(inflight_tx, dtype=np.int64)
    first = int(inflight_tx.min())
    flying = np.isin(tx_t, inflight_tx)
    ref = (tx_t >= first - int(REF_S * 1e9)) & (tx_t < first - MARGIN_NS)
    pick = flying | ref
    s_g = _to_guest(run.clocks[run.sender], _lookup(st, seqs[pick]))
    r_g = _to_guest(run.clocks[run.receiver], _lookup(rt, seqs[pick]))
    tx, rx = tx_t[pick].astype(np.float64), rx_t[pick].astype(np.float64)
    leg = {"sender": s_g - tx, "network": r_g - s_g, "receiver": rx - r_g, "total": rx - tx}
    fl, rf = flying[pick], ref[pick]
    seen = np.isfinite(s_g) & np.isfinite(r_g)
    if (seen & rf).sum() < 5 or not (seen & fl).any():
        return None
    d = {name: v[seen & fl] - np.median(v[seen & rf]) for name, v in leg.items()}
    if owd is not None:
        by_tx = dict(zip(inflight_tx.tolist(), np.asarray(owd, dtype=np.float64).tolist()))
        d["total"] = np.array([by_tx[t] for t in tx[seen & fl].astype(np.int64).tolist()])
        d["network"] = d["total"] - d["sender"] - d["receiver"]
    out = {name: float(np.median(v)) for name, v in d.items()}
    out["n"] = int((seen & fl).sum())
    return out


def rows(eval_dir, ev=None):
    """Per run and checkpoint window ("checkpoint", or "null" for a
    baseline at the checkpointed run's instants): the legs, ms. ev: the
    folder's analysis.Evaluation if already loaded."""
    ev = ev or analysis.Evaluation(eval_dir)
    out = []
    for r in ev.all_packet_effects():
        if r["window"] not in ("checkpoint", "null") or r.get("owd_tx") is None:
            continue
        run = next(x for x in ev.checked + ev.baselines if x.id == r["run"])
        instant = _sender_instant(run, r)
        got = legs(run, np.asarray(r["owd_tx"], dtype=np.int64) + instant, r["owd"])
        if got is None:
            continue
        out.append(dict({k: (v / 1e6 if k != "n" else v) for k, v in got.items()},
                        run=r["run"], checkpoint=r["checkpoint"]))
    return out


def _sender_instant(run, row):
    if row["window"] == "null":
        return run.mono_at_elapsed(run.sender, row["elapsed_s"])
    i = [c["id"] for c in run.checkpoints].index(row["checkpoint"])
    return run.mono_instants(run.sender)[i]


def table(eval_dirs):
    print("| evaluation | run | checkpoint | in flight, both taps saw | OWD distortion, ms "
          "| sender leg, ms | network leg, ms | receiver leg, ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    evals = [(d, analysis.Evaluation(d)) for d in eval_dirs]
    per_run = {}
    for d, ev in evals:
        for x in rows(d, ev):
            print(f"| {os.path.basename(d.rstrip('/'))} | {x['run']} | {x['checkpoint']} | "
                  f"{x['n']} | {x['total']:.2f} | {x['sender']:.2f} | "
                  f"{x['network']:.2f} | {x['receiver']:.2f} |")
            per_run.setdefault(analysis.run_kind(x["run"]), []).append(x)
    if not per_run:
        print("(no run with tap captures: evaluate with --topology testbed --capture-taps)")
        return
    print()
    print("Median over the checkpoints, ms:")
    print()
    print("| run | checkpoints | OWD distortion | sender leg | network leg | receiver leg |")
    print("|---|---:|---:|---:|---:|---:|")
    for run, xs in per_run.items():
        cells = [f"{np.median([x[k] for x in xs]):.2f}"
                 for k in ("total", "sender", "network", "receiver")]
        print(f"| {run} | {len(xs)} | " + " | ".join(cells) + " |")
    print()
    print("Data segments that passed the receiver's tap and never reached its guest "
          "(ms from the nearest checkpoint's freeze):")
    print()
    print("| evaluation | run | VM stops | receiver's backlog at each stop, frames | "
          "lost after the tap | at, ms |")
    print("|---|---|---:|---|---:|---|")
    by_ring = {}
    for d, ev in evals:
        ring = ev.params.get("rx_queue_size", "–")
        for run in ev.checked + ev.baselines:
            lost = lost_after_tap(run)
            if lost is None:
                continue
            backlog = backlog_at_stops(run) if run.checkpoints else []
            print(f"| {os.path.basename(d.rstrip('/'))} | {run.id} | {len(run.checkpoints)} | "
                  f"{backlog} | {len(lost)} | "
                  f"{[round(x[2], 1) for x in lost if x[2] is not None][:10]} |")
            g = by_ring.setdefault(ring, {"backlog": [], "lost": 0})
            g["backlog"] += [x for x in backlog if x is not None]
            g["lost"] += len(lost)
    print()
    print("By the guests' receive ring (params.json rx_queue_size), over the VM stops during "
          "the transfer:")
    print()
    print("| guest receive ring | VM stops during the transfer | receiver's backlog at the "
          "stop, frames: median / p90 / max | frames lost after the tap |")
    print("|---|---:|---|---:|")
    for ring, g in by_ring.items():
        b = sorted(g["backlog"])
        cells = f"{b[len(b) // 2]} / {b[int(0.9 * len(b))]} / {b[-1]}" if b else "–"
        print(f"| {ring} | {len(b)} | {cells} | {g['lost']} |")
    print()
    print("The first segment to reach the receiver's tap after its VM resumed: its receiver "
          "leg, ms (guest time that passed before the resumed guest took anything in):")
    print()
    print("| run | checkpoints | median | range |")
    print("|---|---:|---:|---|")
    firsts = {}
    for _, ev in evals:
        for run in ev.checked:
            got = [x for x in (first_frame_after_resume(run) or []) if x is not None]
            firsts.setdefault(analysis.run_kind(run.id), []).extend(got)
    for run, xs in firsts.items():
        if xs:
            print(f"| {run} | {len(xs)} | {np.median(xs):.2f} | [{min(xs):.2f}, {max(xs):.2f}] |")
    splits = {}
    for _, ev in evals:
        for run in ev.checked:
            got = [x for x in (first_frame_split(run) or []) if x is not None]
            splits.setdefault(analysis.run_kind(run.id), []).extend(got)
    if not any(splits.values()):
        return
    print()
    print("That segment's receiver leg split at the guest's receive ring (QEMU's trace lines, "
          "evaluate --qemu-trace), ms of guest time: median [range]; before the stop, the "
          "medians of the same legs:")
    print()
    print("| run | checkpoints | tap -> ring (QEMU) | ring -> guest (the guest's vCPU) "
          "| fill -> QEMU's next interrupt | before the stop: tap -> ring, ring -> guest |")
    print("|---|---:|---|---|---|---|")

    def cell(xs):
        return f"{np.median(xs):.2f} [{min(xs):.2f}, {max(xs):.2f}]" if xs else "–"
    for run, xs in splits.items():
        if xs:
            print(f"| {run} | {len(xs)} | {cell([x['tap_ring'] for x in xs])} | "
                  f"{cell([x['ring_guest'] for x in xs])} | "
                  f"{cell([x['ring_irq'] for x in xs if x['ring_irq'] is not None])} | "
                  f"{np.median([x['ref_tap_ring'] for x in xs]):.2f}, "
                  f"{np.median([x['ref_ring_guest'] for x in xs]):.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/amber-py transparency.paths", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR")
    a = ap.parse_args(argv)
    table(a.eval_dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
