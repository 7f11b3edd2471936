"""amber's transparency evaluation (issue #8), through the real system: two
QEMU VMs on vhost-user ports of one DPDK delay node emulating a long fat
link, the VM-host agent, the controller, a ptp4l pair (free-running slave)
and the guest probes measuring inside both VMs by the guests' own clocks.

Runs of one iperf3 transfer (vm1 -> vm2), each `--duration` s:
  baseline   nothing happens (two of them: the run-to-run spread)
  amber      a synchronized checkpoint every `--interval` s with resume
             (amberctl checkpoint: VMs and delay-node queues together)
  naive      the same, but the delay node keeps running: the VMs are
             stopped, saved and resumed at the same instants (--naive)
  sham       the host work of a checkpoint at the same instants without
             stopping anything: the agents asked for their status, the
             node's counters read, and as many bytes as amber's last
             checkpoint written to the store, fsync'ed and digested, then
             removed (what host activity alone does to the experiment)
then a restore of the amber run's checkpoint `--restore` (amberctl
restore): the VMs, their iperf3 and the frames in flight come back, and the
transfer continues from there to its end (run "restore").

It writes an evaluation folder (bench/transparency/README.md) and the
report (report.py): report.md, plots/*.png, eval.sqlite, the raw data.

usage: scripts/amber-py transparency.evaluate BUILD_DIR EVAL_DIR
         [--rate 100Mbit] [--delay 20ms] [--loss 0] [--duration 60] [--interval 5]
         [--runs baseline,amber,naive,baseline] [--restore 3] [--quiet]
(root; about duration + 25 s per run, plus ~1 min to boot and restore)"""

import argparse
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import amberlab
from amberlab import lab
from amberlab.experiment import Experiment, TestbedExperiment
from amberlab.transparency import guest, threads, vm_rings

SENDER, RECEIVER = "vm1", "vm2"
# Both guests record the iperf3 connection's segments both ways (rx, with
# tx=1): data segments out and ACKs in at the sender, the reverse at the
# receiver (one-way delay and RTT per segment, packets.py). The CPU work
# unit (--cpu-probe) keeps the sender's vCPU busy all the time, which on a
# 2-core host takes a third of the machine: off by default.
PROBES = {SENDER: ["rx", "timer"], RECEIVER: ["rx", "timer"]}
# By default 4 MB TCP windows: 8x the bandwidth-delay product of 100 Mbit/s
# x 40 ms and below the delay node's queue (10,000 frames, 15 MB): TCP's own
# congestion does not overflow it, so every drop is one a checkpoint caused.
# A high-BDP link needs both raised (--tcp-window, --queue-frames).
DONE = "IPERF-DONE"


def say(text, quiet=False):
    if not quiet:
        print(f"[eval] {text}", file=sys.stderr, flush=True)


# The guest kernel's counters each run keeps from before and after it.
TCP_COUNTERS = "/proc/net/snmp /proc/net/netstat /proc/net/dev"


def wait_line(stream, text, timeout):
    """Reads `stream` (a pipe) line by line until one holds `text`; that
    line, or None at its end or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        line = stream.readline()
        if not line:
            return None
        if text in line:
            return line
    return None


def link_stats(ns, dev):
    """The kernel's counters of interface `dev` (in namespace `ns`, or the
    root one for None): `ip -s -j`'s stats64, or None if it is gone."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-s", "-j", "link", "show", dev]
    try:
        return json.loads(lab.sh(*cmd, check=False).stdout)[0]["stats64"]
    except (ValueError, KeyError, IndexError):
        return None


class Evaluation:
    def __init__(self, args):
        self.a = args
        self.timeline = []
        self.exp = None
        self.probes = {}
        self.manifests = {}  # run -> [manifest]
        self.manifests_by_id = {}
        self.restored_id = None
        self.sham_bytes = None

    # ---- setting up ----

    def start(self):
        a = self.a
        loss = "" if a.loss in ("0", "0%") else f' random_loss {{ probability: "{a.loss}" }}'
        link = f'rate: "{a.rate}" delay: "{a.delay}" queue_frames: {a.queue_frames}{loss}'
        topology = getattr(a, "topology", "vhost")
        jumbo = f", MTU {a.mtu}" if a.mtu != 1500 else ""
        say(f"starting: delay node ({a.rate}, {a.delay} one way{jumbo}), ptp4l pair, two VMs "
            f"({'each on a tap in a host namespace of its own, the node on ' + a.pmd if topology == 'testbed' else 'on the node’s vhost-user ports'}), "
            "VM-host agent(s), controller", a.quiet)
        common = dict(link=link, mgmt=True, vm_mib=a.vm_mib,
                      append=("", "amber.workload=iperf3-server"),
                      topology_extra=topology_extra(a), align_network=align_network(a),
                      delaynode_app=("--vhost-priority", str(getattr(a, "vhost_priority", 10)),
                                     "--worker-priority", str(getattr(a, "worker_priority", 0)),
                                     "--worker-nice", str(getattr(a, "worker_nice", 0)),
                                     "--idle-wait", getattr(a, "node_idle_wait", "timer"),
                                     "--agent-priority",
                                     str(getattr(a, "node_agent_priority", 0))),
                      vmhost_extra=vmhost_lines(a), mtu=a.mtu,
                      qemu_trace=[t for t in (getattr(a, "qemu_trace", None) or "").split(",") if t])
        if topology == "testbed":
            self.exp = TestbedExperiment(a.build, prefix="amb-evt", pmd=a.pmd,
                                         tap_txqueuelen=a.tap_txqueuelen,
                                         rx_queue_size=getattr(a, "rx_queue_size", None),
                                         **common)
        else:
            self.exp = Experiment(a.build, prefix="amb-eval", **common)
        e = self.exp
        e.wait_guests_ready()
        window = int(a.tcp_window * 2**20)
        buffers = f"4096 131072 {window}"
        for vm, port in e.mgmt_port.items():
            self.probes[vm] = guest.GuestProbe(port, run_dir=os.path.join(e.run_dir, vm),
                                               netns=e.probe_netns(vm))
            self.probes[vm].wait_ready(60)
            # No TCP metrics kept per destination: each run's connection
            # starts as the first did, not with the ssthresh and RTT the
            # previous run's connection left in the guest's cache.
            e.console(vm).run(f'echo "{buffers}" > /proc/sys/net/ipv4/tcp_rmem; '
                              f'echo "{buffers}" > /proc/sys/net/ipv4/tcp_wmem; '
                              f'echo 1 > /proc/sys/net/ipv4/tcp_no_metrics_save')
        # The server logs to a file the report folder keeps.
        e.console(RECEIVER).run("killall iperf3; iperf3 -s -D --logfile /tmp/iperf3-server.log")
        peer = e.ADDR[1]
        e.console(SENDER).run(f"i=0; until ping -c 1 -W 1 {peer} > /dev/null; do i=$((i+1)); "
                              f"[ $i -ge 30 ] && break; done", timeout=60)
        # TCG translates the guests' TCP paths on first use: the first
        # transfer after boot stalls for seconds. Warm up before any run.
        e.console(SENDER).run(f"iperf3 -c {peer} -t 3 > /dev/null 2>&1", timeout=90)

    def close(self):
        self.stop_captures()
        if self.exp:
            self.exp.close()

    # ---- measuring ----

    def event(self, run, kind, host_ns, **detail):
        self.timeline.append(dict(run=run, kind=kind, host_ns=host_ns, **detail))

    def tap_drops(self, path):
        """Frames each VM's tap dropped (testbed topology: a stopped VM does
        not read its tap, which holds txqueuelen frames), from path_drops()'s
        `path`; {} elsewhere."""
        net = getattr(self.exp, "net", None)
        if net is None:
            return {}
        return {vm: path[f"{net.tap[i]} tx"] for i, vm in enumerate(self.exp.VMS)
                if f"{net.tap[i]} tx" in path}

    def start_captures(self, run_dir):
        """--capture-taps (testbed topology): tcpdump on each VM's tap in
        its host namespace, the iperf3 connection's headers with nanosecond
        stamps (runs/<run>/taps/<vm>.pcap): when each segment passed the
        tap, for transparency.paths to split a segment's one-way delay into
        sender, network and receiver legs. Returns once each listens."""
        self.captures = {}
        net = getattr(self.exp, "net", None)
        if not getattr(self.a, "capture_taps", False) or net is None:
            return
        os.makedirs(os.path.join(run_dir, "taps"), exist_ok=True)
        for i, vm in enumerate(self.exp.VMS):
            path = os.path.join(run_dir, "taps", f"{vm}.pcap")
            self.captures[vm] = subprocess.Popen(
                ["ip", "netns", "exec", net.ns[i], "tcpdump", "-i", net.tap[i], "-n", "-s", "96",
                 "-B", "16384", "--time-stamp-precision=nano", "-w", path, "tcp port 5201"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for vm, p in self.captures.items():
            line = wait_line(p.stderr, "listening on", 10)
            if line is None:
                raise RuntimeError(f"tcpdump on {vm}'s tap did not start")

    def stop_captures(self):
        """Stops the tap captures; {vm: frames tcpdump says the kernel
        dropped} (a capture that fell behind misses segments, nothing more)."""
        out = {}
        for vm, p in getattr(self, "captures", {}).items():
            p.send_signal(signal.SIGINT)
            try:
                _, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            m = re.search(r"(\d+) packets dropped by kernel", err or "")
            out[vm] = int(m.group(1)) if m else None
        self.captures = {}
        return out

    def path_drops(self):
        """Every drop the kernel counted on the testbed's interfaces (rx and
        tx of the node's veth ends, the hosts' veth ends, bridges and taps):
        {"iface rx|tx": n}; {} elsewhere. A frame lost between the node and
        a guest shows here even where the tap's tx is not the place."""
        net = getattr(self.exp, "net", None)
        if net is None:
            return {}
        out = {}
        places = [(None, dev) for dev in net.node_if]
        for i, ns in enumerate(net.ns):
            places += [(ns, net.ns_if[i]), (ns, net.bridge[i]), (ns, net.tap[i])]
        for ns, dev in places:
            stats = link_stats(ns, dev)
            for way in ("rx", "tx") if stats else ():
                out[f"{dev} {way}"] = int(stats[way].get("dropped", 0))
        return out

    def node_counters(self):
        st = self.exp.node_stats()
        dropped = {}
        for p in st["pipes"]:
            for cause, n in p["dropped"].items():
                dropped[cause] = dropped.get(cause, 0) + int(n)
        for port in st.get("ports", []):
            for k in ("rx_missed", "rx_no_mbuf", "tx_errors"):
                dropped[f"port_{k}"] = dropped.get(f"port_{k}", 0) + int(port.get(k, 0))
        # Tx bursts that left 1 ms or more after their departure (the
        # node's last two lateness buckets, PipeStats.tx_bursts_by_lateness):
        # the node itself, starved of its CPU, delivering late.
        late = sum(sum(int(n) for n in p.get("tx_bursts_by_lateness", [])[LATE_1MS_BUCKET:])
                   for p in st["pipes"])
        return {"frames_in": sum(int(p["frames_in"]) for p in st["pipes"]),
                "frames_out": sum(int(p["frames_out"]) for p in st["pipes"]),
                "late_bursts_1ms": late, "dropped": dropped}

    @staticmethod
    def delta(before, after):
        return {"frames_in": after["frames_in"] - before["frames_in"],
                "frames_out": after["frames_out"] - before["frames_out"],
                "late_bursts_1ms": after.get("late_bursts_1ms", 0) - before.get("late_bursts_1ms", 0),
                "dropped": {k: v - before["dropped"].get(k, 0) for k, v in after["dropped"].items()}}

    def probe_kinds(self):
        kinds = {vm: list(k) for vm, k in PROBES.items()}
        if getattr(self.a, "cpu_probe", False):
            kinds[SENDER].append("cpu")
        return kinds

    def rx_records(self):
        """Room for every segment of a run both ways, with a margin: data at
        the link rate in full frames plus an ACK per segment, over the run
        and the pauses (each record costs the guest 24 bytes of RAM, saved
        in every checkpoint: no more than needed)."""
        frames_per_s = lab_rate_bps(self.a.rate) / (1514 * 8)
        seconds = self.a.duration + 30
        return int(max(100_000, 2 * frames_per_s * seconds * 1.2))

    def sham(self, run, k, at_ns):
        """The host work of a checkpoint at `at_ns` without stopping anything:
        the agents' status, the node's counters, then a write of the bytes
        amber's last checkpoint took (fsync'ed, SHA-256 digested, removed)."""
        time.sleep(max(0, (at_ns - time.time_ns()) / 1e9))
        t0 = time.time_ns()
        self.exp.ctl("status")
        self.node_counters()
        size = self.sham_bytes or 200 * 10**6
        path = os.path.join(self.exp.store, f"sham-{run}-{k}.bin")
        block = os.urandom(1 << 20)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
                digest.update(block)
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        t1 = time.time_ns()
        c = {"id": k, "checkpoint": f"sham-{k}", "freeze_ns": at_ns, "resume_ns": at_ns, "vms": {},
             "steps": [{"name": "sham host work", "duration_ns": t1 - t0, "lateness_ns": t0 - at_ns}],
             "bytes": size, "restore": False, "sham": True}
        self.event(run, "sham", at_ns, id=k, bytes=size, work_ms=(t1 - t0) / 1e6)
        return c

    def add_clock_steps(self, checkpoints):
        """Each VM's guest clock stop and start per checkpoint, from QEMU's
        trace lines in its qemu.log (vm-checkpoint turns them on): the stop
        command taken by the main loop, and the run state changing to
        running. More exact than the STOP/RESUME events, which come after
        the vCPUs and back ends stopped (the report's pause mapping and
        per-checkpoint table use them)."""
        for vm in ("vm1", "vm2"):
            log = os.path.join(os.path.dirname(self.exp.console(vm).log), "qemu.log")
            steps = qemu_clock_steps(log)
            for c in checkpoints:
                v = c.get("vms", {}).get(vm)
                if v is None:
                    continue
                stop = next((t for t, running in steps
                             if not running and c["freeze_ns"] - 10**8 <= t <= c["resume_ns"]), None)
                start = next((t for t, running in steps
                              if running and stop and stop < t <= c["resume_ns"] + 10**9), None)
                if stop and start:
                    v["clock_stop_ns"], v["clock_start_ns"] = stop, start

    def qemu_threads(self):
        """{vm: {"pid": QEMU's pid (its main loop's thread), "threads":
        {tid: name}}}: for a scheduler trace (transparency.schedtrace)."""
        out = {}
        for vm in self.exp.VMS:
            try:
                with open(os.path.join(self.exp.vm_dir(vm), "qemu.pid")) as f:
                    pid = int(f.read().strip())
                threads = {}
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        threads[tid] = f.read().strip()
                out[vm] = {"pid": pid, "threads": threads}
            except (OSError, ValueError):
                pass
        return out

    def keep_qemu_logs(self, run_dir):
        """Each VM's qemu.log as runs/<run>/<vm>-qemu.log: when QEMU's main
        loop took each command and the run state changed (and any trace
        events a diagnosis turned on), to the microsecond in host time."""
        for vm in self.exp.VMS:
            log = os.path.join(os.path.dirname(self.exp.console(vm).log), "qemu.log")
            try:
                shutil.copyfile(log, os.path.join(run_dir, f"{vm}-qemu.log"))
            except OSError:
                pass

    def export_held(self, run_dir, checkpoints):
        """The frames each checkpoint's node image held, as pcaps (held/<id>/):
        the report finds each instant by packet identity from them."""
        for c in checkpoints:
            m = self.manifests_by_id.get(c.get("checkpoint"))
            if not m:
                continue
            for piece in m.get("pieces", []):
                if piece.get("kind") != "delay node":
                    continue
                for f in piece.get("files", []):
                    img = os.path.join(self.exp.store, "e2e", m["id"], f["path"])
                    out = os.path.join(run_dir, "held", str(c["id"]))
                    os.makedirs(out, exist_ok=True)
                    lab.sh(os.path.join(self.a.build, "core-checkpoint", "amber-image"), "pcap",
                           img, out, check=False)
                    # The image too (a few MB): departure times, the pipes' state.
                    lab.sh("cp", img, os.path.join(out, os.path.basename(img)), check=False)

    def pids(self):
        """The experiment's processes for the thread sampler (threads.py)."""
        e = self.exp
        out = {"evaluate": os.getpid()}
        for label, p in (("node", e.node), ("controller", e.controller)):
            if p and p.running():
                out[label] = p.proc.pid
        for i, p in enumerate(getattr(e, "vmhosts", None) or [e.vmhost]):
            if p and p.running():
                out[f"vmhost{i + 1}"] = p.proc.pid
        for vm in ("vm1", "vm2"):
            try:
                with open(os.path.join(os.path.dirname(e.console(vm).log), "qemu.pid")) as f:
                    out[vm] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return out

    def anchors(self, n=50):
        return {vm: self.probes[vm].clock_anchor(n) for vm in self.probes}

    def checkpoint(self, run, kind, k, at_ns):
        args = ["checkpoint", "--at", str(at_ns), "--label", f"{run} #{k}"]
        if kind == "naive":
            args.append("--naive")
        if kind == "pause":
            # amber's stop and resume without the save between them, as long
            # as amber's last pause: what the save itself leaves behind.
            args = ["pause", "--at", str(at_ns), "--label", f"{run} #{k}",
                    "--for", f"{getattr(self, 'amber_pause_ms', 1000):.0f}ms"]
        m = self.exp.ctl(*args)
        vms = {}
        for step in m["steps"]:
            if step["agent"].startswith("vm host"):
                events = {vm: int(ns) for vm, ns in step.get("vm_event_ns", {}).items()}
                for vm, ns in events.items():
                    vms.setdefault(vm, {})["stop_ns" if step["step"] == "freeze" else "resume_ns"] = ns
        if getattr(self.a, "topology", "vhost") == "vhost":
            # (Only vhost-user ports have rings: elsewhere the wait for
            # them would parse the node's log for seconds right after the
            # resume, CPU the guests need then.)
            self.add_rings(vms, int(m["freeze_ns"]), int(m["resume_ns"]))
        c = {"id": k, "checkpoint": m["id"], "freeze_ns": int(m["freeze_ns"]),
             "resume_ns": int(m["resume_ns"]), "vms": vms,
             "steps": [{"name": f"{s['step']} {s['agent']}", "duration_ns": int(s.get("duration_ns", 0)),
                        "lateness_ns": int(s.get("lateness_ns", 0))} for s in m["steps"]],
             "bytes": int(m["total_bytes"]), "restore": False}
        self.event(run, "checkpoint", c["freeze_ns"], id=k, checkpoint=m["id"],
                   resume_ns=c["resume_ns"], naive=kind == "naive")
        return c, m

    def add_rings(self, vms, freeze_ns, resume_ns, timeout=3):
        """Each VM's vhost-user rings going down (from a second before the
        freeze) and up again after the resume, from the node's link log:
        rings_down_ns / rings_up_ns in vms[vm]."""
        def changes():
            return vm_rings.ring_changes(self.exp.node.log_path)
        deadline = time.monotonic() + timeout
        while True:
            seen = changes()
            ups = {vm: vm_rings.first(seen, vm, "up", resume_ns - 10**8, resume_ns + 10**10)
                   for vm in vms}
            if all(ups.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for vm, v in vms.items():
            down = vm_rings.first(seen, vm, "down", freeze_ns - 10**9, resume_ns)
            if down is not None:
                v["rings_down_ns"] = down
            if ups[vm] is not None:
                v["rings_up_ns"] = ups[vm]

    def run(self, name):
        """One iperf3 transfer with the checkpoints its kind asks for."""
        a = self.a
        kind = name.split("-")[0]
        run_dir = os.path.join(a.eval_dir, "runs", name)
        os.makedirs(run_dir, exist_ok=True)
        for vm, probes in self.probe_kinds().items():
            self.probes[vm].start(probes, port=5201, rx_max=self.rx_records())
        self.start_captures(run_dir)
        # Off unless asked: reading every thread's schedstat each 20 ms
        # costs about a tenth of a core, which the guests then miss.
        self.sampler = (threads.ThreadSampler(self.pids).start()
                        if getattr(a, "sample_threads", False) else None)
        for vm in self.probes:  # the TCP counters before: finish() keeps both
            self.exp.console(vm).run(f"cat {TCP_COUNTERS} > /tmp/tcp-counters-before.txt")
        time.sleep(1)
        anchors = {vm: [x] for vm, x in self.anchors().items()}
        before = self.node_counters()
        self.path_before = self.path_drops()
        console = self.exp.console(SENDER)
        start = console.size()
        iperf_start = time.time_ns()
        self.event(name, "iperf_start", iperf_start)
        console.send(f"iperf3 -c {self.exp.ADDR[1]} -t {a.duration} -i 0.5 -J > /tmp/iperf3.json "
                     f"2>&1; echo IPERF-$((1))-DONE")
        checkpoints, paused, k = [], 0, 1
        if kind == "sham":
            while k * a.interval < a.duration - a.interval / 2:
                at = max(iperf_start + int(k * a.interval * 1e9), time.time_ns() + 200_000_000)
                checkpoints.append(self.sham(name, k, at))
                time.sleep(max(0, (at + 1_200_000_000 - time.time_ns()) / 1e9))
                for vm, x in self.anchors(40).items():
                    anchors[vm].append(x)
                k += 1
        if kind in ("amber", "naive", "pause"):
            while k * a.interval < a.duration - a.interval / 2:
                at = iperf_start + int(k * a.interval * 1e9) + paused
                # A loaded machine may leave too little time before the
                # planned instant: then the checkpoint comes a little later
                # (its real instant is what the report uses).
                at = max(at, time.time_ns() + 1_600_000_000)
                time.sleep(max(0, (at - time.time_ns()) / 1e9 - 1.5))
                counters = self.node_counters()
                c, m = self.checkpoint(name, kind, k, at)
                self.manifests.setdefault(name, []).append(m)
                if m["id"]:
                    self.manifests_by_id[m["id"]] = m
                if kind == "amber":
                    self.sham_bytes = int(m["total_bytes"])
                    self.amber_pause_ms = (c["resume_ns"] - c["freeze_ns"]) / 1e6
                paused += c["resume_ns"] - c["freeze_ns"]
                checkpoints.append(c)
                # An anchor while both VMs run again, away from the windows
                # around checkpoints: it absorbs errors of the recorded pause.
                time.sleep(max(0, (c["resume_ns"] + 1_200_000_000 - time.time_ns()) / 1e9))
                for vm, x in self.anchors(40).items():
                    anchors[vm].append(x)
                around = self.delta(counters, self.node_counters())
                # The loss model's own drops are the link's, checkpoint or
                # not (amber replays its state exactly): counted apart.
                c["delaynode_dropped_around"] = sum(
                    n for cause, n in around["dropped"].items() if cause not in LINK_IMPAIRMENTS)
                c["delaynode_lost_around"] = around["dropped"].get("loss", 0)
                c["delaynode_late_bursts_around"] = around["late_bursts_1ms"]
                say(f"  {name}: checkpoint {k} ({m['id']}): paused "
                    f"{(c['resume_ns'] - c['freeze_ns']) / 1e6:.0f} ms, saved "
                    f"{int(m['total_bytes']) / 1e6:.0f} MB, node bursts >= 1 ms late around it: "
                    f"{around['late_bursts_1ms']}", a.quiet)
                k += 1
        console.wait_for("IPERF-1-DONE", a.duration + 90 + paused / 1e9, start)
        return self.finish(name, kind, run_dir, iperf_start, checkpoints, anchors, before)

    def finish(self, name, kind, run_dir, iperf_start, checkpoints, anchors, before):
        iperf_end = time.time_ns()
        self.event(name, "iperf_end", iperf_end)
        if getattr(self, "sampler", None):
            self.sampler.stop()
            self.sampler.save(os.path.join(run_dir, "threads.json"))
            self.sampler = None
        after = self.node_counters()
        capture_drops = self.stop_captures()
        for vm, x in self.anchors().items():
            anchors[vm].append(x)
        for vm in self.probes:
            self.probes[vm].stop()
            self.probes[vm].fetch(os.path.join(run_dir, "probe", vm))
        self.probes[SENDER].fetch_file("/tmp/iperf3.json", os.path.join(run_dir, "iperf3.json"))
        self.probes[RECEIVER].fetch_file("/tmp/iperf3-server.log",
                                         os.path.join(run_dir, "iperf3-server.log"))
        for vm in self.probes:
            # The guests' TCP counters (retransmits by kind: loss probe,
            # timeout, fast retransmit), copied in the guest and fetched
            # over the probe's TCP (the serial console garbles long lines),
            # and the kernel's last words and processes from the console.
            console = self.exp.console(vm)
            console.run(f"cat {TCP_COUNTERS} > /tmp/tcp-counters.txt")
            self.probes[vm].fetch_file("/tmp/tcp-counters.txt",
                                       os.path.join(run_dir, f"{vm}-tcp-counters.txt"))
            try:  # a run that did not start its guests here may lack it
                self.probes[vm].fetch_file("/tmp/tcp-counters-before.txt",
                                           os.path.join(run_dir, f"{vm}-tcp-counters-before.txt"))
            except guest.ProbeError:
                pass
            with open(os.path.join(run_dir, f"{vm}-console.txt"), "w") as f:
                f.write(console.run("dmesg | tail -20; ps"))
        if kind in ("amber", "restore"):
            self.export_held(run_dir, checkpoints)
        self.add_clock_steps(checkpoints)
        self.keep_qemu_logs(run_dir)
        path_before = getattr(self, "path_before", {})
        path = {k: n - path_before.get(k, 0) for k, n in self.path_drops().items()}
        run = {"name": kind, "iperf_start_host_ns": iperf_start, "iperf_end_host_ns": iperf_end,
               "tap_dropped": self.tap_drops(path),
               "path_dropped": {k: n for k, n in path.items() if n},
               "tap_capture_dropped": capture_drops,
               "qemu_threads": self.qemu_threads(),
               "sender": SENDER, "receiver": RECEIVER, "probes": self.probe_kinds(),
               "sender_addr": self.exp.ADDR[0], "receiver_addr": self.exp.ADDR[1],
               "checkpoints": checkpoints, "delaynode": self.delta(before, after),
               "guest_clock": anchors}
        with open(os.path.join(run_dir, "run.json"), "w") as f:
            json.dump(run, f, indent=1)
        return run

    def restore(self, amber_name, amber, k):
        """Restores the amber run's checkpoint k: its transfer continues."""
        a = self.a
        ms = self.manifests.get(amber_name, [])
        if not 1 <= k <= len(ms):
            raise RuntimeError(f"--restore {k}: the amber run took {len(ms)} checkpoints")
        target = ms[k - 1]
        self.restored_id = target["id"]
        say(f"restoring {target['id']} (amber run, checkpoint {k}): the VMs, their iperf3 and "
            "the frames in flight come back", a.quiet)
        console = self.exp.console(SENDER)
        start = console.size()
        r = self.exp.ctl("restore", target["id"])
        resumed = int(r["resume_ns"])
        self.event("restore", "restore", resumed, checkpoint=target["id"], branch=r["branch"])
        before = self.node_counters()  # the image's counters: those of the checkpoint
        # The restored timeline: the amber run up to checkpoint k, whose
        # pause lasts until the restore resumed it.
        c = dict(amber["checkpoints"][k - 1])
        c["resume_ns"] = resumed
        c["restore"] = True
        vms = {}
        for step in r["steps"]:
            for vm, ns in step.get("vm_event_ns", {}).items():
                vms[vm] = {"stop_ns": c["vms"].get(vm, {}).get("stop_ns", c["freeze_ns"]),
                           "resume_ns": int(ns)}
        self.add_rings(vms, c["freeze_ns"], resumed)
        c["vms"] = vms
        checkpoints = [dict(x) for x in amber["checkpoints"][:k - 1]] + [c]
        anchors = {vm: [x for x in amber["guest_clock"][vm] if x["host_ns"] < c["freeze_ns"]]
                   for vm in amber["guest_clock"]}
        time.sleep(1.2)
        for vm, x in self.anchors(40).items():
            anchors[vm].append(x)
        run_dir = os.path.join(a.eval_dir, "runs", "restore")
        os.makedirs(run_dir, exist_ok=True)
        left = a.duration - k * a.interval
        console.wait_for("IPERF-1-DONE", left + 90, start)
        return self.finish("restore", "restore", run_dir, amber["iperf_start_host_ns"],
                           checkpoints, anchors, before)


def qemu_clock_steps(log):
    """[(host ns, running)] from a qemu.log with vm-checkpoint's trace lines:
    the run state going from running to paused (just before the guest
    clock stops) and to running (just after it starts); from a log of an
    older amber without runstate_set lines, the main loop taking the
    command before "vm_state_notify running 0" and that "running 1" line."""
    out, fallback, taken = [], [], None
    try:
        with open(log, errors="replace") as f:
            for line in f:
                at = line.find("@")
                colon = line.find(":", at)
                if at < 0 or colon < 0:
                    continue
                try:
                    sec, usec = line[at + 1:colon].split(".")
                    t = int(sec) * 10**9 + int(usec) * 1000
                except ValueError:
                    continue
                what = line[colon + 1:].rstrip()
                if what.startswith("runstate_set"):
                    if what.endswith("(running)"):
                        out.append((t, True))
                    elif what.endswith("(paused)") and "(running) new_state" in what:
                        out.append((t, False))
                elif what.startswith("monitor_qmp_cmd_in_band"):
                    taken = t
                elif what.startswith("vm_state_notify running 0") and taken:
                    fallback.append((taken, False))
                elif what.startswith("vm_state_notify running 1"):
                    fallback.append((t, True))
    except OSError:
        pass
    return out or fallback


# Run variants (--runs amber:lead,...): the VM-host agents' settings for
# that run (step_lead, realtime_boost, pause_alignment), whether the delay
# node aligns each direction to the VM it delivers to (the topology's
# attach) and whether those directions run on past the freeze until their
# VM stopped (Topology.run_on), to compare the mechanisms side by side in
# one evaluation. "shift" is amber's default.
VARIANTS = {"plain": ("off", False, "off", False, False),
            "align": ("off", False, "on", False, False),
            "lead": ("auto", False, "on", False, False),
            "leadboost": ("auto", True, "on", False, False),
            "boost": ("off", True, "on", False, False),
            "shift": ("auto", False, "on", True, False),
            "shiftboost": ("auto", True, "on", True, False),
            # A VM resumed later by its stop's lateness (pause_alignment)
            # would miss the frames its run-on direction sends from the
            # thaw: run-on takes the place of that alignment.
            "runon": ("auto", False, "off", True, True),
            # amber (shift) with each VM's RAM saved beside QEMU's stream
            # (the VM host's save_ram_file), not in it.
            "ramfile": ("auto", False, "on", True, False)}
RAM_FILE_VARIANTS = ("ramfile",)
TOPOLOGY_EXTRA = 'margin: "100ms"\n'
RUN_ON = "100ms"


def topology_extra(a, variant=None):
    """The topology's extra lines for the run: the margin, and run_on
    when the run (or the evaluation's --run-on) asks for it."""
    on = VARIANTS[variant][4] if variant else getattr(a, "run_on", "off") != "off"
    return TOPOLOGY_EXTRA + (f'run_on: "{RUN_ON}"\n' if on else "")


def vmhost_lines(a, variant=None):
    """The VM host's configuration lines the evaluation's options (or a run
    variant) ask for."""
    if variant:
        lead, boost, align = VARIANTS[variant][:3]
    else:
        lead, boost, align = (getattr(a, "step_lead", None), getattr(a, "realtime_boost", False),
                              getattr(a, "pause_alignment", None))
    lines = ""
    if lead:
        lines += f'step_lead: "{lead}"\n'
    if boost:
        lines += "realtime_boost: true\n"
    if align:
        lines += f'pause_alignment: "{align}"\n'
    if getattr(a, "agent_realtime", False):
        lines += "agent_realtime: true\n"
    if variant in RAM_FILE_VARIANTS or (not variant and getattr(a, "save_ram_file", False)):
        lines += "save_ram_file: true\n"
    return lines


def align_network(a, variant=None):
    """Whether the run's delay node aligns directions to VMs."""
    if variant:
        return VARIANTS[variant][3]
    return getattr(a, "align_network", "on") != "off"


def lab_rate_bps(text):
    """'100Mbit' -> 1e8 (the configuration's rate syntax, common/units)."""
    t = text.strip().lower().replace("/s", "").replace("bit", "").replace("bps", "")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1.0)
    return float(t.rstrip("kmg")) * scale


# PipeStats.tx_bursts_by_lateness counts bursts below 50 ns, 100 ns, 200 ns,
# 500 ns, 1 us, 2 us, 5 us, 10 us, 100 us, 1 ms, 10 ms and above: from this
# index on, 1 ms late or more.
LATE_1MS_BUCKET = 10
# Drop causes that are the emulated link's own behaviour (the configured
# loss model), not something a checkpoint did.
LINK_IMPAIRMENTS = ("loss",)

def machine(a=None):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "load_avg_at_start": os.getloadavg()[0], "accel": "tcg",
            "vm_memory_mib": getattr(a, "vm_mib", 256), "vcpus": 1}


def run_names(spec):
    """Run folder names of a --runs spec: kind[:variant], numbered when a
    name repeats (baseline-1, baseline-2), the variant after a dash
    (amber-lead)."""
    names, counts = [], {}
    kinds = [k.replace(":", "-") for k in spec.split(",")]
    for n in kinds:
        if n.split("-")[0] not in ("baseline", "amber", "naive", "sham", "pause"):
            raise ValueError(f"--runs: unknown run kind {n!r} (baseline, amber, naive, sham, pause)")
        if "-" in n and n.split("-", 1)[1] not in VARIANTS:
            raise ValueError(f"--runs: unknown variant in {n!r} ({', '.join(VARIANTS)})")
        counts[n] = counts.get(n, 0) + 1
        names.append(n if kinds.count(n) == 1 else f"{n}-{counts[n]}")
    return names


def run_variant(name):
    """The variant of a run folder name (amber-lead -> lead), or None."""
    parts = name.split("-")
    return parts[1] if len(parts) > 1 and parts[1] in VARIANTS else None


def with_defaults(a):
    """`a` with every option it lacks at its default (drivers such as the
    demo and the CI test give only what they change)."""
    for k, v in vars(parser().parse_args([a.build, a.eval_dir])).items():
        if not hasattr(a, k):
            setattr(a, k, v)
    return a


def evaluate(a, keep=None):
    """The whole evaluation; returns (params, runs) and leaves the folder.
    keep(evaluation, args), if given, runs before the experiment is torn
    down (to copy more of it into the folder)."""
    a = with_defaults(a)
    os.makedirs(os.path.join(a.eval_dir, "runs"), exist_ok=True)
    params = {"rate": a.rate, "rate_bps": lab_rate_bps(a.rate), "delay": a.delay, "loss": a.loss,
              "duration_s": a.duration,
              "interval_s": a.interval, "iperf_interval_s": 0.5, "restore_at": a.restore,
              "step_lead": getattr(a, "step_lead", None) or "auto",
              "realtime_boost": getattr(a, "realtime_boost", False),
              "agent_realtime": getattr(a, "agent_realtime", False),
              "save_ram_file": getattr(a, "save_ram_file", False),
              "pause_alignment": getattr(a, "pause_alignment", None) or "on",
              "align_network": "on" if align_network(a) else "off",
              "run_on": RUN_ON if getattr(a, "run_on", "off") != "off" else "off",
              "worker_priority": getattr(a, "worker_priority", 0),
              "worker_nice": getattr(a, "worker_nice", 0),
              "node_idle_wait": getattr(a, "node_idle_wait", "timer"),
              "node_agent_priority": getattr(a, "node_agent_priority", 0),
              "queue_frames": a.queue_frames, "tcp_window_mib": a.tcp_window, "mtu": a.mtu,
              "topology": getattr(a, "topology", "vhost"), "machine": machine(a),
              "rx_queue_size": getattr(a, "rx_queue_size", None) or "the VM host's default",
              "qemu_trace": getattr(a, "qemu_trace", None) or "",
              "driver": "amberlab.transparency.evaluate (amber-controller, amberctl)",
              "started_host_ns": time.time_ns()}
    names = run_names(a.runs)
    runs = {}
    ev = Evaluation(a)
    try:
        t0 = time.monotonic()
        ev.start()
        say(f"ready in {time.monotonic() - t0:.0f} s", a.quiet)
        current = vmhost_lines(a)
        current_topology = topology_extra(a)
        for n in names:
            # A run without a variant runs with the evaluation's options.
            variant = run_variant(n)
            if vmhost_lines(a, variant) != current:
                say(f"run {n}: restarting the VM-host agents with "
                    f"{VARIANTS[variant][:3] if variant else 'the options given'} "
                    "(step lead, real-time boost, pause alignment); they adopt the running VMs",
                    a.quiet)
                current = vmhost_lines(a, variant)
                ev.exp.reconfigure_vmhosts(current)
            if (align_network(a, variant) != ev.exp.align_network
                    or topology_extra(a, variant) != current_topology):
                current_topology = topology_extra(a, variant)
                say(f"run {n}: restarting the controller with the network "
                    f"{'aligned' if align_network(a, variant) else 'not aligned'} to each VM"
                    + (", directions running on until their VM stopped"
                       if "run_on" in current_topology else ""), a.quiet)
                ev.exp.align_network = align_network(a, variant)
                ev.exp.restart_controller(current_topology)
                lab.wait_for(ev.exp.clocks_trustworthy, 60, "every agent's clock to be trustworthy")
            t1 = time.monotonic()
            say(f"run {n}: iperf3 for {a.duration} s"
                + (f", a checkpoint every {a.interval:g} s" if not n.startswith("baseline") else ""),
                a.quiet)
            runs[n] = ev.run(n)
            r = runs[n]
            say(f"run {n}: done in {time.monotonic() - t1:.0f} s, delay node dropped "
                f"{sum(r['delaynode']['dropped'].values())} frames", a.quiet)
        amber = next((n for n in names if n.split("-")[0] == "amber"), None)
        if a.restore and amber:
            runs["restore"] = ev.restore(amber, runs[amber], a.restore)
            names.append("restore")
            say("restore: the transfer finished", a.quiet)
        params["runs"] = names
        with open(os.path.join(a.eval_dir, "params.json"), "w") as f:
            json.dump(params, f, indent=1)
        with open(os.path.join(a.eval_dir, "timeline.json"), "w") as f:
            json.dump({"events": sorted(ev.timeline, key=lambda e: e["host_ns"])}, f, indent=1)
        logs = os.path.join(a.eval_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        hosts = getattr(ev.exp, "vmhosts", None) or [ev.exp.vmhost]  # every VM host's log
        lab.sh("cp", ev.exp.controller.log_path, *(h.log_path for h in hosts if h),
               ev.exp.node.log_path, logs, check=False)
        if keep:
            keep(ev, a)
    except Exception:
        if ev.exp:
            print(diagnostics(ev.exp), file=sys.stderr)
        raise
    finally:
        ev.close()
    return params, runs


def diagnostics(exp):
    out = []
    for vm in ("vm1", "vm2"):
        out.append(f"--- {vm} console (last 1500 bytes) ---\n{exp.console(vm).text()[-1500:]}")
    for p in (exp.controller, exp.vmhost, exp.node):
        if p:
            out.append(f"--- {p.what} ---\n{p.output()[-1500:]}")
    return "\n".join(out)


def parser():
    p = argparse.ArgumentParser(prog="scripts/amber-py transparency.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build")
    p.add_argument("eval_dir")
    p.add_argument("--rate", default="100Mbit")
    p.add_argument("--delay", default="20ms", help="one way")
    p.add_argument("--loss", default="0", help='random loss per direction, e.g. "0.1%%"')
    p.add_argument("--duration", type=int, default=60, help="iperf3 seconds per run")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between checkpoints")
    p.add_argument("--runs", default="baseline,amber,naive,baseline",
                   help="run kinds in order: baseline, amber, naive, sham, pause (amber's "
                        "stop and resume without the save), each optionally "
                        "KIND:VARIANT to restart the VM-host agents with a mechanism first: "
                        + ", ".join(f"{k} (step_lead {v[0]}, realtime_boost {v[1]}, "
                                    f"pause_alignment {v[2]}, network aligned {v[3]}, "
                                    f"run-on {v[4]})"
                                    for k, v in VARIANTS.items()))
    p.add_argument("--restore", type=int, default=3,
                   help="restore the amber run's checkpoint K at the end (0: none)")
    p.add_argument("--topology", choices=("vhost", "testbed"), default="vhost",
                   help="vhost: both VMs on the node's vhost-user ports; testbed: each VM on a "
                        "tap in a host namespace of its own, the node on kernel ports (veths)")
    p.add_argument("--pmd", choices=("af_packet", "af_xdp"), default="af_packet",
                   help="the node's ports in the testbed topology")
    p.add_argument("--tap-txqueuelen", type=int, default=1000,
                   help="frames each VM's tap holds while the VM is stopped (testbed)")
    p.add_argument("--mtu", type=int, default=1500,
                   help="the experiment network's MTU: the guests' eth0, the taps, bridges and "
                        "veths, the node's ports and frame pool (9000: jumbo frames, which "
                        "the TCG guests push at a higher rate)")
    p.add_argument("--tcp-window", type=float, default=4.0,
                   help="the guests' largest TCP buffer (MiB): tcp_rmem/tcp_wmem maximum")
    p.add_argument("--queue-frames", type=int, default=10000,
                   help="the link's drop-tail queue (frames)")
    p.add_argument("--vm-mib", type=int, default=256, help="each VM's RAM")
    p.add_argument("--cpu-probe", action="store_true",
                   help="the sender also runs the CPU work unit (cpu_at/cpu_max; busies its vCPU)")
    p.add_argument("--vhost-priority", type=int, default=10,
                   help="the delay node's --vhost-priority (0: DPDK's vhost thread as it is)")
    p.add_argument("--worker-priority", type=int, default=0,
                   help="the delay node's --worker-priority (SCHED_FIFO of the lcores that move "
                        "frames; 0: as the EAL made them)")
    p.add_argument("--worker-nice", type=int, default=0,
                   help="the delay node's --worker-nice (nice of the lcores that move frames)")
    p.add_argument("--node-idle-wait", choices=("ports", "timer"), default="timer",
                   help="the delay node's --idle-wait: an idle worker looks at its ports every "
                        "idle_sleep (timer, the default, as a node with cores of its own would) "
                        "or waits on its af_packet sockets (ports: about half the node's CPU on "
                        "this host, but see README, Performance: \"The delay node's own CPU\"); the "
                        "vhost topology's ports have no sockets and always use timer")
    p.add_argument("--sample-threads", action="store_true",
                   help="sample every thread's scheduler statistics (runs/*/threads.json, "
                        "scripts/amber-py transparency.threads EVAL_DIR): who had the CPUs "
                        "around each checkpoint; costs about a tenth of a core")
    p.add_argument("--step-lead",
                   help="the VM host's step_lead: auto, off or a duration (default: the agent's, "
                        "auto)")
    p.add_argument("--realtime-boost", action="store_true",
                   help="the VM host's realtime_boost around each instant")
    p.add_argument("--agent-realtime", action="store_true",
                   help="the VM host's agent_realtime: its scheduler and stepping threads at "
                        "SCHED_FIFO (QEMU untouched)")
    p.add_argument("--save-ram-file", action="store_true",
                   help="the VM host's save_ram_file: each VM's RAM saved as a file beside "
                        "QEMU's state stream instead of in it (run variant amber:ramfile "
                        "does it for one run)")
    p.add_argument("--pause-alignment", choices=("on", "off"),
                   help="the VM host's pause_alignment (default: the agent's, on)")
    p.add_argument("--align-network", choices=("on", "off"), default="on",
                   help="the delay node shifts the direction to each VM by how much longer "
                        "that VM's clock stood still than the network (topology attach)")
    p.add_argument("--node-agent-priority", type=int, default=0,
                   help="the delay node's agent serves operations at this SCHED_FIFO priority "
                        "(amber-delaynode --agent-priority; 0: as started)")
    p.add_argument("--run-on", choices=("on", "off"), default="off",
                   help="directions delivering to a VM run on past the freeze until the VM "
                        f"host reports that VM stopped (Topology.run_on: {RUN_ON}); the "
                        "runon variant turns it on for one run")
    p.add_argument("--rx-queue-size", type=int, choices=(256, 512, 1024),
                   help="testbed: the guests' virtio-net receive ring (default: the "
                        "VM host's, 1024). QEMU's tap back end drops the frame it holds for a "
                        "full ring at every VM stop")
    p.add_argument("--capture-taps", action="store_true",
                   help="testbed: tcpdump each VM's tap (runs/*/taps/*.pcap) so "
                        "`scripts/amber-py transparency.paths EVAL_DIR` can split the in-flight "
                        "segments' one-way delay into sender, network and receiver legs; "
                        "costs some CPU")
    p.add_argument("--qemu-trace", metavar="EVENTS",
                   help="comma-separated QEMU trace events to turn on in both VMs (VmSpec."
                        "qemu_trace; their lines land in runs/*/<vm>-qemu.log). With "
                        "virtqueue_flush,virtio_notify,virtio_queue_notify and --capture-taps, "
                        "transparency.paths splits the first segment's receiver leg after each "
                        "resume at QEMU's receive ring. Costs the VMs' main loops a little")
    p.add_argument("--quiet", action="store_true")
    return p


def main():
    p = parser()
    a = p.parse_args()
    if a.topology != "testbed":
        for flag, value in (("--capture-taps", a.capture_taps), ("--rx-queue-size", a.rx_queue_size)):
            if value:
                p.error(f"{flag} is for --topology testbed (VMs on taps)")
    if os.geteuid() != 0:
        print("transparency.evaluate: run as root (namespaces, hugepages, QEMU)", file=sys.stderr)
        return 77
    a.build = os.path.abspath(a.build)
    evaluate(a)
    return subprocess.call(amberlab.module_command("transparency.report", a.eval_dir),
                           env=amberlab.module_env())


if __name__ == "__main__":
    sys.exit(main())
