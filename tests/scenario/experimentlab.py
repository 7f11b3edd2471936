"""A whole amber experiment on one machine, for the controller's end-to-end
tests, the demo and the transparency evaluation: a ptp4l pair between two
network namespaces (the slave free-running: it measures, never steers the
clock), one amber-delaynode whose vhost-user ports the endpoint VMs attach
to, one amber-vmhost running the VMs, amber-controller over both, and
amberctl.

Everything lives in one folder and is named with a prefix; close() removes
it, also when a test fails. Only processes started here are ended, by PID."""

import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import time

import amberlab as lab


class Console:
    """A guest's serial console. Commands are typed through QEMU's console
    socket (<run_dir>/serial.sock, connected only to type: QEMU serves one
    client at a time, and a connected client that does not read stalls the
    guest's output); what the guest prints is read from the log QEMU keeps
    of it (<run_dir>/serial.log, appended across restores)."""

    def __init__(self, run_dir):
        self.socket = os.path.join(run_dir, "serial.sock")
        self.log = os.path.join(run_dir, "serial.log")
        self.seq = 0

    def text(self, start=0):
        try:
            with open(self.log, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def send(self, line):
        """Types a line, slowly (the UART takes characters one at a time)."""
        lab.wait_for(lambda: os.path.exists(self.socket), 10, f"console socket {self.socket}")
        data = (line + "\n").encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.socket)
            for i in range(0, len(data), 8):
                s.sendall(data[i:i + 8])
                time.sleep(0.005)
            # Stay a moment, reading what the guest prints meanwhile: QEMU
            # takes typed bytes only as fast as the UART does, and a client
            # that leaves at once may leave them unread.
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                if select.select([s], [], [], 0.05)[0] and not s.recv(65536):
                    break

    def wait_for(self, needle, timeout, start=0):
        """Waits until `needle` is printed after offset `start`; returns the
        text before it."""
        found = lab.wait_for(lambda: needle in self.text(start), timeout,
                             f"{needle!r} on the console {self.log}")
        text = self.text(start)
        return text[:text.find(needle)] if found else text

    def run(self, command, timeout=30):
        """Runs a shell command; returns its output. The end marker is
        computed by the shell, so the echoed command line does not match."""
        self.seq += 1
        start = self.size()
        self.send(f"{command}; echo @@end$(({self.seq}*1))@@")
        out = self.wait_for(f"@@end{self.seq}@@", timeout, start)
        # Drop the echoed command line (the console wraps it at 80 columns).
        echo_end = out.find(f"*1))@@")
        if echo_end >= 0:
            out = out[out.find("\n", echo_end) + 1:]
        return out.replace("\r", "")


def free_port():
    """A port of 127.0.0.1 free for both TCP and UDP now."""
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
    raise RuntimeError("no free port on 127.0.0.1 for both TCP and UDP")


class Process:
    """A daemon of ours with its output in a log file."""

    def __init__(self, argv, log_path, ready, what, timeout=60, netns=None):
        self.argv = argv
        self.log_path = log_path
        self.what = what
        self.log = open(log_path, "a")
        # An earlier run of the same daemon logged here too: only what this
        # one writes counts.
        self.start_offset = os.path.getsize(log_path)
        cmd = (["ip", "netns", "exec", netns] if netns else []) + argv
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        if ready:
            try:
                lab.wait_for(lambda: self.proc.poll() is not None or ready in self.output(),
                             timeout, f"{what} to start")
            except TimeoutError:
                self.stop()
                raise TimeoutError(f"{what} did not start within {timeout}s:\n{self.output()[-3000:]}")
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"{what} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")

    def output(self):
        with open(self.log_path, errors="replace") as f:
            f.seek(self.start_offset)
            return f.read()

    def running(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if not self.log.closed:
            self.log.close()

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()


class PtpPair:
    """ptp4l grandmaster and a free-running slave over a veth pair between
    two namespaces, software timestamps. The slave's management socket is
    what every agent and the controller read master time from."""

    FAST = ["--logSyncInterval=-2", "--logMinDelayReqInterval=-2",
            "--logAnnounceInterval=-2", "--announceReceiptTimeout=3"]

    def __init__(self, prefix, folder):
        self.ns = [f"{prefix}-pm", f"{prefix}-ps"]
        self.ifs = [f"{prefix}-m0", f"{prefix}-s0"]
        self.socket = os.path.join(folder, "ptp-slave.sock")
        self.master_socket = os.path.join(folder, "ptp-master.sock")
        self.procs = []
        self.close()
        try:
            for ns in self.ns:
                lab.sh("ip", "netns", "add", ns)
            lab.sh("ip", "link", "add", self.ifs[0], "netns", self.ns[0], "type", "veth",
                   "peer", "name", self.ifs[1], "netns", self.ns[1])
            for ns, dev in zip(self.ns, self.ifs):
                lab.sh("ip", "-n", ns, "link", "set", dev, "up")
            for i, (sock, extra) in enumerate([(self.master_socket, []),
                                               (self.socket, ["-s", "--free_running=1"])]):
                for f in (sock,):
                    if os.path.exists(f):
                        os.unlink(f)
                argv = ["ptp4l", "-i", self.ifs[i], "-m", "-q", "-S", "-2", f"--uds_address={sock}",
                        *extra, *self.FAST]
                self.procs.append(Process(argv, os.path.join(folder, f"ptp4l-{i}.log"), None,
                                          "ptp4l", netns=self.ns[i]))
                lab.wait_for(lambda: os.path.exists(sock), 10, f"ptp4l socket {sock}")
        except Exception:
            self.close()
            raise

    def kill_master(self):
        self.procs[0].kill()

    def close(self):
        for p in self.procs:
            p.stop()
        self.procs = []
        for ns in self.ns:
            pids = lab.sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            lab.sh("ip", "netns", "del", ns, check=False)


def amberctl(build, controller, *args, json_out=True, check=True, timeout=300, extra=()):
    """Runs amberctl against the controller; returns the parsed JSON reply
    (json_out) or the CompletedProcess."""
    cmd = [os.path.join(build, "controller", "amberctl"), "--controller", controller, *extra]
    if json_out:
        cmd.append("--json")
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"amberctl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    if json_out and r.returncode == 0:
        return json.loads(r.stdout)
    return r


class Experiment:
    """Two endpoint VMs (vm1 10.88.0.1, vm2 10.88.0.2) on vhost-user ports of
    one delay node emulating link `lfn`, their VM-host agent, PTP, and the
    controller. `link` is the config text of the link's both { ... } block."""

    ADDR = ["10.88.0.1", "10.88.0.2"]

    def __init__(self, build, prefix="amb-e2e", link='rate: "100Mbit" delay: "20ms"',
                 topology_extra="", store=None, vm_mib=256, append=("", ""), lcores="0",
                 ptp=True, delaynode_app=(), mgmt=False):
        self.build = os.path.abspath(build)
        self.prefix = prefix
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}-")
        self.store = store or os.path.join(self.dir, "store")
        self.controller_address = f"unix:{self.dir}/controller.sock"
        self.node_address = f"unix:{self.dir}/dn.sock"
        self.vmhost_address = f"unix:{self.dir}/vmhost.sock"
        self.run_dir = os.path.join(self.dir, "vms")
        self.host_id = "h1"
        self.vhost = [os.path.join(self.dir, f"vhost{i}.sock") for i in range(2)]
        self.ptp = None
        self.node = self.vmhost = self.controller = None
        self.consoles = {}
        # A management NIC per VM (user networking, 127.0.0.1 forwards to
        # the guest probe's port 7700): the evaluation's channel to the
        # probes, idle while the experiment runs.
        self.mgmt_port = {f"vm{i + 1}": free_port() for i in range(2)} if mgmt else {}
        try:
            lab.sh(os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "build-guest.sh"),
                   self.build, timeout=900)
            if ptp:
                self.ptp = PtpPair(prefix, self.dir)
            self._start_node(link, lcores, delaynode_app)
            self.vmhost_config = os.path.join(self.dir, "vmhost.conf")
            with open(self.vmhost_config, "w") as f:
                f.write(self._vmhost_text(vm_mib, append))
            self.start_vmhost()
            self.topology = os.path.join(self.dir, "topology.conf")
            self.write_topology(topology_extra)
            self.start_controller()
            lab.wait_for(self.clocks_trustworthy, 60, "every agent's clock to be trustworthy")
        except Exception:
            self.close()
            raise

    # ---- the pieces ----

    def _start_node(self, link, lcores, app):
        config = os.path.join(self.dir, "links.textproto")
        with open(config, "w") as f:
            f.write(f'node_id: "dn1"\nlink {{\n  name: "lfn"\n  port_a: "net_vhost0"\n'
                    f'  port_b: "net_vhost1"\n  both {{ {link} }}\n}}\n')
        eal = ["-l", lcores, "--no-pci", "--file-prefix", self.prefix, "-m", "512",
               "--log-level", "lib.eal:error", "--log-level", "pmd.net.vhost:error"]
        for i, sock in enumerate(self.vhost):
            eal += ["--vdev", f"net_vhost{i},iface={sock},client=0"]
        argv = [os.path.join(self.build, "controller", "amber-delaynode"), *eal, "--",
                "--config", config, "--agent", self.node_address]
        if self.ptp:
            argv += ["--ptp-socket", self.ptp.socket, "--ptp-mode", "free-running"]
        self.node = Process(argv + list(app), os.path.join(self.dir, "delaynode.log"), "running",
                            "amber-delaynode")
        lab.wait_for(lambda: all(os.path.exists(s) for s in self.vhost), 10, "vhost-user sockets")

    def _vmhost_text(self, vm_mib, append):
        guest = os.path.join(self.build, "guest")
        ptp = f'ptp_socket: "{self.ptp.socket}"\nsync_mode: "free_running"\n' if self.ptp else ""
        text = (f'host_id: "{self.host_id}"\nlisten: "{self.vmhost_address}"\n'
                f'run_dir: "{self.run_dir}"\n{ptp}'
                "max_offset_step_ns: 300000\n")
        for i in range(2):
            vm = f"vm{i + 1}"
            mgmt = ""
            extra = append[i]
            if vm in self.mgmt_port:
                p = self.mgmt_port[vm]
                mgmt = (f'  nics {{ kind: USER forwards {{ host_port: {p} guest_port: 7700 }} '
                        f'forwards {{ protocol: UDP host_port: {p} guest_port: 7700 }} }}\n')
                extra += " amber.mgmt=10.0.2.15/24"
            text += (f'vms {{\n  name: "{vm}" memory_mib: {vm_mib}\n'
                     f'  kernel: "{guest}/vmlinuz" initrd: "{guest}/initramfs.cpio.gz"\n'
                     f'  append: "console=ttyS0 quiet amber.ip={self.ADDR[i]}/24 {extra}"\n'
                     f'  nics {{ kind: VHOST_USER endpoint: "{self.vhost[i]}" '
                     f'mac: "52:54:00:88:00:0{i + 1}" }}\n{mgmt}}}\n')
        return text

    def start_vmhost(self, boot=True):
        argv = [os.path.join(self.build, "controller", "amber-vmhost"), "--config",
                self.vmhost_config]
        if not boot:
            argv.append("--no-boot")
        self.vmhost = Process(argv, os.path.join(self.dir, "vmhost.log"), "listening on",
                              "amber-vmhost", timeout=120)

    def move_to_host(self, host_id, vm_mib=256, append=("", "")):
        """Retires the VM-host agent and starts another (its own id, socket
        and run folder) for the same VMs, waiting for a restore: a
        checkpoint can then be restored onto it. The topology is rewritten;
        restart the controller to use it."""
        self.vmhost.stop()
        self.host_id = host_id
        self.vmhost_address = f"unix:{self.dir}/{host_id}.sock"
        self.run_dir = os.path.join(self.dir, f"vms-{host_id}")
        self.consoles = {}
        self.vmhost_config = os.path.join(self.dir, f"{host_id}.conf")
        with open(self.vmhost_config, "w") as f:
            f.write(self._vmhost_text(vm_mib, append))
        self.start_vmhost(boot=False)

    def write_topology(self, extra=""):
        ptp = (f'ptp_socket: "{self.ptp.socket}"\nsync_mode: "free_running"\n' if self.ptp
               else "allow_unsynchronized: true\n")
        with open(self.topology, "w") as f:
            f.write(f'experiment: "e2e"\nlisten: "{self.controller_address}"\n'
                    f'store: "{self.store}"\n{ptp}'
                    f'delay_node {{ id: "dn1" address: "{self.node_address}" link: "lfn" }}\n'
                    f'vm_host {{ id: "{self.host_id}" address: "{self.vmhost_address}" '
                    'vm: "vm1" vm: "vm2" }\n'
                    f"{extra}\n")

    def start_controller(self):
        argv = [os.path.join(self.build, "controller", "amber-controller"), "--topology",
                self.topology]
        self.controller = Process(argv, os.path.join(self.dir, "controller.log"), "serving",
                                  "amber-controller")

    def restart_controller(self, extra=None):
        if self.controller:
            self.controller.stop()
        if extra is not None:
            self.write_topology(extra)
        self.start_controller()

    # ---- using it ----

    def ctl(self, *args, **kw):
        return amberctl(self.build, self.controller_address, *args, **kw)

    def node_ctl(self, *args, **kw):
        return amberctl(self.build, self.controller_address, *args, extra=["--node", "dn1"], **kw)

    def console(self, vm):
        """The serial console of vm1/vm2 (valid across restores)."""
        if vm not in self.consoles:
            self.consoles[vm] = Console(os.path.join(self.run_dir, vm))
        return self.consoles[vm]

    def wait_guests_ready(self, timeout=120):
        def read_text(path):
            try:
                with open(path, errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        for vm in ("vm1", "vm2"):
            log = os.path.join(self.run_dir, vm, "serial.log")
            lab.wait_for(lambda: "amber: guest ready" in read_text(log), timeout, f"{vm} to boot")

    def clocks_trustworthy(self):
        s = self.ctl("status")
        return s["clock_trustworthy"] and all(a["reachable"] and a["clock_trustworthy"]
                                              for a in s["agents"])

    def vm_states(self):
        status = self.ctl("status")
        for a in status["agents"]:
            if a["kind"] == "vm host":
                return dict(v.split(" ", 1) for v in a["vms"])
        return {}

    def node_frozen(self):
        status = self.ctl("status")
        return any(a.get("frozen") for a in status["agents"] if a["kind"] == "delay node")

    def node_stats(self):
        return self.node_ctl("stats")

    def checkpoints_on_disk(self):
        d = os.path.join(self.store, "e2e")
        return sorted(x for x in os.listdir(d) if x.startswith("c")) if os.path.isdir(d) else []

    def close(self):
        for p in (self.controller, self.vmhost, self.node):
            if p:
                p.stop()
        if self.ptp:
            self.ptp.close()
        # QEMU outlives a killed VM-host agent by design: end ours by PID.
        for vm in ("vm1", "vm2"):
            pidfile = os.path.join(self.run_dir, vm, "qemu.pid")
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.run_dir.encode() in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        lab.sh("rm", "-rf", self.dir, check=False)
        lab.remove_dpdk_files(self.prefix)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
