#!/usr/bin/python3
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
then a restore of the amber run's checkpoint `--restore` (amberctl
restore): the VMs, their iperf3 and the frames in flight come back, and the
transfer continues from there to its end (run "restore").

It writes an evaluation folder (bench/transparency/README.md) and the
report (report.py): report.md, plots/*.png, eval.sqlite, the raw data.

usage: evaluate.py BUILD_DIR EVAL_DIR [--rate 100Mbit] [--delay 20ms] [--loss 0]
         [--duration 60] [--interval 5] [--runs baseline,amber,naive,baseline]
         [--restore 3] [--quiet]
(root; about duration + 25 s per run, plus ~1 min to boot and restore)"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "scenario"))
sys.path.insert(0, HERE)
import amberlab as lab  # noqa: E402
import guest  # noqa: E402
import vm_rings  # noqa: E402
from experimentlab import Experiment  # noqa: E402

SENDER, RECEIVER = "vm1", "vm2"
PROBES = {SENDER: ["timer", "cpu"], RECEIVER: ["rx", "timer"]}
QUEUE_FRAMES = 10000
# 4 MB TCP windows: 8x the bandwidth-delay product of 100 Mbit/s x 40 ms and
# below the delay node's queue (10,000 frames, 15 MB): TCP's own congestion
# does not overflow it, so every drop is one a checkpoint caused.
TCP_BUFFERS = "4096 131072 4194304"
DONE = "IPERF-DONE"


def say(text, quiet=False):
    if not quiet:
        print(f"[eval] {text}", file=sys.stderr, flush=True)


class Evaluation:
    def __init__(self, args):
        self.a = args
        self.timeline = []
        self.exp = None
        self.probes = {}
        self.manifests = {}  # run -> [manifest]
        self.restored_id = None

    # ---- setting up ----

    def start(self):
        a = self.a
        loss = "" if a.loss in ("0", "0%") else f' random_loss {{ probability: "{a.loss}" }}'
        link = f'rate: "{a.rate}" delay: "{a.delay}" queue_frames: {QUEUE_FRAMES}{loss}'
        say(f"starting: delay node ({a.rate}, {a.delay} one way), ptp4l pair, "
            "two VMs, VM-host agent, controller", a.quiet)
        self.exp = Experiment(a.build, prefix="amb-eval", link=link, mgmt=True,
                              append=("", "amber.workload=iperf3-server"),
                              topology_extra='margin: "100ms"\n',
                              delaynode_app=("--vhost-priority",
                                             str(getattr(a, "vhost_priority", 10))))
        e = self.exp
        e.wait_guests_ready()
        for vm, port in e.mgmt_port.items():
            self.probes[vm] = guest.GuestProbe(port, run_dir=os.path.join(e.run_dir, vm))
            self.probes[vm].wait_ready(60)
            e.console(vm).run(f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_rmem; '
                              f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_wmem')
        # The server logs to a file the report folder keeps.
        e.console(RECEIVER).run("killall iperf3; iperf3 -s -D --logfile /tmp/iperf3-server.log")
        peer = e.ADDR[1]
        e.console(SENDER).run(f"i=0; until ping -c 1 -W 1 {peer} > /dev/null; do i=$((i+1)); "
                              f"[ $i -ge 30 ] && break; done", timeout=60)
        # TCG translates the guests' TCP paths on first use: the first
        # transfer after boot stalls for seconds. Warm up before any run.
        e.console(SENDER).run(f"iperf3 -c {peer} -t 3 > /dev/null 2>&1", timeout=90)

    def close(self):
        if self.exp:
            self.exp.close()

    # ---- measuring ----

    def event(self, run, kind, host_ns, **detail):
        self.timeline.append(dict(run=run, kind=kind, host_ns=host_ns, **detail))

    def node_counters(self):
        st = self.exp.node_stats()
        dropped = {}
        for p in st["pipes"]:
            for cause, n in p["dropped"].items():
                dropped[cause] = dropped.get(cause, 0) + int(n)
        for port in st.get("ports", []):
            for k in ("rx_missed", "rx_no_mbuf", "tx_errors"):
                dropped[f"port_{k}"] = dropped.get(f"port_{k}", 0) + int(port.get(k, 0))
        return {"frames_in": sum(int(p["frames_in"]) for p in st["pipes"]),
                "frames_out": sum(int(p["frames_out"]) for p in st["pipes"]),
                "dropped": dropped}

    @staticmethod
    def delta(before, after):
        return {"frames_in": after["frames_in"] - before["frames_in"],
                "frames_out": after["frames_out"] - before["frames_out"],
                "dropped": {k: v - before["dropped"].get(k, 0) for k, v in after["dropped"].items()}}

    def anchors(self, n=50):
        return {vm: self.probes[vm].clock_anchor(n) for vm in self.probes}

    def checkpoint(self, run, kind, k, at_ns):
        args = ["checkpoint", "--at", str(at_ns), "--label", f"{run} #{k}"]
        if kind == "naive":
            args.append("--naive")
        m = self.exp.ctl(*args)
        vms = {}
        for step in m["steps"]:
            if step["agent"].startswith("vm host"):
                events = {vm: int(ns) for vm, ns in step.get("vm_event_ns", {}).items()}
                for vm, ns in events.items():
                    vms.setdefault(vm, {})["stop_ns" if step["step"] == "freeze" else "resume_ns"] = ns
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
        for vm, probes in PROBES.items():
            self.probes[vm].start(probes, port=5201)
        time.sleep(1)
        anchors = {vm: [x] for vm, x in self.anchors().items()}
        before = self.node_counters()
        console = self.exp.console(SENDER)
        start = console.size()
        iperf_start = time.time_ns()
        self.event(name, "iperf_start", iperf_start)
        console.send(f"iperf3 -c {self.exp.ADDR[1]} -t {a.duration} -i 0.5 -J > /tmp/iperf3.json "
                     f"2>&1; echo IPERF-$((1))-DONE")
        checkpoints, paused, k = [], 0, 1
        if kind in ("amber", "naive"):
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
                paused += c["resume_ns"] - c["freeze_ns"]
                checkpoints.append(c)
                # An anchor while both VMs run again, away from the windows
                # around checkpoints: it absorbs errors of the recorded pause.
                time.sleep(max(0, (c["resume_ns"] + 1_200_000_000 - time.time_ns()) / 1e9))
                for vm, x in self.anchors(40).items():
                    anchors[vm].append(x)
                c["delaynode_dropped_around"] = sum(
                    self.delta(counters, self.node_counters())["dropped"].values())
                say(f"  {name}: checkpoint {k} ({m['id']}): paused "
                    f"{(c['resume_ns'] - c['freeze_ns']) / 1e6:.0f} ms, saved "
                    f"{int(m['total_bytes']) / 1e6:.0f} MB", a.quiet)
                k += 1
        console.wait_for("IPERF-1-DONE", a.duration + 90 + paused / 1e9, start)
        return self.finish(name, kind, run_dir, iperf_start, checkpoints, anchors, before)

    def finish(self, name, kind, run_dir, iperf_start, checkpoints, anchors, before):
        iperf_end = time.time_ns()
        self.event(name, "iperf_end", iperf_end)
        after = self.node_counters()
        for vm, x in self.anchors().items():
            anchors[vm].append(x)
        for vm in self.probes:
            self.probes[vm].stop()
            self.probes[vm].fetch(os.path.join(run_dir, "probe", vm))
        self.probes[SENDER].fetch_file("/tmp/iperf3.json", os.path.join(run_dir, "iperf3.json"))
        self.probes[RECEIVER].fetch_file("/tmp/iperf3-server.log",
                                         os.path.join(run_dir, "iperf3-server.log"))
        for vm in self.probes:  # the guests' TCP counters (resets, retransmits, ...)
            snmp = self.exp.console(vm).run("cat /proc/net/snmp /proc/net/netstat; dmesg | tail -20; ps")
            with open(os.path.join(run_dir, f"{vm}-tcp-counters.txt"), "w") as f:
                f.write(snmp)
        run = {"name": kind, "iperf_start_host_ns": iperf_start, "iperf_end_host_ns": iperf_end,
               "sender": SENDER, "receiver": RECEIVER, "probes": PROBES,
               "checkpoints": checkpoints, "delaynode": self.delta(before, after),
               "guest_clock": anchors}
        with open(os.path.join(run_dir, "run.json"), "w") as f:
            json.dump(run, f, indent=1)
        return run

    def restore(self, amber, k):
        """Restores the amber run's checkpoint k: its transfer continues."""
        a = self.a
        ms = self.manifests.get("amber", [])
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


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "load_avg_at_start": os.getloadavg()[0], "accel": "tcg",
            "vm_memory_mib": 256, "vcpus": 1}


def run_names(spec):
    names, counts = [], {}
    kinds = spec.split(",")
    for n in kinds:
        counts[n] = counts.get(n, 0) + 1
        names.append(n if kinds.count(n) == 1 else f"{n}-{counts[n]}")
    return names


def evaluate(a, keep=None):
    """The whole evaluation; returns (params, runs) and leaves the folder.
    keep(evaluation, args), if given, runs before the experiment is torn
    down (to copy more of it into the folder)."""
    os.makedirs(os.path.join(a.eval_dir, "runs"), exist_ok=True)
    params = {"rate": a.rate, "delay": a.delay, "loss": a.loss, "duration_s": a.duration,
              "interval_s": a.interval, "iperf_interval_s": 0.5, "restore_at": a.restore,
              "queue_frames": QUEUE_FRAMES, "machine": machine(),
              "driver": "bench/transparency/evaluate.py (amber-controller, amberctl)",
              "started_host_ns": time.time_ns()}
    names = run_names(a.runs)
    runs = {}
    ev = Evaluation(a)
    try:
        t0 = time.monotonic()
        ev.start()
        say(f"ready in {time.monotonic() - t0:.0f} s", a.quiet)
        for n in names:
            t1 = time.monotonic()
            say(f"run {n}: iperf3 for {a.duration} s"
                + (f", a checkpoint every {a.interval:g} s" if not n.startswith("baseline") else ""),
                a.quiet)
            runs[n] = ev.run(n)
            r = runs[n]
            say(f"run {n}: done in {time.monotonic() - t1:.0f} s, delay node dropped "
                f"{sum(r['delaynode']['dropped'].values())} frames", a.quiet)
        if a.restore and "amber" in runs:
            runs["restore"] = ev.restore(runs["amber"], a.restore)
            names.append("restore")
            say("restore: the transfer finished", a.quiet)
        params["runs"] = names
        with open(os.path.join(a.eval_dir, "params.json"), "w") as f:
            json.dump(params, f, indent=1)
        with open(os.path.join(a.eval_dir, "timeline.json"), "w") as f:
            json.dump({"events": sorted(ev.timeline, key=lambda e: e["host_ns"])}, f, indent=1)
        logs = os.path.join(a.eval_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        lab.sh("cp", ev.exp.controller.log_path, ev.exp.vmhost.log_path, ev.exp.node.log_path,
               logs, check=False)
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
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build")
    p.add_argument("eval_dir")
    p.add_argument("--rate", default="100Mbit")
    p.add_argument("--delay", default="20ms", help="one way")
    p.add_argument("--loss", default="0", help='random loss per direction, e.g. "0.1%%"')
    p.add_argument("--duration", type=int, default=60, help="iperf3 seconds per run")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between checkpoints")
    p.add_argument("--runs", default="baseline,amber,naive,baseline")
    p.add_argument("--restore", type=int, default=3,
                   help="restore the amber run's checkpoint K at the end (0: none)")
    p.add_argument("--vhost-priority", type=int, default=10,
                   help="the delay node's --vhost-priority (0: DPDK's vhost thread as it is)")
    p.add_argument("--quiet", action="store_true")
    return p


def main():
    a = parser().parse_args()
    if os.geteuid() != 0:
        print("evaluate.py: run as root (namespaces, hugepages, QEMU)", file=sys.stderr)
        return 77
    a.build = os.path.abspath(a.build)
    evaluate(a)
    return subprocess.call([sys.executable, os.path.join(HERE, "report.py"), a.eval_dir])


if __name__ == "__main__":
    sys.exit(main())
