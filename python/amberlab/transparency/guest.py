"""The host's side of the guest probe (guest/probe.c, guest/README.md).

A VM booted with a management NIC (QEMU user networking with
hostfwd=tcp:127.0.0.1:P-:7700 and hostfwd=udp:127.0.0.1:P-:7700) and
`amber.mgmt=10.0.2.15/24` on its kernel command line runs the probe daemon;
from the host:

    probe = GuestProbe(mgmt_port=P, run_dir=RUN_DIR)   # run_dir: fallback console
    probe.wait_ready()
    probe.start(["rx"], port=5201)             # or ["timer", "cpu"], ...
    anchor = probe.clock_anchor()              # {"host_ns", "guest_ns", ...}
    ...experiment...
    probe.stop(); probe.fetch(DIR)             # DIR/{rx,timer,cpu}.bin
    files = read_probe_dir(DIR)

Host instants are CLOCK_REALTIME nanoseconds (time.time_ns()), the clock
amber's controller schedules checkpoints in. ClockMap turns them into guest
CLOCK_MONOTONIC nanoseconds, taking the VM's pauses out.

Command line (for drivers in other languages and for people):
    scripts/amber-py transparency.guest clock PORT [--samples N]
    scripts/amber-py transparency.guest start PORT rx|timer|cpu... [key=value...]
    scripts/amber-py transparency.guest stop PORT [--fetch DIR]
    scripts/amber-py transparency.guest dump FILE...
"""

import contextlib
import ctypes
import json
import os
import socket
import struct
import sys
import time

import numpy as np

CLOCK_MAGIC = 0x434D4241
HEADER = struct.Struct("<8sHHIQQQqqqqQQQ")
assert HEADER.size == 96
KINDS = {1: "rx", 2: "timer", 3: "cpu"}
# rx records: version 2 (24 bytes) also keeps the ack, the IPv4 id, the
# peer's port and frames the guest sent; version 1 (16 bytes) files still read.
RX_DTYPE = np.dtype([("ts_ns", "<i8"), ("seq", "<u4"), ("ack", "<u4"), ("payload", "<u2"),
                     ("ip_id", "<u2"), ("peer_port", "<u2"), ("flags", "u1"), ("dir", "u1")])
RX_DTYPE_V1 = np.dtype([("ts_ns", "<i8"), ("seq", "<u4"), ("payload", "<u2"), ("flags", "u1"),
                        ("dir", "u1")])
# rx `dir` bits
FROM_PORT = 1  # the frame comes from the measured port (clear: goes to it)
OUTGOING = 2   # the guest sent the frame (clear: it arrived)
TIMED_DTYPE = np.dtype([("start_ns", "<i8"), ("duration_ns", "<i8")])


class ProbeError(RuntimeError):
    pass


class ProbeFile:
    """One measurement file: `header` (dict) and `records` (numpy array:
    rx: ts_ns, seq, payload, flags, dir; timer/cpu: start_ns, duration_ns)."""

    def __init__(self, kind, header, records):
        self.kind = kind
        self.header = header
        self.records = records

    @property
    def real_minus_mono(self):
        """CLOCK_REALTIME - CLOCK_MONOTONIC at start (rx stamps are realtime)."""
        return self.header["start_real_ns"] - self.header["start_mono_ns"]

    @property
    def clock_step_ns(self):
        """How much REALTIME - MONOTONIC changed between start and stop
        (0 unless something set the guest's time)."""
        h = self.header
        return (h["stop_real_ns"] - h["stop_mono_ns"]) - self.real_minus_mono

    @property
    def has_outgoing(self):
        """rx: whether frames the guest sent are recorded too (version 2, tx=1)."""
        return self.kind == "rx" and self.header.get("version", 1) >= 2 and \
            bool(self.header.get("capture_flags", 0) & 2)

    def mono_times(self):
        """Each record's instant in guest CLOCK_MONOTONIC ns."""
        if self.kind == "rx":
            return self.records["ts_ns"] - self.real_minus_mono
        return self.records["start_ns"]


def parse_probe_bytes(data, origin="probe file"):
    if len(data) < HEADER.size:
        raise ProbeError(f"{origin}: {len(data)} bytes, shorter than the header")
    (magic, version, kind, rec_size, count, lost_full, lost_kernel, start_mono, start_real,
     stop_mono, stop_real, pa, pb, pc) = HEADER.unpack_from(data)
    if magic != b"AMBPROBE" or version not in (1, 2):
        raise ProbeError(f"{origin}: not an amber probe file (magic {magic!r}, version {version})")
    name = KINDS.get(kind)
    dtype = TIMED_DTYPE
    if name == "rx":
        dtype = RX_DTYPE if version >= 2 else RX_DTYPE_V1
    if name is None or rec_size != dtype.itemsize:
        raise ProbeError(f"{origin}: unknown kind {kind} or record size {rec_size}")
    if len(data) != HEADER.size + count * rec_size:
        raise ProbeError(f"{origin}: {len(data)} bytes for {count} records (truncated?)")
    records = np.frombuffer(data, dtype=dtype, count=count, offset=HEADER.size)
    params = {"rx": ("port", "ifindex", "capture_flags"),  # bit 0 GRO off, bit 1 tx recorded
              "timer": ("sleep_ns", "fifo", "unused"),
              "cpu": ("iterations", "calibrated_ns", "unused")}[name]
    header = {"version": version, "count": count, "lost_full": lost_full, "lost_kernel": lost_kernel,
              "start_mono_ns": start_mono, "start_real_ns": start_real,
              "stop_mono_ns": stop_mono, "stop_real_ns": stop_real}
    header.update(dict(zip(params, (pa, pb, pc))))
    return ProbeFile(name, header, records)


def read_probe_file(path):
    with open(path, "rb") as f:
        return parse_probe_bytes(f.read(), path)


def read_probe_dir(path):
    """{kind: ProbeFile} for every <kind>.bin in `path`."""
    out = {}
    for kind in KINDS.values():
        p = os.path.join(path, f"{kind}.bin")
        if os.path.exists(p):
            out[kind] = read_probe_file(p)
    return out


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(name):
    """Switches the calling thread into network namespace `name` (ip netns,
    /run/netns/NAME) and back to its own; None stays where it is. A socket
    created inside keeps that namespace."""
    if not name:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(f):
        if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {f.name}: {os.strerror(ctypes.get_errno())}")

    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as there:
        setns(there)
        try:
            yield
        finally:
            setns(home)


class GuestProbe:
    """Talks to one VM's probe daemon through its management port; with
    `netns`, a port forwarded inside that network namespace (a VM whose
    QEMU runs there)."""

    def __init__(self, mgmt_port, run_dir=None, host="127.0.0.1", timeout=10.0, netns=None):
        self.port = mgmt_port
        self.run_dir = run_dir
        self.host = host
        self.timeout = timeout
        self.netns = netns
        self._seq = 0

    # ---- control (TCP) ----

    def _connect(self, timeout):
        with in_netns(self.netns):
            s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.settimeout(timeout)
        return s

    @staticmethod
    def _read_line(s):
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1)
            if not chunk:
                raise ProbeError(f"probe closed the connection after {buf!r}")
            buf += chunk
        return buf.decode().strip()

    def command(self, line, timeout=None):
        """Sends one command line; returns the reply after "ok"."""
        with self._connect(timeout or self.timeout) as s:
            s.sendall(line.encode() + b"\n")
            reply = self._read_line(s)
        if not reply.startswith("ok"):
            raise ProbeError(f"probe on port {self.port}: {line!r} -> {reply}")
        return reply[2:].strip()

    def wait_ready(self, timeout=60.0):
        """Waits until the daemon answers; after `timeout` / 2 with a run_dir,
        starts it through the serial console (an init without amber.mgmt)."""
        deadline = time.monotonic() + timeout
        typed = False
        last = None
        while time.monotonic() < deadline:
            try:
                return self.command("status", timeout=2)
            except (OSError, ProbeError) as e:
                last = e
            if not typed and self.run_dir and time.monotonic() > deadline - timeout / 2:
                console_command(self.run_dir, "probe serve port=7700 dir=/tmp/probe "
                                "> /tmp/probe.log 2>&1 &")
                typed = True
            time.sleep(0.2)
        raise ProbeError(f"no probe daemon on 127.0.0.1:{self.port} within {timeout}s ({last})")

    def start(self, measurements, **options):
        words = list(measurements) + [f"{k}={v}" for k, v in options.items()]
        reply = self.command("start " + " ".join(words), timeout=30)  # cpu calibration
        return _key_values(reply)

    def stop(self):
        return {k: int(v) for k, v in _key_values(self.command("stop", timeout=60)).items()}

    def status(self):
        return _key_values(self.command("status"))

    def get(self, name):
        """The bytes of a probe file (rx, timer, cpu) or of any regular file
        of the guest (an absolute path); None if there is none."""
        with self._connect(self.timeout) as s:
            s.sendall(f"get {name}\n".encode())
            reply = self._read_line(s)
            if reply.startswith("error"):
                return None
            size = int(reply.split()[1])
            data = bytearray()
            while len(data) < size:
                chunk = s.recv(min(1 << 20, size - len(data)))
                if not chunk:
                    raise ProbeError(f"{name}: connection closed at {len(data)}/{size} bytes")
                data += chunk
        return bytes(data)

    def fetch(self, dest_dir, kinds=("rx", "timer", "cpu")):
        """Copies the files of the last stopped run into dest_dir; returns
        their paths (a kind that was not measured is skipped)."""
        os.makedirs(dest_dir, exist_ok=True)
        paths = []
        for kind in kinds:
            data = self.get(kind)
            if data is None:
                continue
            parse_probe_bytes(data, kind)  # refuse to keep a damaged file
            paths.append(_write_atomic(os.path.join(dest_dir, f"{kind}.bin"), data))
        return paths

    def fetch_file(self, guest_path, host_path):
        data = self.get(guest_path)
        if data is None:
            raise ProbeError(f"the guest has no file {guest_path}")
        return _write_atomic(host_path, data)

    # ---- clock (UDP) ----

    def clock_samples(self, n=50, timeout=0.5):
        """n request/reply exchanges: [(t_send, t_recv, guest_mono, guest_real)]."""
        out = []
        with in_netns(self.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(timeout)
            s.connect((self.host, self.port))
            for _ in range(n):
                self._seq += 1
                token = time.time_ns()
                t0 = time.time_ns()
                s.send(struct.pack("<IIQ", CLOCK_MAGIC, self._seq, token))
                try:
                    while True:
                        rep = s.recv(64)
                        t1 = time.time_ns()
                        if len(rep) >= 32:
                            magic, seq, tok, mono, real = struct.unpack_from("<IIQqq", rep)
                            if magic == CLOCK_MAGIC and seq == self._seq and tok == token:
                                out.append((t0, t1, mono, real))
                                break
                except socket.timeout:
                    continue
                time.sleep(0.002)
        return out

    def clock_anchor(self, n=50):
        """The minimum-round-trip sample: {"host_ns" (midpoint, CLOCK_REALTIME),
        "guest_ns" (CLOCK_MONOTONIC), "guest_real_ns", "rtt_ns", "samples"}.
        Its error is at most rtt_ns / 2."""
        samples = self.clock_samples(n)
        if not samples:
            raise ProbeError(f"no clock reply from 127.0.0.1:{self.port} (udp)")
        t0, t1, mono, real = min(samples, key=lambda x: x[1] - x[0])
        return {"host_ns": (t0 + t1) // 2, "guest_ns": mono, "guest_real_ns": real,
                "rtt_ns": t1 - t0, "samples": len(samples)}


def _write_atomic(path, data):
    with open(path + ".part", "wb") as f:
        f.write(data)
    os.replace(path + ".part", path)
    return path


def _key_values(reply):
    out = {}
    for w in reply.split():
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
    return out


def console_command(run_dir, command, settle=0.5):
    """Types one command on the VM's serial console (<run_dir>/serial.sock),
    slowly (the UART takes characters one at a time), without waiting for
    output. QEMU serves one console client at a time: this connects only
    for the command."""
    path = os.path.join(run_dir, "serial.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        line = (command + "\n").encode()
        for i in range(0, len(line), 8):
            s.sendall(line[i:i + 8])
            time.sleep(0.005)
        end = time.monotonic() + settle
        s.setblocking(False)
        while time.monotonic() < end:  # keep draining: unread output stalls the guest
            try:
                if not s.recv(65536):
                    break
            except BlockingIOError:
                time.sleep(0.02)


class ClockMap:
    """Host instant (CLOCK_REALTIME ns) -> guest CLOCK_MONOTONIC ns for one VM.

    guest = anchor_guest + ((host - anchor_host) - pauses between them) * rate

    with the latest anchor at or before `host` (the first one for earlier
    instants), pauses the (stop_ns, resume_ns) host intervals during which
    the VM was stopped (inside one the guest clock stands still), and rate 1
    unless fit_rate() estimated it from anchors with no pause between them
    (a guest clock calibrated a little off the host's). With anchors only
    before and after the experiment this is the plain formula; anchors
    taken between checkpoints (while the VM runs) absorb any error of the
    recorded pauses."""

    def __init__(self, anchors, pauses=(), max_rtt_ns=None):
        """Anchors whose round trip exceeds max_rtt_ns (error bound rtt/2)
        are left out, but never the first one."""
        if not anchors:
            raise ValueError("ClockMap needs at least one anchor")
        ordered = sorted(anchors, key=lambda a: a["host_ns"])
        self.anchors = [a for i, a in enumerate(ordered)
                        if i == 0 or max_rtt_ns is None or a.get("rtt_ns", 0) <= max_rtt_ns]
        self.dropped_anchors = len(ordered) - len(self.anchors)
        self.pauses = sorted((int(a), int(b)) for a, b in pauses if b > a)
        self.rate = 1.0

    def paused_between(self, h0, h1):
        """Host ns within [h0, h1] the VM spent stopped (negative if h1 < h0)."""
        if h1 < h0:
            return -self.paused_between(h1, h0)
        return sum(max(0, min(b, h1) - max(a, h0)) for a, b in self.pauses)

    def running_between(self, h0, h1):
        return (h1 - h0) - self.paused_between(h0, h1)

    def _anchor_for(self, host_ns):
        best = self.anchors[0]
        for a in self.anchors:
            if a["host_ns"] <= host_ns:
                best = a
        return best

    def to_guest(self, host_ns):
        a = self._anchor_for(host_ns)
        return a["guest_ns"] + self.running_between(a["host_ns"], host_ns) * self.rate

    def residuals(self):
        """For each anchor after the first: its guest time minus the
        prediction from the anchor before it (0 for the first)."""
        out = [0.0]
        for prev, a in zip(self.anchors, self.anchors[1:]):
            predicted = prev["guest_ns"] + self.running_between(prev["host_ns"], a["host_ns"]) * self.rate
            out.append(a["guest_ns"] - predicted)
        return out

    def pauses_between(self, h0, h1):
        return sum(1 for a, b in self.pauses if a < h1 and b > h0)

    def fit_rate(self, min_span_ns=20_000_000_000):
        """Guest seconds per host second over the longest stretch between
        two anchors without a pause; kept at 1 without one of min_span_ns
        (over shorter spans the anchors' own error would dominate)."""
        best = None
        for i, a in enumerate(self.anchors):
            for b in self.anchors[i + 1:]:
                if self.pauses_between(a["host_ns"], b["host_ns"]):
                    break
                span = b["host_ns"] - a["host_ns"]
                if span >= min_span_ns and (best is None or span > best[0]):
                    best = (span, (b["guest_ns"] - a["guest_ns"]) / span)
        if best:
            self.rate = best[1]
        return self.rate


def _main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "dump":
        for path in argv[2:]:
            f = read_probe_file(path)
            summary = dict(f.header, kind=f.kind)
            if len(f.records):
                if f.kind == "rx":
                    t = f.records["ts_ns"]
                    data = f.records[f.records["payload"] > 0]
                    summary.update(span_s=(t[-1] - t[0]) / 1e9, data_segments=len(data),
                                   payload_bytes=int(data["payload"].sum()),
                                   max_gap_us=float(np.diff(t).max() / 1e3) if len(t) > 1 else 0)
                else:
                    d = f.records["duration_ns"]
                    summary.update(median_us=float(np.median(d) / 1e3), max_us=float(d.max() / 1e3))
            print(json.dumps({path: summary}, indent=1))
        return 0
    if len(argv) < 3:
        print(__doc__)
        return 2
    probe = GuestProbe(int(argv[2]))
    if cmd == "clock":
        n = int(argv[argv.index("--samples") + 1]) if "--samples" in argv else 50
        print(json.dumps(probe.clock_anchor(n)))
    elif cmd == "start":
        kinds = [w for w in argv[3:] if "=" not in w]
        opts = dict(w.split("=", 1) for w in argv[3:] if "=" in w)
        print(json.dumps(probe.start(kinds, **opts)))
    elif cmd == "stop":
        result = probe.stop()
        if "--fetch" in argv:
            result["files"] = probe.fetch(argv[argv.index("--fetch") + 1])
        print(json.dumps(result))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
