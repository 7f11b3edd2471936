"""A synthetic transparency evaluation with known effects, for the
self-check: an iperf3-like transfer through a link simulated event by event
in host time, with the guests' clocks stopping while their VM is paused,
written as the evaluation driver writes a real one (run.json, the probes'
files, iperf3.json, the node's held frames as a pcap, captures at the
VMs' taps).

Runs:
  baseline  nothing happens
  amber     the network frozen [T, T+P]; vm1 stops at T, vm2 at T + stall
            (it runs `stall` with the link frozen, a late STOP), both
            resume at T+P: every in-flight segment arrives `stall` late
            in vm2's time, and vm2 sees a gap of `stall`
  naive     both VMs stopped [T, T+P], the network runs: the segments in
            flight reach vm2 while it is stopped and come in at once when
            it resumes, early by up to the one-way delay

Known: the guests' clock offset (vm1's clock reads `offset` more than
vm2's), the stall, the one-way delay `owd` (propagation plus a standing
queue). The sender sends a segment every serialization time of the link
(its own clock), the receiver ACKs every second segment at once."""

import json
import os
import struct

import numpy as np

SEC = 1_000_000_000
HEADER = struct.Struct("<8sHHIQQQqqqqQQQ")
RX = np.dtype([("ts_ns", "<i8"), ("seq", "<u4"), ("ack", "<u4"), ("payload", "<u2"),
               ("ip_id", "<u2"), ("peer_port", "<u2"), ("flags", "u1"), ("dir", "u1")])
TIMED = np.dtype([("start_ns", "<i8"), ("duration_ns", "<i8")])
FROM_PORT, OUTGOING = 1, 2
MSS = 1448
PORT, PEER = 5201, 40000
ADDR = ("10.88.0.1", "10.88.0.2")
TAP_LAG = 50_000  # a segment at the sender's tap after its guest sent it
RX_TAP_LEAD = 30_000  # at the receiver's tap before its guest takes it in,
RING_TO_GUEST = 20_000  # of which in the guest's receive ring (qemu.log)


class Guest:
    """A VM's clocks: mono = host - base - (time paused before host)."""

    def __init__(self, base_ns, real_minus_mono):
        self.base = base_ns
        self.rmm = real_minus_mono
        self.pauses = []

    def paused_before(self, h):
        h = np.asarray(h, dtype=np.int64)
        out = np.zeros_like(h)
        for a, b in self.pauses:
            out += np.clip(h - a, 0, b - a)
        return out

    def mono(self, h):
        return np.asarray(h, dtype=np.int64) - self.base - self.paused_before(h)

    def delivered(self, h):
        """When the VM takes in something that reached it at host h: at
        once, or when it resumes."""
        h = np.asarray(h, dtype=np.int64).copy()
        for a, b in self.pauses:
            inside = (h >= a) & (h < b)
            h[inside] = b
        return h

    def host_of(self, mono):
        """Host instant at which the running VM's clock reads `mono`."""
        h = np.asarray(mono, dtype=np.int64) + self.base
        for a, b in sorted(self.pauses):
            h = np.where(h >= a, h + (b - a), h)
        return h


def _network_arrival(h_tx, delay, frozen):
    """Host arrival after `delay` of link time, the link frozen in `frozen`."""
    out = np.asarray(h_tx, dtype=np.int64) + delay
    for a, b in frozen:
        out = np.where((h_tx < a) & (out > a), out + (b - a), out)
    return out


def write_probe(path, kind, records, start_mono, start_real, stop_mono, stop_real, params):
    size = RX.itemsize if kind == 1 else TIMED.itemsize
    head = HEADER.pack(b"AMBPROBE", 2, kind, size, len(records), 0, 0, start_mono, start_real,
                       stop_mono, stop_real, *params)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(head + records.tobytes())


def write_pcap(path, seqs, src, dst, times=None):
    """Data segments src -> dst, stamped `times` (host ns; 0 without)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    times = np.zeros(len(seqs), dtype=np.int64) if times is None else np.asarray(times)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        for seq, t in zip(seqs, times):
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 32 + 100, 1, 0x4000, 64, 6, 0,
                             bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split(".")))
            tcp = struct.pack(">HHIIBBHHH", PEER, PORT, int(seq) % (1 << 32), 0, 8 << 4, 0x10, 512, 0, 0)
            frame = b"\x52\x54\x00\x88\x00\x02\x52\x54\x00\x88\x00\x01\x08\x00" + ip + tcp + bytes(12 + 100)
            f.write(struct.pack("<IIII", int(t) // SEC, int(t) % SEC, len(frame), len(frame)) + frame)


def make(eval_dir, *, rate_bps=100e6, owd_ms=50.0, stall_ms=3.0, offset_s=123.456, pause_s=1.0,
         duration_s=20.0, interval_s=5.0, isn=4_200_000_000, purge_at_stop=False,
         kinds=("baseline", "amber", "naive")):
    """Writes the evaluation folder; returns the known values. kinds: which runs
    to write ("pause" stops and resumes as amber does). purge_at_stop:
    in the amber run the receiver never gets the last segment that reached
    its tap before its first stop (as QEMU's tap back end drops the frame it
    holds for a full guest ring); known["purged"] is its (seq, tap ns)."""
    ser = int(round((MSS + 66) * 8 / rate_bps * SEC))
    owd = int(owd_ms * 1e6)
    stall = int(stall_ms * 1e6)
    h0 = 1_800_000_000 * SEC
    runs = {}
    known = {"ser_ns": ser, "owd_ns": owd, "stall_ns": stall, "offset_ns": int(offset_s * SEC),
             "rate_bps": rate_bps}
    for name in kinds:
        vm1 = Guest(h0 - 30 * SEC - int(offset_s * SEC), 1_700_000_000 * SEC)
        vm2 = Guest(h0 - 30 * SEC, 1_700_000_000 * SEC + 7 * SEC)
        start = h0 + SEC
        instants = [start + int(k * interval_s * SEC) for k in range(1, int(duration_s / interval_s))]
        frozen, checkpoints = [], []
        shift = 0
        for k, t in enumerate(instants, 1):
            t += shift
            p = int(pause_s * SEC)
            c = {"id": k, "checkpoint": f"c{k:04d}", "freeze_ns": t, "resume_ns": t + p,
                 "restore": False}
            if name in ("amber", "pause"):
                frozen.append((t, t + p))
                vm1.pauses.append((t, t + p))
                vm2.pauses.append((t + stall, t + p))
                c["vms"] = {"vm1": {"stop_ns": t, "resume_ns": t + p},
                            "vm2": {"stop_ns": t + stall, "resume_ns": t + p}}
            elif name == "naive":
                vm1.pauses.append((t, t + p))
                vm2.pauses.append((t, t + p))
                c["vms"] = {"vm1": {"stop_ns": t, "resume_ns": t + p},
                            "vm2": {"stop_ns": t, "resume_ns": t + p}}
            else:
                continue
            shift += p
            checkpoints.append(c)
        end = start + int(duration_s * SEC) + shift
        # The sender: a segment every `ser` of its own running time.
        g_start, g_end = vm1.mono(start), vm1.mono(end)
        tx_mono = np.arange(g_start, g_end, ser, dtype=np.int64)
        h_tx = vm1.host_of(tx_mono)
        h_arrive = _network_arrival(h_tx, owd, frozen)
        h_rx = vm2.delivered(h_arrive)
        # Frames a paused VM takes in at once keep their order, 1 us apart.
        order = np.argsort(h_rx, kind="stable")
        h_rx_sorted = h_rx[order]
        bumped = np.maximum.accumulate(h_rx_sorted + np.arange(len(h_rx_sorted)) * 1000) - \
            np.arange(len(h_rx_sorted)) * 1000
        h_rx[order] = np.maximum(h_rx_sorted, bumped)
        rx_mono = vm2.mono(h_rx)
        seq = (isn + np.arange(len(tx_mono), dtype=np.int64) * MSS)
        # ACKs: every second segment, sent at once, the reverse link the same.
        acked = np.arange(1, len(tx_mono), 2)
        h_ack_tx = h_rx[acked]
        h_ack_rx = vm1.delivered(_network_arrival(h_ack_tx, owd, frozen))
        ack_num = seq[acked] + MSS

        def recs(t_mono, rmm, seqs, acks, payload, direction):
            r = np.zeros(len(t_mono), dtype=RX)
            r["ts_ns"] = t_mono + rmm
            r["seq"] = seqs % (1 << 32)
            r["ack"] = acks % (1 << 32)
            r["payload"] = payload
            r["ip_id"] = np.arange(len(t_mono)) % 65536
            r["peer_port"] = PEER
            r["flags"] = 0x10
            r["dir"] = direction
            return r

        sender = np.concatenate([
            recs(tx_mono, vm1.rmm, seq, np.zeros_like(seq), MSS, OUTGOING),
            recs(vm1.mono(h_ack_rx), vm1.rmm, np.zeros_like(acked), ack_num, 0, FROM_PORT)])
        got = np.ones(len(seq), dtype=bool)
        if purge_at_stop and name == "amber":
            stop = vm2.pauses[0][0]
            last = int(np.nonzero(h_arrive < stop)[0][-1])
            got[last] = False
            known["purged"] = (int(seq[last] - isn), int(h_arrive[last]) - RX_TAP_LEAD)
        receiver = np.concatenate([
            recs(rx_mono[got], vm2.rmm, seq[got], np.zeros(int(got.sum()), dtype=np.int64), MSS, 0),
            recs(vm2.mono(h_ack_tx), vm2.rmm, np.zeros_like(acked), ack_num, 0, FROM_PORT | OUTGOING)])
        run_dir = os.path.join(eval_dir, "runs", name)
        for vm, g, r in (("vm1", vm1, sender), ("vm2", vm2, receiver)):
            r = r[np.argsort(r["ts_ns"], kind="stable")]
            sm, em = int(g.mono(start - SEC)), int(g.mono(end + SEC))
            write_probe(os.path.join(run_dir, "probe", vm, "rx.bin"), 1, r, sm, sm + g.rmm, em,
                        em + g.rmm, (PORT, 2, 3))
            sleeps = np.zeros(int((em - sm) // (10 * 10**6)), dtype=TIMED)
            sleeps["start_ns"] = sm + np.arange(len(sleeps)) * 10**7
            sleeps["duration_ns"] = 10**7
            write_probe(os.path.join(run_dir, "probe", vm, "timer.bin"), 2, sleeps, sm, sm + g.rmm,
                        em, em + g.rmm, (10**7, 1, 0))
        anchors = {}
        for vm, g in (("vm1", vm1), ("vm2", vm2)):
            hs = [start - SEC] + [c["resume_ns"] + int(1.2 * SEC) for c in checkpoints] + [end + SEC]
            anchors[vm] = [{"host_ns": int(h), "guest_ns": int(g.mono(h)), "rtt_ns": 100_000}
                           for h in hs]
        # Captures at the VMs' taps (evaluate --capture-taps): a segment
        # leaves the sender's QEMU TAP_LAG after its guest sent it and
        # reaches the receiver's tap when the network delivers it.
        write_pcap(os.path.join(run_dir, "taps", "vm1.pcap"), seq, *ADDR, h_tx + TAP_LAG)
        write_pcap(os.path.join(run_dir, "taps", "vm2.pcap"), seq, *ADDR, h_arrive - RX_TAP_LEAD)
        # The receiver's qemu.log with evaluate --qemu-trace's lines: QEMU
        # fills the receive ring RING_TO_GUEST before the guest takes each
        # segment in, and raises an interrupt with every fill.
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "vm2-qemu.log"), "w") as f:
            f.write(f"1@{start // SEC}.000000:virtio_queue_notify vdev 0x1 n 0 vq 0xa0\n")
            for t in np.sort(h_rx) - RING_TO_GUEST:
                stamp = f"1@{int(t) // SEC}.{int(t) % SEC // 1000:06d}"
                f.write(f"{stamp}:virtqueue_flush vq 0xa0 count 1\n"
                        f"{stamp}:virtio_notify vdev 0x1 vq 0xa0\n")
        if name == "amber":
            # The node holds, at each freeze, what was on the link.
            for c in checkpoints:
                on_link = (h_tx < c["freeze_ns"]) & (_network_arrival(h_tx, owd, []) > c["freeze_ns"])
                write_pcap(os.path.join(run_dir, "held", str(c["id"]), "pipe0-lfn-a_to_b.pcap"),
                           seq[on_link], *ADDR)
        goodput = len(tx_mono) * MSS * 8 / ((vm2.mono(h_rx[-1]) - vm2.mono(h_rx[0])) / SEC)
        iperf = {"intervals": [], "end": {"sum_received": {"bits_per_second": goodput},
                                          "sum_sent": {"retransmits": 0}}}
        meta = {"name": name, "iperf_start_host_ns": start, "iperf_end_host_ns": end,
                "sender": "vm1", "receiver": "vm2", "sender_addr": ADDR[0], "receiver_addr": ADDR[1],
                "checkpoints": checkpoints, "guest_clock": anchors,
                "delaynode": {"frames_in": len(seq), "frames_out": len(seq), "dropped": {}}}
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "run.json"), "w") as f:
            json.dump(meta, f)
        with open(os.path.join(run_dir, "iperf3.json"), "w") as f:
            json.dump(iperf, f)
        runs[name] = meta
    with open(os.path.join(eval_dir, "params.json"), "w") as f:
        json.dump({"rate": f"{rate_bps / 1e6:g}Mbit", "rate_bps": rate_bps, "delay": f"{owd_ms}ms",
                   "duration_s": duration_s, "interval_s": interval_s,
                   "runs": list(kinds), "started_host_ns": h0}, f)
    return known
