"""Issue #16's fault-injection matrix on the real components: one experiment
(amberlab.experiment.Experiment: two QEMU VMs on vhost-user ports of one
amber-delaynode, amber-vmhost, amber-controller, a ptp4l pair) and, cell by
cell, one fault at one step of the checkpoint or restore protocol:

  components  controller, delay node (amber-delaynode), VM-host agent
              (amber-vmhost), one QEMU (vm2's), each SIGKILLed
  steps       after prepare  "freeze" progress line: every agent said yes,
                             the instant T is still ahead
              after freeze   "save" progress line: every agent stopped at T
              mid-save       the checkpoint's folder holds some bytes
              after save     "resume" progress line: every piece saved, the
                             resume instant still ahead
              mid-restore    a restore's "loading states and images" line
  and two more cells: the PTP grandmaster lost while everything is stopped
  (killed at the "save" line, started again after the cell), and the store
  filled mid-save.

What recovery is, per component (and what the script does for it, as an
operator would):
  controller     the agents' leases resume everything; the script starts the
                 controller again at once and it reconciles (rolls back what
                 it finds stopped)
  VM-host agent  its QEMUs outlive it; the script starts it again, it adopts
                 them and honours the lease they carry
  delay node     its frames are lost and QEMU's vhost-user rings die with it
                 (no reconnect): the script starts it again and restores the
                 last good checkpoint
  QEMU           the VM is gone: the script restores the last good checkpoint
A restore that fails takes the experiment down cleanly (swapped out): the
script restores again. The time of a cell is from the kill (the fault) until
both VMs run and the node is thawed, including those actions.

After each cell: both VMs running and the node thawed (or cleanly swapped
out, then restored), vm1 pings vm2 through the node, every folder of the
store has a MANIFEST whose digests verify, and each direction's counters
balance (in = out + held + dropped by cause).

usage: fault_matrix.py BUILD_DIR [--cells all|short|COMPONENT:STEP,...]
                       [--markdown FILE] [--logs DIR]        (root; skips without ptp4l or QEMU)
Exit status 0 when every cell recovered and every check passed."""

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from amberlab import lab
from amberlab.experiment import Experiment, Process

COMPONENTS = ["controller", "delay node", "VM-host agent", "QEMU"]
STEPS = ["after prepare", "after freeze", "mid-save", "after save", "mid-restore"]
EXTRA = [("PTP", "lost while stopped"), ("store", "filled mid-save")]
SHORT = [("controller", "after freeze"), ("VM-host agent", "mid-save"),
         ("PTP", "lost while stopped"), ("store", "filled mid-save")]

# Short deadlines, so a lease (T + 2 x step + save deadline) ends within
# seconds; small guests, so their save fits the deadline on a loaded host
# (two 256 MiB guests once took more than 8 s here).
STEP_S, SAVE_S = 3, 12
VM_MIB = 128
DEADLINES = f'step_deadline: "{STEP_S}s"\nsave_deadline: "{SAVE_S}s"\nmargin: "100ms"\n'
LEASE_S = 2 * STEP_S + SAVE_S
STORE_MIB = 2048


def all_cells():
    return [(c, s) for c in COMPONENTS for s in STEPS] + EXTRA


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fill(path):
    """Takes all the free space of the filesystem holding `path` within
    milliseconds, so a save running meanwhile cannot finish first."""
    with open(path, "wb") as f:
        size, step = 0, 64 << 20
        while step >= 4096:
            try:
                os.posix_fallocate(f.fileno(), size, step)
                size += step
            except OSError:
                step //= 2


def tree_bytes(path):
    n = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                n += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return n


class Background:
    """amberctl in the background; its progress lines (stderr) read as they
    come, each with the monotonic time it arrived."""

    def __init__(self, exp, *args):
        self.proc = subprocess.Popen(
            [os.path.join(exp.build, "amberctl", "amberctl"), "--controller",
             exp.controller_address, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def err(self):
        return "\n".join(self.lines)

    def saw(self, prefix, contains=""):
        return any(line.startswith(prefix) and contains in line for line in self.lines)

    def wait(self, timeout=120):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, out, self.err


class FaultExperiment(Experiment):
    """The experiment with its store on a tmpfs of its own (the cell that
    fills the store fills only that) and the pieces a cell kills started
    again."""

    def __init__(self, build, prefix="amb-fm"):
        self.store_mount = tempfile.mkdtemp(prefix=f"{prefix}-store-")
        lab.sh("mount", "-t", "tmpfs", "-o", f"size={STORE_MIB}m", f"{prefix}-store",
               self.store_mount)
        try:
            super().__init__(build, prefix=prefix, topology_extra=DEADLINES,
                             store=self.store_mount, vm_mib=VM_MIB)
        except Exception:
            self._unmount()
            raise

    def _unmount(self):
        lab.sh("umount", self.store_mount, check=False)
        os.rmdir(self.store_mount)

    def close(self):
        try:
            super().close()
        finally:
            self._unmount()

    def folder(self):
        return os.path.join(self.store, "e2e")

    def restart_node(self):
        """A new amber-delaynode with the same configuration and ports."""
        argv = self.node.argv
        for sock in self.vhost:
            if os.path.exists(sock):
                os.unlink(sock)
        lab.remove_dpdk_files(self.prefix)
        self.node = Process(argv, self.node.log_path, "running", "amber-delaynode")
        lab.wait_for(lambda: all(os.path.exists(s) for s in self.vhost), 10, "vhost-user sockets")

    def qemu_pid(self, vm):
        path = os.path.join(self.vm_dir(vm), "qemu.pid")
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if self.run_dir.encode() not in f.read():
                raise RuntimeError(f"pid {pid} of {path} is not our QEMU")
        return pid

    def restart_ptp_master(self):
        old = self.ptp.procs[0]
        if os.path.exists(self.ptp.master_socket):
            os.unlink(self.ptp.master_socket)
        self.ptp.procs[0] = Process(old.argv, old.log_path, None, "ptp4l", netns=self.ptp.ns[0])
        lab.wait_for(lambda: os.path.exists(self.ptp.master_socket), 10, "ptp4l master socket")


def try_ctl(exp, *args, timeout=20):
    try:
        return exp.ctl(*args, timeout=timeout)
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None


def experiment_state(exp):
    """'running' (both VMs running, every agent reachable, the node thawed),
    'swapped out' (the store says so, the VMs are gone and the node frozen),
    or a description of what is not settled yet."""
    s = try_ctl(exp, "status", timeout=10)
    if s is None:
        return "no controller"
    vms, frozen, unreachable = {}, False, []
    for a in s["agents"]:
        if not a["reachable"]:
            unreachable.append(a["id"])
        if a["kind"] == "vm host":
            vms.update(v.split(" ", 1) for v in a.get("vms", []))
        elif a.get("frozen"):
            frozen = True
    if unreachable:
        return f"unreachable: {','.join(unreachable)}"
    if s["state"] == "swapped out":
        gone = all(vms.get(vm, "absent") != "running" for vm in exp.VMS)
        return ("swapped out" if gone and frozen
                else f"swapped out, but VMs {vms} node frozen={frozen}")
    if all(vms.get(vm) == "running" for vm in exp.VMS) and not frozen:
        return "running"
    return f"VMs {vms} node frozen={frozen}"


def check_store(exp):
    """Every checkpoint folder has a MANIFEST and every file its digest."""
    problems = []
    folder = exp.folder()
    ids = sorted(x for x in os.listdir(folder) if x.startswith("c")) if os.path.isdir(folder) else []
    for cid in ids:
        if not os.path.exists(os.path.join(folder, cid, "MANIFEST")):
            problems.append(f"{cid} has no MANIFEST")
            continue
        m = try_ctl(exp, "show", cid)
        if m is None:
            problems.append(f"{cid}: amberctl show failed")
            continue
        for piece in m["pieces"]:
            for f in piece["files"]:
                path = os.path.join(folder, cid, f["path"])
                if not os.path.exists(path):
                    problems.append(f"{cid}/{f['path']} missing")
                elif os.path.getsize(path) != int(f["bytes"]) or sha256(path) != f["sha256"]:
                    problems.append(f"{cid}/{f['path']} does not match its digest")
    return problems, ids


def check_counters(exp):
    """in = out + held + dropped for each direction (read a few times: the
    counters are read while the node forwards)."""
    last = []
    for _ in range(5):
        try:
            st = exp.node_stats()
        except (RuntimeError, subprocess.TimeoutExpired):
            st = None
        if st is None:
            last = ["stats unavailable"]
        else:
            last = []
            for p in st["pipes"]:
                n_in, n_out = int(p.get("frames_in", 0)), int(p.get("frames_out", 0))
                held = int(p.get("held_frames", 0))
                dropped = sum(int(v) for v in p.get("dropped", {}).values())
                if n_in != n_out + held + dropped:
                    last.append(f"{p['pipe']['direction']}: in {n_in} != out {n_out} + held "
                                f"{held} + dropped {dropped}")
            if not last:
                return []
        time.sleep(0.3)
    return last


def ping_ok(exp):
    try:
        out = exp.console("vm1").run("ping -c 3 -i 0.2 -W 3 10.88.0.2", timeout=30)
    except TimeoutError:
        return False
    return re.search(r"\b0% packet loss", out) is not None


def restore(exp, cid, notes, attempts=5):
    """Restores checkpoint `cid`; retried while an agent just started is not
    reachable yet."""
    for _ in range(attempts):
        r = exp.ctl("restore", cid, check=False, json_out=False, timeout=120)
        if r.returncode == 0:
            notes.append(f"restored {cid}")
            return True
        notes.append(f"restore {cid} failed: {r.stderr.strip()[-200:]}")
        time.sleep(1)
    return False


def restore_head(exp, notes, attempts=5):
    """Restores the baseline: the checkpoint taken before the first cell
    (a checkpoint taken during a fault is checked apart, not trusted)."""
    return restore(exp, exp.baseline, notes, attempts)


def fresh_qemu(exp, vm, other_than):
    """The PID of vm's QEMU if it runs and is not `other_than`."""
    try:
        pid = exp.qemu_pid(vm)
        os.kill(pid, 0)
    except (OSError, ValueError, RuntimeError):
        return None
    return pid if pid != other_than else None


def trigger(exp, bg, step):
    """Waits for the moment `step` of the operation in bg; returns False if
    the operation ended first."""
    def seen():
        if bg.proc.poll() is not None:
            return "ended"
        if step == "after prepare":
            return bg.saw("freeze")
        if step in ("after freeze", "lost while stopped"):
            return bg.saw("save")
        if step in ("mid-save", "filled mid-save"):
            if not bg.saw("save"):
                return False
            ids = [x for x in os.listdir(exp.folder()) if x.startswith("c")]
            fresh = [x for x in ids if not os.path.exists(os.path.join(exp.folder(), x, "MANIFEST"))]
            return any(tree_bytes(os.path.join(exp.folder(), x)) > (8 << 20) for x in fresh)
        if step == "after save":
            return bg.saw("resume")
        if step == "mid-restore":
            return bg.saw("load", "loading states")
        raise ValueError(step)

    got = lab.wait_for(seen, 120, f"step {step}", interval=0.005)
    return got is True


def run_cell(exp, component, step):
    """One cell: returns a dict with the outcome, the time to recovery, the
    failed checks and what happened."""
    notes, failures = [], []
    # The last good checkpoint, for the restores (and a restore to fault).
    old_qemu = fresh_qemu(exp, "vm2", None) if step == "mid-restore" else None
    if step == "mid-restore":
        bg = Background(exp, "restore", exp.baseline)
    else:
        bg = Background(exp, "checkpoint", "--label", f"{component} {step}")
    filler = os.path.join(exp.store, "filler")
    if not trigger(exp, bg, step):
        rc, _, err = bg.wait()
        # Back to a running experiment for the next cell (leases, or a restore).
        try:
            lab.wait_for(lambda: experiment_state(exp) == "running", LEASE_S + 5, "running")
        except TimeoutError:
            restore_head(exp, notes)
        return {"outcome": "step not reached", "seconds": None,
                "failures": [f"the operation ended before {step} (exit {rc}): {err[-300:]}"],
                "notes": notes}
    if component == "controller":
        exp.controller.kill()
    elif component == "delay node":
        exp.node.kill()
    elif component == "VM-host agent":
        exp.vmhost.kill()
    elif component == "QEMU":
        # Mid-restore the QEMU to kill is the one the restore started.
        pid = lab.wait_for(lambda: fresh_qemu(exp, "vm2", old_qemu), 20, "vm2's QEMU")
        os.kill(pid, signal.SIGKILL)
    elif component == "PTP":
        exp.ptp.kill_master()
    elif component == "store":
        fill(filler)
    t_fault = time.monotonic()
    rc, _, err = bg.wait()
    last = [line for line in err.splitlines() if line.strip()]
    notes.append(f"amberctl exit {rc}: {last[-1][:160] if last else ''}")

    # The operator's part: start again what was killed.
    if component == "controller":
        sock = exp.controller_address[len("unix:"):]
        if os.path.exists(sock):
            os.unlink(sock)
        exp.start_controller()
        notes.append("controller started again")
    elif component == "VM-host agent":
        exp.start_vmhost()
        notes.append("agent started again" +
                     (", adopted its VMs" if "adopted" in exp.vmhost.output() else ""))
    elif component == "delay node":
        exp.restart_node()
        notes.append("node started again")
    elif component == "store":
        os.unlink(filler)

    needs_restore = component in ("delay node", "QEMU")
    limit = LEASE_S + 2
    restored = False
    outcome = None
    swapped = False
    deadline = time.monotonic() + limit + (90 if needs_restore else 0)
    while time.monotonic() < deadline:
        state = experiment_state(exp)
        if state == "running" and (not needs_restore or restored):
            outcome = "running"
            break
        if state.startswith("swapped out") and not restored and not swapped:
            swapped = True
            notes.append(f"{state} after {time.monotonic() - t_fault:.1f} s")
            if state != "swapped out" and component != "delay node":  # a new node: not frozen
                failures.append(f"not cleanly swapped out: {state}")
            if not needs_restore:
                deadline += 90
            needs_restore = True
        if needs_restore and not restored and not state.startswith("unreachable") \
                and state != "no controller":
            restored = restore_head(exp, notes)
            if not restored:
                break
            continue
        time.sleep(0.1)
    seconds = time.monotonic() - t_fault
    if outcome is None:
        s = try_ctl(exp, "status", timeout=10)
        failures.append(f"not recovered after {seconds:.1f} s: {experiment_state(exp)}, "
                        f"amberctl status says {s and s['state']!r}")
        outcome = "NOT recovered"
        # By hand, as an operator would, so that the next cells start from
        # a running experiment (not counted as a recovery).
        if restore_head(exp, notes):
            lab.wait_for(lambda: experiment_state(exp) == "running", 60, "running after restore")
            notes.append("(restored by hand)")
    elif not restored and seconds > limit:
        failures.append(f"recovered after {seconds:.1f} s, beyond lease + 2 s ({limit} s)")
    committed = re.search(r"checkpoint (c\d+) is saved, but", err)
    if outcome == "running" and committed:
        # A checkpoint the fault did not stop: it must restore to a working
        # experiment too.
        cid = committed.group(1)
        if restore(exp, cid, notes) and ping_ok(exp):
            notes.append(f"{cid} (saved despite the fault) restores with a working network")
        else:
            failures.append(f"{cid}, saved despite the fault, restores without a network "
                            "(vm1 does not reach vm2)")
        restore_head(exp, notes)
    if component == "PTP":
        exp.restart_ptp_master()
        # Trustworthy and staying so: a monitor that sees the new
        # grandmaster's first samples can say yes and then start over (a
        # next cell's prepare was once refused: "a single offset sample").
        since = []

        def steadily_trustworthy():
            if not exp.clocks_trustworthy():
                since.clear()
                return False
            since[:] = since or [time.monotonic()]
            return time.monotonic() - since[0] >= 3

        lab.wait_for(steadily_trustworthy, 90, "every clock trustworthy again, for 3 s")
        notes.append("grandmaster started again")
    if outcome == "running" and not ping_ok(exp):
        failures.append("vm1 does not reach vm2 through the node")
    problems, _ = check_store(exp)
    failures += problems
    failures += check_counters(exp)
    return {"outcome": ("restored" if restored else "running") if outcome == "running" else outcome,
            "seconds": seconds, "failures": failures, "notes": notes}


def tidy_store(exp):
    """Keeps only the baseline checkpoint and the head (the tmpfs holds a
    few)."""
    listed = try_ctl(exp, "list")
    if not listed:
        return
    for m in listed["checkpoints"]:
        if m["id"] not in (listed.get("head"), getattr(exp, "baseline", None)):
            try_ctl(exp, "delete", m["id"], timeout=60)


def markdown(results):
    lines = ["| component | step | outcome | seconds to recovery | checks | what happened |",
             "|---|---|---|---:|---|---|"]
    for (component, step), r in results:
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        checks = "pass" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])
        lines.append(f"| {component} | {step} | {r['outcome']} | {secs} | {checks} | "
                     f"{'; '.join(r['notes'])} |")
    return "\n".join(lines)


def keep_logs(exp, logs):
    """Copies every daemon's log (and the VMs' consoles) to `logs`."""
    import shutil
    os.makedirs(logs, exist_ok=True)
    for root, _, files in os.walk(exp.dir):
        for f in files:
            if f.endswith(".log"):
                rel = os.path.relpath(os.path.join(root, f), exp.dir).replace("/", "_")
                shutil.copy(os.path.join(root, f), os.path.join(logs, rel))


def take_baseline(exp, log):
    """The checkpoint every cell recovers onto; tried again if it fails (a
    failed resume on a loaded host once did), after the leases resumed
    everything."""
    for _ in range(3):
        r = exp.ctl("checkpoint", "--label", "baseline", check=False)
        if isinstance(r, dict):
            return r["id"]
        log(f"baseline checkpoint failed, again: {r.stderr.strip()}")
        lab.wait_for(lambda: experiment_state(exp) == "running", LEASE_S + 30, "running")
        tidy_store(exp)
    raise RuntimeError("no baseline checkpoint")


def run_matrix(build, cells, log=print, logs=None):
    results = []
    exp = FaultExperiment(build)
    try:
        exp.wait_guests_ready()
        exp.baseline = take_baseline(exp, log)
        for component, step in cells:
            t0 = time.monotonic()
            try:
                r = run_cell(exp, component, step)
            except Exception as e:  # a cell that broke the harness: recorded, and the rest stop
                r = {"outcome": "harness error", "seconds": None, "failures": [repr(e)],
                     "notes": []}
                results.append(((component, step), r))
                log(f"{component} / {step}: harness error {e!r}")
                break
            results.append(((component, step), r))
            secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
            log(f"{component} / {step}: {r['outcome']} in "
                f"{secs} s (cell {time.monotonic() - t0:.0f} s), "
                f"{'pass' if not r['failures'] else 'FAIL ' + '; '.join(r['failures'])}; "
                f"{'; '.join(r['notes'])}", )
            tidy_store(exp)
    finally:
        if logs:
            keep_logs(exp, logs)
        exp.close()
    return results


def parse_cells(text):
    if text == "all":
        return all_cells()
    if text == "short":
        return SHORT
    cells = []
    for item in text.split(","):
        component, step = item.split(":", 1)
        cells.append((component, step))
    return cells


def main():
    build, code = lab.test_main(__doc__, tools=("ip", "ptp4l", "qemu-system-x86_64"))
    if code is not None:
        return code
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", default="all")
    parser.add_argument("--markdown")
    parser.add_argument("--logs", help="keep the daemons' logs in this folder")
    args = parser.parse_args()
    cells = parse_cells(args.cells)
    t0 = time.monotonic()
    results = run_matrix(build, cells, log=lambda s: print(s, flush=True), logs=args.logs)
    table = markdown(results)
    print(table)
    print(f"{len(results)} cells in {time.monotonic() - t0:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    ok = len(results) == len(cells) and all(not r["failures"] for _, r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
