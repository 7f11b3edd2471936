"""Packet-level transparency statistics: what a naive checkpoint breaks and
the stall statistics cannot see (bench/transparency/README.md, issue #15).

Both guests record every TCP segment of the iperf3 port they send and
receive (guest/probe.c, rx records version 2), so each data segment has a
transmit instant in the sender's guest clock and a receive instant in the
receiver's, and each ACK the reverse. From them, per checkpoint:

- one-way delay (OWD) distortion of the data segments in flight at the
  instant (sent within the last data one-way delay before the sender
  stopped: the RTT at the sender less the reverse link's configured
  delay, since the guests' clock offset hides the true OWD): their OWD
  (receiver's receive − sender's transmit, two guest clocks) minus the
  reference OWD, the median OWD of the segments sent in the `REF_S` before
  them (received before the instant, so undisturbed). The two guest
  clocks' offset cancels: both OWDs contain it, and an in-flight segment
  was sent before the sender's pause, so only the receiver's pause and the
  network's enter its OWD. A transparent checkpoint leaves it at 0; a
  naive one delivers the in-flight segments when the receiver resumes,
  early in guest time (down to −OWD);
- RTT distortion per ACK at the sender (one clock: the sender's), for the
  segments in flight: what TCP's RTT estimator sees;
- burst index: the most bytes (as framed on the wire) the receiver got in
  any `BURST_S` window around the instant over what the link carries in
  `BURST_S`. Above 1, time was compressed.

All times are guest CLOCK_MONOTONIC ns of the VM that took them."""

import numpy as np

REF_S = 0.3        # the reference stretch before the first in-flight segment
BURST_S = 0.005    # the burst index's window
WIRE_HEADER = 66   # Ethernet 14 + IPv4 20 + TCP 32 (with timestamps)


def tcp_mss(mtu=1500):
    """TCP's payload per segment at an MTU (IPv4 20 + TCP 32 with timestamps)."""
    return mtu - 52


TCP_MSS = tcp_mss()


def tcp_max_mbps(rate_bps, mss=TCP_MSS, header=WIRE_HEADER):
    """The most goodput TCP can get through a link that counts Ethernet
    frames without preamble and CRC (the delay node's default)."""
    return rate_bps * mss / (mss + header) / 1e6


def _unwrap(seq, base):
    """32-bit sequence numbers relative to `base`, unwrapped by continuity
    in the order given (a transfer of more than 4 GiB wraps)."""
    rel = (seq.astype(np.int64) - int(base)) % (1 << 32)
    if len(rel) < 2:
        return rel
    step = np.diff(rel)
    wraps = np.cumsum(np.where(step < -(1 << 31), 1, 0) - np.where(step > (1 << 31), 1, 0))
    return rel + np.concatenate([[0], wraps]) * (1 << 32)


class Stream:
    """One kind of segment of the data connection as one guest saw it,
    sorted by time: t (guest mono ns), seq or ack (unwrapped, int64),
    payload, ip_id."""

    def __init__(self, t, num, payload, ip_id):
        order = np.argsort(t, kind="stable")
        self.t = np.asarray(t, dtype=np.int64)[order]
        self.num = np.asarray(num, dtype=np.int64)[order]
        self.payload = np.asarray(payload, dtype=np.int64)[order]
        self.ip_id = np.asarray(ip_id, dtype=np.int64)[order]

    def __len__(self):
        return len(self.t)


class Flow:
    """The iperf3 data connection seen by both guests: the sender's data
    segments out (tx) and ACKs in (acks), the receiver's data segments in
    (rx). None of a stream when a probe file lacks it (version 1, tx=0)."""

    def __init__(self, sender_file, receiver_file):
        from amberlab.transparency.guest import FROM_PORT, OUTGOING
        rr = receiver_file.records
        rmono = receiver_file.mono_times()
        incoming_data = ((rr["dir"] & (FROM_PORT | OUTGOING)) == 0) & (rr["payload"] > 0)
        if not incoming_data.any():
            raise ValueError("the receiver recorded no data segment")
        has_port = "peer_port" in rr.dtype.names
        # iperf3's control connection uses the same port: take the busiest.
        if has_port:
            ports, inv = np.unique(rr["peer_port"][incoming_data], return_inverse=True)
            volume = np.bincount(inv, weights=rr["payload"][incoming_data])
            self.port = int(ports[np.argmax(volume)])
            incoming_data &= rr["peer_port"] == self.port
        else:
            self.port = None
        first = np.argmin(rmono[incoming_data])
        self.isn = int(rr["seq"][incoming_data][first])
        self.rx = self._stream(rr, rmono, incoming_data, "seq")
        self.tx = self.acks = self.acks_out = None
        if receiver_file.has_outgoing and has_port:
            out_acks = (rr["peer_port"] == self.port) & \
                ((rr["dir"] & (FROM_PORT | OUTGOING)) == (FROM_PORT | OUTGOING))
            self.acks_out = self._stream(rr, rmono, out_acks, "ack")
        if sender_file is not None and sender_file.has_outgoing and has_port:
            sr = sender_file.records
            smono = sender_file.mono_times()
            mine = sr["peer_port"] == self.port
            out_data = mine & ((sr["dir"] & (FROM_PORT | OUTGOING)) == OUTGOING) & (sr["payload"] > 0)
            in_acks = mine & ((sr["dir"] & (FROM_PORT | OUTGOING)) == FROM_PORT)
            if out_data.any():
                self.tx = self._stream(sr, smono, out_data, "seq")
                self.acks = self._stream(sr, smono, in_acks, "ack")

    def _stream(self, r, mono, sel, field):
        t = mono[sel]
        order = np.argsort(t, kind="stable")
        num = _unwrap(r[field][sel][order], self.isn)
        return Stream(t[order], num, r["payload"][sel][order],
                      r["ip_id"][sel][order] if "ip_id" in r.dtype.names else np.zeros(len(t)))

    def _sent_once(self):
        """Sequence numbers the sender sent exactly once, sorted, with each
        one's transmit instant and payload."""
        order = np.argsort(self.tx.num, kind="stable")
        num, t, payload = self.tx.num[order], self.tx.t[order], self.tx.payload[order]
        seqs, first, counts = np.unique(num, return_index=True, return_counts=True)
        once = counts == 1
        return seqs[once], t[first][once], payload[first][once]

    def retransmissions(self):
        """The sender's data segments that resend bytes it had sent before
        (a retransmit, whole or part): their transmit instants, guest ns."""
        if self.tx is None or not len(self.tx):
            return np.array([], dtype=np.int64)
        end = self.tx.num + self.tx.payload
        sent_before = np.maximum.accumulate(np.concatenate(([self.tx.num[0]], end[:-1])))
        return self.tx.t[self.tx.num < sent_before]

    def segments(self):
        """Data segments sent once and received: (seq, tx_t, rx_t, payload),
        sorted by tx_t. Retransmitted sequence numbers are left out (which
        copy arrived is unknown), as are segments only one side saw."""
        if self.tx is None or not len(self.tx):
            return None
        seqs, tx_t, payload = self._sent_once()
        # The first arrival of each sequence number.
        rx_seq, rx_first = np.unique(self.rx.num, return_index=True)
        pos = np.clip(np.searchsorted(rx_seq, seqs), 0, len(rx_seq) - 1)
        got = rx_seq[pos] == seqs
        rx_t = self.rx.t[rx_first[pos]]
        order = np.argsort(tx_t[got], kind="stable")
        return seqs[got][order], tx_t[got][order], rx_t[got][order], payload[got][order]

    def ack_delays(self):
        """ACKs both guests recorded, matched by ack number and IPv4 id:
        (receiver's transmit instant, sender's receive instant), each in its
        own guest clock. None without both sides' records."""
        if self.acks_out is None or self.acks is None or not len(self.acks_out) or not len(self.acks):
            return None
        key_out = self.acks_out.num * 65536 + self.acks_out.ip_id
        key_in = self.acks.num * 65536 + self.acks.ip_id
        k_out, i_out = np.unique(key_out, return_index=True)
        k_in, i_in = np.unique(key_in, return_index=True)
        both, a, b = np.intersect1d(k_out, k_in, assume_unique=True, return_indices=True)
        order = np.argsort(self.acks_out.t[i_out[a]], kind="stable")
        return self.acks_out.t[i_out[a]][order], self.acks.t[i_in[b]][order]

    def rtt_samples(self):
        """Per ACK that acknowledges a segment sent once exactly up to its
        end: (tx_t of that segment, ack rx_t), both the sender's clock."""
        if self.tx is None or self.acks is None or not len(self.acks):
            return None
        seqs, tx_t, payload = self._sent_once()
        ends = seqs + payload
        # Only ACKs that move the cumulative ack forward (TCP's own rule for
        # an RTT sample from a new ACK).
        running = np.maximum.accumulate(self.acks.num)
        new = np.concatenate([[True], self.acks.num[1:] > running[:-1]])
        a_num, a_t = self.acks.num[new], self.acks.t[new]
        if not len(ends):
            return None
        pos = np.clip(np.searchsorted(ends, a_num), 0, len(ends) - 1)
        hit = ends[pos] == a_num
        return tx_t[pos[hit]], a_t[hit]


MARGIN_NS = 2_000_000       # the in-flight window's margins: instant and skew errors
PROBE_BACK_NS = 1_000_000_000  # a first reference this long before the instant


def _median_between(tx_t, delay, lo, hi):
    sel = (tx_t >= lo) & (tx_t < hi)
    return (float(np.median(delay[sel])), int(sel.sum())) if sel.sum() >= 5 else (None, 0)


def flight_time(tx_t, later_t, instant, ref_s=REF_S):
    """The median later − tx of the pairs sent in the ref_s ending
    PROBE_BACK_NS before `instant`: how long a segment stays in flight,
    when both instants are one clock's (RTT at the sender)."""
    tx_t = np.asarray(tx_t, dtype=np.int64)
    delay = np.asarray(later_t, dtype=np.int64) - tx_t
    t, _ = _median_between(tx_t, delay, instant - PROBE_BACK_NS - int(ref_s * 1e9),
                           instant - PROBE_BACK_NS)
    return t


def in_flight_distortion(tx_t, later_t, instant, flight_ns, ref_s=REF_S, margin_ns=MARGIN_NS):
    """Segments in flight at a checkpoint, chosen by when they were sent:
    within the last flight_ns before the sender's `instant` (its own
    clock), minus `margin_ns` at both ends for the instant's error and the
    VMs' stop skew. Their delay (later − tx, possibly across two clocks)
    minus the reference delay: the median delay of the segments sent in the
    ref_s before the in-flight ones, which completed before the instant.
    Returns (distortions ns, reference ns, tx_t of the in-flight segments)
    or (None, None, None)."""
    if flight_ns is None or flight_ns <= 2 * margin_ns:
        return None, None, None
    tx_t = np.asarray(tx_t, dtype=np.int64)
    delay = np.asarray(later_t, dtype=np.int64) - tx_t
    start = instant - int(flight_ns)
    reference, _ = _median_between(tx_t, delay, start - int(ref_s * 1e9), start - margin_ns)
    if reference is None:
        return None, None, None
    flying = (tx_t >= start + margin_ns) & (tx_t < instant - margin_ns)
    if not flying.any():
        return None, None, None
    return delay[flying] - reference, reference, tx_t[flying]


def owd_floor(ack_tx, ack_rx, instant, link_delay_ns, window_ns=2 * PROBE_BACK_NS, not_before=None):
    """The smallest one-way delay a data segment could have, as the two
    guests' clocks read it: the link's propagation delay plus their offset.
    The ACK direction has no queue, so its fastest ACK (receiver's transmit
    → sender's receive) over the window_ns before `instant` (the sender's
    clock) is the reverse propagation delay minus the offset; with the same
    propagation delay both ways, floor = 2 · delay − that. Path latencies
    outside the link make it a little low (conservative). None without
    ACKs there. not_before: the window starts no earlier (a previous
    checkpoint's compressed ACKs would lower it)."""
    if ack_tx is None or link_delay_ns is None:
        return None
    ack_tx = np.asarray(ack_tx, dtype=np.int64)
    ack_rx = np.asarray(ack_rx, dtype=np.int64)
    lo = instant - window_ns if not_before is None else max(instant - window_ns, not_before)
    sel = (ack_rx >= lo) & (ack_rx < instant)
    if sel.sum() < 5:
        return None
    return 2 * link_delay_ns - float((ack_rx[sel] - ack_tx[sel]).min())


def _wire_ns(payload, rate_bps):
    return (np.asarray(payload, dtype=np.float64) + WIRE_HEADER) * 8 / rate_bps * 1e9


def link_replay(tx_t, rx_t, payload, instant, flight_ns, rate_bps, floor_ns, fit_n=256,
                margin_ns=MARGIN_NS):
    """OWD distortion of the data segments in flight at a checkpoint,
    against what the link itself would have done with them: the segments
    (in link order, one-way delays across two clocks) replayed through a
    FIFO of the link's rate and propagation delay, departure_k =
    max(departure_{k-1} + wire_k, tx_k + floor + wire_k) (owd_floor). The
    replay starts at the `fit_n` segments delivered just before the
    in-flight ones and is aligned to their receive stamps (the 5th
    percentile of stamp − replay: a guest stamps late, never early). A
    segment's distortion is its stamp − replay less the median of the same
    over those `fit_n`: 0 for a segment as undisturbed as they were.
    Unlike a plain before/after reference, the replay follows the queue the
    link builds and drains, so its swings do not show as distortion.
    Returns (distortions ns, tx_t of the in-flight segments) or
    (None, None)."""
    if flight_ns is None or flight_ns <= 2 * margin_ns or not rate_bps > 0 or floor_ns is None:
        return None, None
    tx_t = np.asarray(tx_t, dtype=np.int64)
    rx_t = np.asarray(rx_t, dtype=np.int64)
    start = instant - int(flight_ns)
    flying = (tx_t >= start + margin_ns) & (tx_t < instant - margin_ns)
    before = np.nonzero(tx_t < start - margin_ns)[0]
    if not flying.any() or len(before) < fit_n:
        return None, None
    first = before[-fit_n]
    last = np.nonzero(flying)[0][-1]
    wire = _wire_ns(np.asarray(payload)[first:last + 1], rate_bps)
    tx = tx_t[first:last + 1].astype(np.float64)
    rx = rx_t[first:last + 1].astype(np.float64)
    earliest = tx + floor_ns + wire
    fit = slice(0, fit_n)

    def replay(at):
        out = np.empty(len(tx))
        prev = at
        for k in range(len(tx)):
            prev = max(prev + wire[k], earliest[k]) if k else max(at, earliest[0])
            out[k] = prev
        return out

    pred = replay(rx[0])
    pred = replay(rx[0] + float(np.percentile(rx[fit] - pred[fit], 5)))
    resid = rx - pred
    resid -= float(np.median(resid[fit]))
    sel = flying[first:last + 1]
    return resid[sel], tx_t[first:last + 1][sel]


def early(tx_t, later_t, instant, flight_ns, floor_ns, margin_ns=MARGIN_NS, slack_ns=1_000_000):
    """How many segments in flight at the instant completed faster than the
    path allows: a delay below floor_ns (plus a wire time of 0) by more than
    slack_ns, i.e. time was compressed. (count, in flight) or (None, 0)."""
    if flight_ns is None or flight_ns <= 2 * margin_ns or floor_ns is None:
        return None, 0
    tx_t = np.asarray(tx_t, dtype=np.int64)
    delay = np.asarray(later_t, dtype=np.int64) - tx_t
    start = instant - int(flight_ns)
    flying = (tx_t >= start + margin_ns) & (tx_t < instant - margin_ns)
    if not flying.any():
        return None, 0
    return int((delay[flying] < floor_ns - slack_ns).sum()), int(flying.sum())


def stall_around(rx_t, instant, n=32, first_after=None):
    """The longest receive gap among the n segments on each side of the
    checkpoint's segment at the receiver: the first one received at or
    after `instant`, or the index `first_after` (by packet identity: the
    first segment the node held). Frames waiting in the guest's NIC ring
    when it stopped are taken in together with the held ones after the
    resume, so the stall may show a segment or two before the identity
    point; n = 32 covers a NAPI budget of them. ns, or NaN."""
    t = np.asarray(rx_t, dtype=np.int64)
    i = int(np.searchsorted(t, instant, "left")) if first_after is None else int(first_after)
    lo, hi = max(i - n, 0), min(i + n, len(t) - 1)
    if hi - lo < 1 or i <= 0 or i >= len(t):
        return float("nan")
    return float(np.diff(t[lo:hi + 1]).max())


def burst_index(rx_t, payload, center, half_window_ns, rate_bps, window_s=BURST_S):
    """The most wire bytes received in any window_s window that starts within
    center ± half_window_ns, over what the link carries in window_s."""
    t = np.asarray(rx_t, dtype=np.int64)
    lo = np.searchsorted(t, center - half_window_ns, "left")
    hi = np.searchsorted(t, center + half_window_ns, "right")
    if hi - lo < 2:
        return float("nan")
    wire = np.asarray(payload, dtype=np.int64) + WIRE_HEADER
    csum = np.concatenate([[0], np.cumsum(wire)])
    w = int(window_s * 1e9)
    starts = np.arange(lo, hi)
    ends = np.searchsorted(t, t[starts] + w, "left")
    most = float((csum[ends] - csum[starts]).max())
    return most / (rate_bps * window_s / 8)
