"""Endpoint VMs for the transparency measurements without the controller:
QEMU started with the command line vm-checkpoint/vm.cpp builds (memfd
guest RAM shared for vhost-user, vectors=0 under TCG, -rtc clock=vm, the
serial console and QMP as UNIX sockets in the run directory), plus a
management NIC (user networking, loopback port forwards to the guest
probe). QMP stop/cont at an instant, save to a file by migration and restore
in a new QEMU process. Only the QEMU processes started here are ended, by
PID."""

import json
import os
import select
import shutil
import socket
import subprocess
import time

PROBE_GUEST_PORT = 7700


class Qmp:
    """A QMP connection: commands and the events that arrive meanwhile."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("QMP: no answer")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("QMP closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def send(self, command, **args):
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def reply(self, timeout=10):
        while True:
            m = self._read(timeout)
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise RuntimeError(f"QMP error: {m['error']}")
            elif "return" in m:
                return m["return"]

    def execute(self, command, timeout=10, **args):
        self.send(command, **args)
        return self.reply(timeout)

    def wait_event(self, name, timeout=10):
        """The first not yet consumed event `name`; its host time in ns
        (QEMU's timestamp, CLOCK_REALTIME) is event["host_ns"]."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    del self.events[i]
                    ts = e["timestamp"]
                    e["host_ns"] = ts["seconds"] * 1_000_000_000 + ts["microseconds"] * 1000
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"QMP: no {name} event")
            self.events.append(self._read(left))

    def close(self):
        self.sock.close()


class Vm:
    """nics: [("vhost", socket_path), ...] experiment NICs (eth0, ...);
    the management NIC comes last and forwards 127.0.0.1:mgmt_port."""

    def __init__(self, name, run_dir, guest_dir, append, nics, mgmt_port, mac_id, mem_mb=256):
        self.name = name
        self.run_dir = run_dir
        self.mgmt_port = mgmt_port
        os.makedirs(run_dir, exist_ok=True)
        cmd = ["qemu-system-x86_64", "-name", f"{name},debug-threads=on", "-machine", "q35",
               "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg",
               "-m", f"{mem_mb}M", "-smp", "1",
               "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
               "-numa", "node,memdev=mem", "-rtc", "base=utc,clock=vm",
               "-kernel", os.path.join(guest_dir, "vmlinuz"),
               "-initrd", os.path.join(guest_dir, "initramfs.cpio.gz"),
               "-append", f"console=ttyS0 quiet {append} amber.mgmt=10.0.2.15/24"]
        for i, (kind, where) in enumerate(nics):
            assert kind == "vhost"
            cmd += ["-chardev", f"socket,id=chrnet{i},path={where}",
                    "-netdev", f"vhost-user,id=net{i},chardev=chrnet{i}",
                    "-device", f"virtio-net-pci,netdev=net{i},romfile=,"
                               f"mac=52:54:00:8e:{mac_id:02x}:{i + 1:02x},vectors=0"]
        m = len(nics)
        # No restrict=on: with it QEMU 7.2's slirp drops the guest's UDP
        # replies to a forwarded port (measured); the guest has no route out.
        cmd += ["-netdev", f"user,id=net{m},hostfwd=tcp:127.0.0.1:{mgmt_port}-:{PROBE_GUEST_PORT},"
                           f"hostfwd=udp:127.0.0.1:{mgmt_port}-:{PROBE_GUEST_PORT}",
                "-device", f"virtio-net-pci,netdev=net{m},romfile=,mac=52:54:00:8f:{mac_id:02x}:01"]
        cmd += ["-chardev", f"socket,id=ser0,path={self.serial_socket},server=on,wait=off,"
                            f"logfile={self.serial_log},logappend=on", "-serial", "chardev:ser0",
                "-chardev", f"socket,id=qmp0,path={self.qmp_socket},server=on,wait=off",
                "-mon", "chardev=qmp0,mode=control"]
        self.cmd = cmd
        self.proc = None
        self.qmp = None
        self._start(incoming=False)

    qmp_socket = property(lambda self: os.path.join(self.run_dir, "qmp.sock"))
    serial_socket = property(lambda self: os.path.join(self.run_dir, "serial.sock"))
    serial_log = property(lambda self: os.path.join(self.run_dir, "serial.log"))

    def _start(self, incoming):
        for p in (self.qmp_socket, self.serial_socket):
            if os.path.exists(p):
                os.unlink(p)
        cmd = self.cmd + (["-S", "-incoming", "defer"] if incoming else [])
        log = open(os.path.join(self.run_dir, "qemu.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(self.qmp_socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"QEMU for {self.name} did not start: {self.qemu_log_tail()}")
            time.sleep(0.02)
        self.qmp = Qmp(self.qmp_socket)
        self.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 100 << 30})

    def qemu_log_tail(self):
        try:
            with open(os.path.join(self.run_dir, "qemu.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def console_text(self):
        try:
            with open(self.serial_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_console(self, needle, timeout, start=0):
        """Waits for `needle` in the console log after offset `start`."""
        deadline = time.monotonic() + timeout
        while needle not in self.console_text()[start:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: QEMU exited: {self.qemu_log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {needle!r} on the console within {timeout}s")
            time.sleep(0.05)

    def type(self, command):
        """Types a command on the console (connects only for it)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.serial_socket)
            line = (command + "\n").encode()
            for i in range(0, len(line), 8):
                s.sendall(line[i:i + 8])
                time.sleep(0.005)
            end = time.monotonic() + 0.3
            while time.monotonic() < end:  # unread console output stalls the guest
                if select.select([s], [], [], 0.05)[0] and not s.recv(65536):
                    break

    def run(self, command, timeout=30):
        """Types `command` and waits until it has finished (a marker the
        shell computes, so the echoed command line does not match)."""
        tag = int(time.monotonic() * 1000) % 1000000
        start = len(self.console_text())
        self.type(f"{command}; echo D-$(({tag}+1))-D")
        self.wait_console(f"D-{tag + 1}-D", timeout, start)

    def save(self, path, timeout=120):
        """Migrates the stopped VM's state into `path`; returns seconds taken."""
        t0 = time.monotonic()
        self.qmp.execute("migrate", uri=f"exec:cat > {path}")
        while True:
            st = self.qmp.execute("query-migrate")
            if st.get("status") == "completed":
                return time.monotonic() - t0
            if st.get("status") in ("failed", "cancelled") or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name}: migration {st}")
            time.sleep(0.02)

    def restore(self, path, timeout=60):
        """Ends this QEMU and starts a new one with the same command line
        from `path`, left paused; returns seconds taken."""
        t0 = time.monotonic()
        self.kill()
        self._start(incoming=True)
        self.qmp.execute("migrate-incoming", uri=f"exec:cat {path}")
        while True:
            st = self.qmp.execute("query-status")
            if st["status"] in ("paused", "postmigrate", "prelaunch") and \
                    self.qmp.execute("query-migrate").get("status") == "completed":
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name}: restore stuck in {st}")
            time.sleep(0.02)

    def kill(self):
        if self.qmp:
            try:
                self.qmp.close()
            except OSError:
                pass
            self.qmp = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self):
        self.kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def stop_all(vms, at_ns=None):
    """Sends `stop` to every VM back to back (at host instant at_ns,
    CLOCK_REALTIME, if given); returns {vm: (STOP event host ns, host ns
    the reply arrived)}. QEMU sends the event after stopping the guest
    clock, the vCPUs and the vhost-user back end, the reply after that."""
    return _step_all(vms, "stop", "STOP", at_ns)


def cont_all(vms, at_ns=None):
    """As stop_all() with `cont`: QEMU sends RESUME before it restarts the
    guest clock, the vhost-user back end and the vCPUs, the reply after."""
    return _step_all(vms, "cont", "RESUME", at_ns)


def _step_all(vms, command, event, at_ns):
    if at_ns is not None:
        while True:
            left = at_ns - time.time_ns()
            if left <= 0:
                break
            time.sleep(left / 1e9 - 0.0005 if left > 1_000_000 else 0)
    for vm in vms:
        vm.qmp.send(command)
    replied = {}
    for vm in vms:
        vm.qmp.reply()
        replied[vm.name] = time.time_ns()
    return {vm.name: (vm.qmp.wait_event(event)["host_ns"], replied[vm.name]) for vm in vms}


def free_port():
    """A port of 127.0.0.1 free for TCP and UDP when asked."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free loopback port")
