#!/usr/bin/python3
"""A transparency evaluation without the controller, on real components:
two endpoint VMs on vhost-user ports of a real amber-delaynode, iperf3
between them, the guest probes measuring inside both, and checkpoint-like
events made by hand:

  baseline   nothing happens (run twice: the run-to-run spread)
  amber      every `interval` s: the delay node freezes (its agent, amberctl)
             and both VMs stop (QMP) at one instant T, then all resume at
             T + pause; one of them also saves both VMs and restores them
             in new QEMU processes meanwhile
  naive      the same VM stops and the same save/restore, the delay node
             keeps running

It writes the evaluation folder report.py reads (bench/transparency/
README.md) and runs report.py on it. It stands in for the controller's
driver (issue #8) and tests the probe, guest.py and report.py on real data.

usage: qmp_eval.py BUILD_DIR EVAL_DIR [--duration S] [--interval S] [--pause S]
                   [--rate R] [--delay MS] [--runs baseline,baseline,amber,naive]
                   [--restore-at K] [--sender-probes timer,cpu] [--receiver-probes rx,timer]
       (root, hugepages; about (duration + 20 s) per run plus 40 s)
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "scenario"))
sys.path.insert(0, HERE)
import amberlab as lab  # noqa: E402
import guest  # noqa: E402
import vms  # noqa: E402

PREFIX = "amb-tq"
ADDR = ["10.84.0.1", "10.84.0.2"]
QUEUE = 10000  # above rate x delay at 100 Mbit/s x 20 ms (~170 frames)
# 4 MB windows: 8 x the bandwidth-delay product of 100 Mbit/s x 40 ms, and
# below the queue (10,000 frames, 15 MB), so TCP's own congestion does not
# overflow it and every drop is one a checkpoint caused.
TCP_BUFFERS = "4096 131072 4194304"


def delaynode_counters(node):
    st = node.telemetry("/amber/stats")
    ports = node.telemetry("/amber/ports")
    dropped = {}
    for d in st.values():
        for k, v in d.items():
            if k.startswith("dropped_"):
                dropped[k[8:]] = dropped.get(k[8:], 0) + v
    for p in ports.values():
        for k in ("rx_missed", "rx_no_mbuf", "tx_errors"):
            dropped[f"port_{k}"] = dropped.get(f"port_{k}", 0) + p[k]
    return {"frames_in": sum(d["frames_in"] for d in st.values()),
            "frames_out": sum(d["frames_out"] for d in st.values()),
            "tx_retries": sum(d.get("tx_retries", 0) for d in st.values()),
            "dropped": dropped}


def counters_delta(a, b):
    return {"frames_in": b["frames_in"] - a["frames_in"],
            "frames_out": b["frames_out"] - a["frames_out"],
            "tx_retries": b["tx_retries"] - a["tx_retries"],
            "dropped": {k: b["dropped"][k] - a["dropped"].get(k, 0) for k in b["dropped"]}}


def tsc_rate_error():
    """The delay node's clock rate over real time: DPDK's rte_get_tsc_hz()
    on Linux is the TSC frequency measured and rounded to 10 MHz, and
    dataplane/tsc_clock.cpp advances CLOCK_REALTIME, read once, by TSC ticks
    at that rate. With the kernel's TSC frequency f the node's clock runs at
    f / round(f, 10 MHz) of real time (1996.249 MHz here: 1879 ppm slow, so
    its freeze/thaw instants land 113 ms late after a minute)."""
    mhz = None
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if "tsc: Refined TSC clocksource calibration:" in line or "tsc: Detected" in line:
                mhz = float(line.split(":")[-1].split()[0]) if "Refined" in line else \
                    float(line.split("Detected")[1].split()[0])
    except (OSError, ValueError, IndexError):
        mhz = None
    if mhz is None:
        return 1.0
    hz = mhz * 1e6
    return hz / (round(hz / 1e7) * 1e7)


class Experiment:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.amberctl = os.path.join(self.build, "controller", "amberctl")
        self.tmp = tempfile.mkdtemp(prefix=f"{PREFIX}-")
        self.agent = os.path.join(self.tmp, "agent.sock")
        self.node = None
        self.vms = []
        self.probes = {}
        self.timeline = []
        self.node_log = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def diagnostics(self):
        """What the VMs and the delay node printed last, for a failure."""
        out = []
        for vm in self.vms:
            out.append(f"--- {vm.name} console (last 1500 bytes) ---\n{vm.console_text()[-1500:]}")
        if self.node:
            out.append(f"--- delay node ---\n{self.node.output()[-1500:]}")
        return "\n".join(out)

    def close(self):
        for vm in self.vms:
            vm.close()
        if self.node:
            self.node.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def event(self, run, kind, host_ns, **detail):
        self.timeline.append(dict(run=run, kind=kind, host_ns=host_ns, **detail))

    def start(self):
        a = self.args
        socks = [os.path.join(self.tmp, f"ep{i + 1}.sock") for i in range(2)]
        eal = [x for i in range(2) for x in ("--vdev", f"net_vhost{i},iface={socks[i]},client=0")]
        cfg = (f'node_id: "transparency" link {{ name: "lfn" port_a: "net_vhost0" '
               f'port_b: "net_vhost1" both {{ rate: "{a.rate}" delay: "{a.delay}ms" '
               f'queue_frames: {QUEUE} }} }}')
        launched = time.time_ns()
        self.node = lab.DelayNode(os.path.join(self.build, "controller", "amber-delaynode"), cfg, [],
                                  f"{PREFIX}-dn", extra_eal=eal, agent=f"unix:{self.agent}")
        self.node_base = (launched + time.time_ns()) // 2
        self.node_rate = tsc_rate_error()
        lab.wait_for(lambda: all(os.path.exists(s) for s in socks), 10, "vhost-user sockets")
        guest_dir = os.path.join(self.build, "guest")
        for i in range(2):
            append = f"amber.ip={ADDR[i]}/24" + (" amber.workload=iperf3-server" if i else "")
            self.vms.append(vms.Vm(f"vm{i + 1}", os.path.join(self.tmp, f"vm{i + 1}"), guest_dir,
                                   append, [("vhost", socks[i])], vms.free_port(), 0x40 + i))
        for vm in self.vms:
            vm.wait_console("amber: guest ready", 120)
            vm.run(f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_rmem; '
                   f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_wmem')
            self.probes[vm.name] = guest.GuestProbe(vm.mgmt_port, run_dir=vm.run_dir)
            self.probes[vm.name].wait_ready(60)
        self.vms[0].run(f"i=0; until ping -c 1 -W 1 {ADDR[1]} > /dev/null; do i=$((i+1)); "
                        f"[ $i -ge 30 ] && break; done", timeout=60)
        # TCG translates the guests' TCP paths on first use: the first
        # transfer after boot stalls for seconds. Warm up before any run.
        self.vms[0].run(f"iperf3 -c {ADDR[1]} -t 3 --connect-timeout 5000 > /dev/null 2>&1", timeout=90)

    def node_instant(self, real_ns):
        """The delay node's clock reading at real instant real_ns: with
        --node-clock-fix its drift (tsc_rate_error) is compensated, taking
        the node's start as the instant its clock was anchored (an error
        of ~1 s there costs ~2 ms)."""
        if not self.args.node_clock_fix:
            return real_ns
        return int(self.node_base + (real_ns - self.node_base) * self.node_rate)

    def freeze_node(self, at_ns, what):
        return subprocess.Popen([self.amberctl, "--agent", f"unix:{self.agent}", what, "--at",
                                 str(self.node_instant(at_ns))], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def node_done(self, cmd, what, at_ns):
        """Waits for an amberctl freeze/thaw started by freeze_node()."""
        out, _ = cmd.communicate(timeout=30)
        self.node_log.append(f"{what} at {at_ns}: exit {cmd.returncode}: {out.strip()}")
        if cmd.returncode != 0:
            raise RuntimeError("amberctl " + what + " failed; the delay node's requests so far:\n"
                               + "\n".join(self.node_log[-6:]))
        return {"name": f"{what}_delaynode", "at_ns": at_ns, "detail": out.strip()}

    def checkpoint(self, run, kind, cid, at_ns, restore):
        """Stops the VMs at at_ns (and with kind == amber freezes the delay
        node at the same instant), optionally saves and restores them, and
        resumes everything `pause` s later (or after the restore)."""
        a = self.args
        steps = []
        node_cmd = self.freeze_node(at_ns, "freeze") if kind == "amber" else None
        stops = vms.stop_all(self.vms, at_ns)
        if node_cmd:
            steps.append(self.node_done(node_cmd, "freeze", at_ns))
        if restore:
            for vm in self.vms:
                path = os.path.join(self.tmp, f"{vm.name}-{run}-{cid}.state")
                took = vm.save(path)
                steps.append({"name": f"save_{vm.name}", "duration_ns": int(took * 1e9)})
                self.event(run, "save", time.time_ns(), vm=vm.name, checkpoint=cid)
            for vm in self.vms:
                path = os.path.join(self.tmp, f"{vm.name}-{run}-{cid}.state")
                took = vm.restore(path)
                os.unlink(path)
                steps.append({"name": f"restore_{vm.name}", "duration_ns": int(took * 1e9)})
                self.event(run, "restore", time.time_ns(), vm=vm.name, checkpoint=cid)
        resume_at = max(at_ns + int(a.pause * 1e9), time.time_ns() + 300_000_000)
        node_cmd = self.freeze_node(resume_at, "thaw") if kind == "amber" else None
        resumes = vms.cont_all(self.vms, resume_at)
        if node_cmd:
            steps.append(self.node_done(node_cmd, "thaw", resume_at))
        self.event(run, "checkpoint", at_ns, id=cid, resume_ns=resume_at, restore=restore)
        return {"id": cid, "freeze_ns": at_ns, "resume_ns": resume_at, "restore": restore,
                "vms": {n: {"stop_ns": stops[n][0], "resume_ns": resumes[n][0],
                            "stop_reply_ns": stops[n][1], "resume_reply_ns": resumes[n][1]}
                        for n in stops},
                "steps": steps}

    def run(self, name, run_dir):
        a = self.args
        kind = name.split("-")[0]
        os.makedirs(run_dir, exist_ok=True)
        sender, receiver = self.vms
        plan = {sender.name: a.sender_probes.split(","), receiver.name: a.receiver_probes.split(",")}
        for vm in self.vms:
            self.probes[vm.name].start(plan[vm.name], port=5201)
        time.sleep(1)
        anchors = {vm.name: [self.probes[vm.name].clock_anchor()] for vm in self.vms}
        before = delaynode_counters(self.node)
        start = len(sender.console_text())
        iperf_start = time.time_ns()
        self.event(name, "iperf_start", iperf_start)
        sender.type(f"iperf3 -c {ADDR[1]} -t {a.duration} -i {a.interval_iperf} -J "
                    f"> /tmp/iperf3.json 2>&1; echo IPERF-$((6*7))-DONE")
        checkpoints = []
        paused = 0
        if kind in ("amber", "naive"):
            k = 1
            while k * a.interval < a.duration - a.interval / 2:
                at = iperf_start + int(k * a.interval * 1e9) + paused
                if at - time.time_ns() < 200_000_000:
                    raise RuntimeError("checkpoint schedule fell behind (save/restore too slow?)")
                counters = delaynode_counters(self.node)
                c = self.checkpoint(name, kind, k, at, restore=(k == a.restore_at))
                checkpoints.append(c)
                paused += c["resume_ns"] - c["freeze_ns"]
                if a.mid_anchor_after > 0:
                    # An anchor while the VMs run again, away from the
                    # checkpoint and control windows: it absorbs any error
                    # of the recorded pause (a VM's clock stops before its
                    # STOP event).
                    wait = c["resume_ns"] + int(a.mid_anchor_after * 1e9) - time.time_ns()
                    time.sleep(max(0, wait / 1e9))
                    for vm in self.vms:
                        anchors[vm.name].append(self.probes[vm.name].clock_anchor(40))
                # What the delay node dropped from just before the freeze
                # to now (the mid anchor, or right after the resume).
                delta = counters_delta(counters, delaynode_counters(self.node))
                c["delaynode_dropped_around"] = sum(delta["dropped"].values())
                c["delaynode_tx_retries_around"] = delta["tx_retries"]
                print(f"  [{name}] checkpoint {k}: paused {(c['resume_ns'] - c['freeze_ns']) / 1e6:.0f} ms"
                      f"{' with save/restore' if c['restore'] else ''}", file=sys.stderr)
                k += 1
        sender.wait_console("IPERF-42-DONE", a.duration + 60 + paused / 1e9, start)
        iperf_end = time.time_ns()
        self.event(name, "iperf_end", iperf_end)
        after = delaynode_counters(self.node)
        for vm in self.vms:
            anchors[vm.name].append(self.probes[vm.name].clock_anchor())
        for vm in self.vms:
            self.probes[vm.name].stop()
            self.probes[vm.name].fetch(os.path.join(run_dir, "probe", vm.name))
        self.probes[sender.name].fetch_file("/tmp/iperf3.json", os.path.join(run_dir, "iperf3.json"))
        run = {"name": kind, "iperf_start_host_ns": iperf_start, "iperf_end_host_ns": iperf_end,
               "sender": sender.name, "receiver": receiver.name, "probes": plan,
               "checkpoints": checkpoints, "delaynode": counters_delta(before, after),
               "guest_clock": anchors}
        with open(os.path.join(run_dir, "run.json"), "w") as f:
            json.dump(run, f, indent=1)
        return run


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "load_avg_at_start": os.getloadavg()[0],
            "accel": "tcg", "vm_memory_mib": 256, "vcpus": 1}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build")
    p.add_argument("eval_dir")
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--interval-iperf", type=float, default=0.5)
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--rate", default="100Mbit")
    p.add_argument("--delay", type=int, default=20)
    p.add_argument("--runs", default="baseline,baseline,amber,naive")
    p.add_argument("--restore-at", type=int, default=3, help="checkpoint that saves and restores (0: none)")
    p.add_argument("--mid-anchor-after", type=float, default=1.2,
                   help="clock anchor this many s after each resume (0: only before and after)")
    p.add_argument("--node-clock-fix", action="store_true",
                   help="compensate the delay node's clock drift in the instants it is given")
    p.add_argument("--sender-probes", default="timer,cpu")
    p.add_argument("--receiver-probes", default="rx,timer")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (hugepages, vhost-user sockets)")
        return 77
    lab.sh(os.path.join(HERE, "..", "..", "scripts", "build-guest.sh"), a.build, timeout=900)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(os.path.join(a.eval_dir, "runs"), exist_ok=True)
    params = {"rate": a.rate, "delay": f"{a.delay}ms", "loss": "0", "duration_s": a.duration,
              "interval_s": a.interval, "pause_s": a.pause, "iperf_interval_s": a.interval_iperf,
              "restore_at": a.restore_at, "queue_frames": QUEUE, "machine": machine(),
              "node_clock_fix": a.node_clock_fix, "node_clock_rate": tsc_rate_error(),
              "driver": "bench/transparency/qmp_eval.py (QMP stop/cont, amberctl freeze/thaw)",
              "started_host_ns": time.time_ns()}
    names = []
    counts = {}
    for n in a.runs.split(","):
        counts[n] = counts.get(n, 0) + 1
        names.append(n if a.runs.split(",").count(n) == 1 else f"{n}-{counts[n]}")
    with Experiment(a) as ex:
        try:
            return ex_main(a, ex, names, params)
        except Exception:
            print(ex.diagnostics(), file=sys.stderr)
            raise


def ex_main(a, ex, names, params):
    t0 = time.monotonic()
    ex.start()
    print(f"[qmp_eval] VMs up in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    for n in names:
        t1 = time.monotonic()
        r = ex.run(n, os.path.join(a.eval_dir, "runs", n))
        print(f"[qmp_eval] run {n}: {time.monotonic() - t1:.0f} s, delay node dropped "
              f"{sum(r['delaynode']['dropped'].values())}", file=sys.stderr)
    params["runs"] = names
    with open(os.path.join(a.eval_dir, "params.json"), "w") as f:
        json.dump(params, f, indent=1)
    with open(os.path.join(a.eval_dir, "timeline.json"), "w") as f:
        json.dump({"events": ex.timeline}, f, indent=1)
    return subprocess.call([sys.executable, os.path.join(HERE, "report.py"), a.eval_dir])


if __name__ == "__main__":
    sys.exit(main())
