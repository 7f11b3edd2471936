"""A whole amber experiment on one machine, for the controller's end-to-end
tests, the demo and the transparency evaluation: a ptp4l pair between two
network namespaces (the slave free-running: it measures, never steers the
clock), one amber-delaynode whose vhost-user ports the endpoint VMs attach
to, one amber-vmhost running the VMs, amber-controller over both, and
amberctl (Experiment). TestbedExperiment lays it out as on a testbed: the
delay node on af_packet (or af_xdp) ports bound to veths, each VM with its
own amber-vmhost in a network namespace of its own, behind a bridge and a
tap.

Everything lives in one folder and is named with a prefix; close() removes
it, also when a test fails. Only processes started here are ended, by PID."""

import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time

import amberlab
from amberlab import lab


# How long typing waits for QEMU to take a line (a VM stopped for a
# checkpoint or a restore takes nothing meanwhile).
UNREAD_TIMEOUT_S = 120


def unread_bytes(sock):
    """Bytes written to a Unix stream socket that its peer has not read yet
    (SIOCOUTQ: the kernel charges them to the writer until then)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]


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
            # Stay until QEMU has read every typed byte, reading what the
            # guest prints meanwhile. QEMU takes them only as fast as the
            # guest's UART does, and not at all while the VM is stopped (a
            # checkpoint, a restore); a client that leaves before makes it
            # drop the rest with the connection (the guest then got half a
            # command line).
            deadline = time.monotonic() + UNREAD_TIMEOUT_S
            while unread_bytes(s):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"console {self.socket}: QEMU did not read the typed "
                                       f"line within {UNREAD_TIMEOUT_S} s: {line!r}")
                if select.select([s], [], [], 0.02)[0] and not s.recv(65536):
                    break

    def wait_for(self, needle, timeout, start=0):
        """Waits until `needle` is printed after offset `start`; returns the
        text before it."""
        try:
            lab.wait_for(lambda: needle in self.text(start), timeout,
                         f"{needle!r} on the console {self.log}")
        except TimeoutError as e:
            # The console log goes with the test's folder: say what it showed.
            tail = self.text(start)[-800:].replace("\r", "")
            raise TimeoutError(f"{e}; the console printed since:\n{tail}") from None
        text = self.text(start)
        return text[:text.find(needle)]

    def run(self, command, timeout=30):
        """Runs a shell command; returns its output. The end marker is
        computed by the shell, so the echoed command line does not match."""
        self.seq += 1
        start = self.size()
        self.send(f"{command}; echo @@end$(({self.seq}*1))@@")
        out = self.wait_for(f"@@end{self.seq}@@", timeout, start)
        # Drop the echoed command line (the console wraps it at 80 columns).
        echo_end = out.find("*1))@@")
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
                lab.add_netns(ns)
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
            lab.remove_netns_processes(ns)
            lab.sh("ip", "netns", "del", ns, check=False)


def amberctl(build, controller, *args, json_out=True, check=True, timeout=300, extra=()):
    """Runs amberctl against the controller; returns the parsed JSON reply
    (json_out) or the CompletedProcess."""
    cmd = [os.path.join(build, "amberctl", "amberctl"), "--controller", controller, *extra]
    if json_out:
        cmd.append("--json")
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"amberctl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    if json_out and r.returncode == 0:
        return json.loads(r.stdout)
    return r


class VmHost:
    """One VM-host agent: its id, the VMs it runs, its socket, configuration,
    run folder and log, the network namespace it runs in (None: the root
    namespace), and its process once started."""

    def __init__(self, host_id, vms, address, config, run_dir, log_path, netns=None):
        self.id = host_id
        self.vms = list(vms)
        self.address = address
        self.config = config
        self.run_dir = run_dir
        self.log_path = log_path
        self.netns = netns
        self.proc = None

    def vm_dir(self, vm):
        return os.path.join(self.run_dir, vm)

    def start(self, build, boot=True):
        argv = [os.path.join(build, "vmhost", "amber-vmhost"), "--config", self.config]
        if not boot:
            argv.append("--no-boot")
        self.proc = Process(argv, self.log_path, "listening on", f"amber-vmhost {self.id}",
                            timeout=120, netns=self.netns)

    def kill_qemus(self):
        """QEMU outlives a killed VM-host agent by design: end ours by PID."""
        for vm in self.vms:
            try:
                with open(os.path.join(self.vm_dir(vm), "qemu.pid")) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.run_dir.encode() in f.read():
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


class Experiment:
    """Two endpoint VMs (vm1 10.88.0.1, vm2 10.88.0.2) on vhost-user ports of
    one delay node emulating link `lfn`, their VM-host agent, PTP, and the
    controller. `link` is the config text of the link's both { ... } block,
    `vmhost_extra` lines for every VM-host agent's configuration.
    TestbedExperiment lays the same experiment out as on a testbed."""

    ADDR = ["10.88.0.1", "10.88.0.2"]
    VMS = ["vm1", "vm2"]

    def __init__(self, build, prefix="amb-e2e", link='rate: "100Mbit" delay: "20ms"',
                 topology_extra="", store=None, vm_mib=256, append=("", ""), lcores="0",
                 ptp=True, delaynode_app=(), mgmt=False, vmhost_extra="", align_network=True,
                 mtu=1500, qemu_trace=()):
        self.build = os.path.abspath(build)
        self.qemu_trace = tuple(qemu_trace)
        if not 576 <= mtu <= 9710:
            raise ValueError(f"MTU {mtu}: the delay node carries frames of 594 to 9728 bytes")
        self.mtu = mtu
        self.align_network = align_network
        self.prefix = prefix
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}-")
        self.store = store or os.path.join(self.dir, "store")
        self.controller_address = f"unix:{self.dir}/controller.sock"
        self.node_address = f"unix:{self.dir}/dn.sock"
        self.vmhost_extra = vmhost_extra
        self.vhost = []
        self.hosts = []
        self.ptp = None
        self.node = self.controller = None
        self.consoles = {}
        # A management NIC per VM (user networking, 127.0.0.1 forwards to
        # the guest probe's port 7700): the evaluation's channel to the
        # probes, idle while the experiment runs.
        self.mgmt_port = {vm: free_port() for vm in self.VMS} if mgmt else {}
        try:
            lab.sh(os.path.join(amberlab.SOURCE_DIR, "scripts", "build-guest.sh"),
                   self.build, timeout=900)
            if ptp:
                self.ptp = PtpPair(prefix, self.dir)
            self._start_network()
            self.hosts = self._make_hosts()
            self._start_node(link, lcores, delaynode_app)
            for host in self.hosts:
                with open(host.config, "w") as f:
                    f.write(self._vmhost_text(host, vm_mib, append))
            self.vm_mib, self.append = vm_mib, append
            self.start_vmhost()
            self.topology = os.path.join(self.dir, "topology.conf")
            self.write_topology(topology_extra)
            self.start_controller()
            lab.wait_for(self.clocks_trustworthy, 60, "every agent's clock to be trustworthy")
        except Exception:
            self.close()
            raise

    # ---- the pieces (TestbedExperiment overrides the _methods) ----

    def _start_network(self):
        """What joins the VMs to the delay node: vhost-user sockets it serves."""
        self.vhost = [os.path.join(self.dir, f"vhost{i}.sock") for i in range(len(self.VMS))]

    def _make_hosts(self):
        return [VmHost("h1", self.VMS, f"unix:{self.dir}/vmhost.sock",
                       os.path.join(self.dir, "vmhost.conf"), os.path.join(self.dir, "vms"),
                       os.path.join(self.dir, "vmhost.log"))]

    def _node_ports(self):
        """The delay node's port per VM: (port name, its --vdev)."""
        return [(f"net_vhost{i}", f"net_vhost{i},iface={sock},client=0")
                for i, sock in enumerate(self.vhost)]

    def _nic_text(self, i, mac):
        """vm<i+1>'s NIC on the link, in the agent's configuration."""
        return f'nics {{ kind: VHOST_USER endpoint: "{self.vhost[i]}" mac: "{mac}" }}'

    def _close_network(self):
        """Removes what _start_network made (vhost-user sockets: with the folder)."""

    def _start_node(self, link, lcores, app):
        ports = self._node_ports()
        config = os.path.join(self.dir, "links.textproto")
        # Jumbo frames: the ports carry them, and the frame pool counts the
        # link's bytes in frames of that size.
        most = self._node_max_frame()
        frames = (f"max_frame_bytes: {most}\nsizing_frame_bytes: {self.mtu + 18}\n"
                  if most > 1518 else "")
        with open(config, "w") as f:
            f.write(f'node_id: "dn1"\n{frames}link {{\n  name: "lfn"\n  port_a: "{ports[0][0]}"\n'
                    f'  port_b: "{ports[1][0]}"\n  both {{ {link} }}\n}}\n')
        memory = "512" if self.mtu <= 1500 else "1024"
        eal = ["-l", lcores, "--no-pci", "--file-prefix", self.prefix, "-m", memory,
               "--log-level", "lib.eal:error", "--log-level", "pmd.net.vhost:error"]
        for _, vdev in ports:
            eal += ["--vdev", vdev]
        argv = [os.path.join(self.build, "delaynode", "amber-delaynode"), *eal, "--",
                "--config", config, "--agent", self.node_address, "--store", self.store]
        if self.ptp:
            argv += ["--ptp-socket", self.ptp.socket, "--ptp-mode", "free-running"]
        self.node = Process(argv + list(app), os.path.join(self.dir, "delaynode.log"), "running",
                            "amber-delaynode")
        lab.wait_for(lambda: all(os.path.exists(s) for s in self.vhost), 10, "vhost-user sockets")

    def _node_max_frame(self):
        """The delay node's max_frame_bytes for the experiment's MTU."""
        return self.mtu + 18 if self.mtu > 1500 else 1518

    def _vmhost_text(self, host, vm_mib, append):
        guest = os.path.join(self.build, "guest")
        ptp = f'ptp_socket: "{self.ptp.socket}"\nsync_mode: "free_running"\n' if self.ptp else ""
        text = (f'host_id: "{host.id}"\nlisten: "{host.address}"\n'
                f'run_dir: "{host.run_dir}"\nstore: "{self.store}"\n{ptp}'
                f"max_offset_step_ns: 300000\n{self.vmhost_extra}")
        mtu = f" amber.mtu={self.mtu}" if self.mtu != 1500 else ""
        for vm in host.vms:
            i = self.VMS.index(vm)
            mgmt = ""
            extra = append[i]
            if vm in self.mgmt_port:
                p = self.mgmt_port[vm]
                mgmt = (f'  nics {{ kind: USER forwards {{ host_port: {p} guest_port: 7700 }} '
                        f'forwards {{ protocol: UDP host_port: {p} guest_port: 7700 }} }}\n')
                extra += " amber.mgmt=10.0.2.15/24"
            text += (f'vms {{\n  name: "{vm}" memory_mib: {vm_mib}\n'
                     f'  kernel: "{guest}/vmlinuz" initrd: "{guest}/initramfs.cpio.gz"\n'
                     f'  append: "console=ttyS0 quiet amber.ip={self.ADDR[i]}/24{mtu} {extra}"\n'
                     f'  {self._nic_text(i, f"52:54:00:88:00:0{i + 1}")}\n{mgmt}'
                     + "".join(f'  qemu_trace: "{t}"\n' for t in self.qemu_trace) + "}\n")
        return text

    def start_vmhost(self, boot=True):
        """Starts every VM-host agent that is not running (again, after a
        kill: it adopts its VMs)."""
        for host in self.hosts:
            if host.proc is None or not host.proc.running():
                host.start(self.build, boot)

    def reconfigure_vmhosts(self, vmhost_extra):
        """Restarts every VM-host agent with other lines of configuration
        (vmhost_extra): each is killed and started again, and adopts its
        running VMs, as after a crash. Waits until the controller sees every
        clock trustworthy again."""
        self.vmhost_extra = vmhost_extra
        for host in self.hosts:
            host.proc.kill()
            with open(host.config, "w") as f:
                f.write(self._vmhost_text(host, self.vm_mib, self.append))
            host.start(self.build)
        lab.wait_for(self.clocks_trustworthy, 60, "every agent's clock to be trustworthy")

    def move_to_host(self, host_id, vm_mib=256, append=("", "")):
        """Retires the VM-host agent and starts another (its own id, socket
        and run folder) for the same VMs, waiting for a restore: a
        checkpoint can then be restored onto it. The topology is rewritten;
        restart the controller to use it. Only with one VM-host agent."""
        if len(self.hosts) != 1:
            raise RuntimeError("move_to_host: the experiment has more than one VM-host agent")
        old = self.hosts[0]
        old.proc.stop()
        host = VmHost(host_id, old.vms, f"unix:{self.dir}/{host_id}.sock",
                      os.path.join(self.dir, f"{host_id}.conf"),
                      os.path.join(self.dir, f"vms-{host_id}"), old.log_path, old.netns)
        self.hosts = [host]
        self.consoles = {}
        with open(host.config, "w") as f:
            f.write(self._vmhost_text(host, vm_mib, append))
        self.start_vmhost(boot=False)

    def write_topology(self, extra=""):
        ptp = (f'ptp_socket: "{self.ptp.socket}"\nsync_mode: "free_running"\n' if self.ptp
               else "allow_unsynchronized: true\n")
        hosts = "".join(f'vm_host {{ id: "{h.id}" address: "{h.address}" '
                        + "".join(f'vm: "{vm}" ' for vm in h.vms) + "}\n" for h in self.hosts)
        # vm1 is behind port_a, vm2 behind port_b: the node aligns the
        # direction to each to that VM's pause (DelayNodeRef.attach).
        vms = [vm for h in self.hosts for vm in h.vms]
        attach = "".join(f' attach {{ link: "lfn" end: "{end}" vm: "{vm}" }}'
                         for end, vm in zip("ab", vms)) if self.align_network else ""
        with open(self.topology, "w") as f:
            f.write(f'experiment: "e2e"\nlisten: "{self.controller_address}"\n'
                    f'store: "{self.store}"\n{ptp}'
                    f'delay_node {{ id: "dn1" address: "{self.node_address}" link: "lfn"{attach} }}\n'
                    f"{hosts}{extra}\n")

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

    # ---- where things are ----

    @property
    def vmhost(self):
        """The (first) VM-host agent's process; vmhosts: every one."""
        return self.hosts[0].proc if self.hosts else None

    @property
    def vmhosts(self):
        return [h.proc for h in self.hosts if h.proc]

    @property
    def run_dir(self):
        """Holds each VM's run folder, <run_dir>/<vm> (serial.sock, serial.log)."""
        return self.hosts[0].run_dir

    def host_of(self, vm):
        return next(h for h in self.hosts if vm in h.vms)

    def vm_dir(self, vm):
        return self.host_of(vm).vm_dir(vm)

    def probe_netns(self, vm):
        """The network namespace where vm's management port listens (None:
        this one): GuestProbe(port, netns=exp.probe_netns(vm))."""
        return self.host_of(vm).netns

    # ---- using it ----

    def ctl(self, *args, **kw):
        return amberctl(self.build, self.controller_address, *args, **kw)

    def node_ctl(self, *args, **kw):
        return amberctl(self.build, self.controller_address, *args, extra=["--node", "dn1"], **kw)

    def console(self, vm):
        """The serial console of vm1/vm2 (valid across restores)."""
        if vm not in self.consoles:
            self.consoles[vm] = Console(self.vm_dir(vm))
        return self.consoles[vm]

    def wait_guests_ready(self, timeout=120):
        def read_text(path):
            try:
                with open(path, errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        for vm in self.VMS:
            log = os.path.join(self.vm_dir(vm), "serial.log")
            lab.wait_for(lambda: "amber: guest ready" in read_text(log), timeout, f"{vm} to boot")

    def clocks_trustworthy(self):
        s = self.ctl("status")
        return s["clock_trustworthy"] and all(a["reachable"] and a["clock_trustworthy"]
                                              for a in s["agents"])

    def vm_states(self):
        """{vm: QEMU's run state} over every VM-host agent."""
        states = {}
        for a in self.ctl("status")["agents"]:
            if a["kind"] == "vm host":
                states.update(v.split(" ", 1) for v in a["vms"])
        return states

    def node_frozen(self):
        status = self.ctl("status")
        return any(a.get("frozen") for a in status["agents"] if a["kind"] == "delay node")

    def node_stats(self):
        return self.node_ctl("stats")

    def node_telemetry(self, command):
        """The node's DPDK telemetry socket (/amber/stats, ...), as JSON."""
        return lab.telemetry(self.prefix, command)

    def checkpoints_on_disk(self):
        d = os.path.join(self.store, "e2e")
        return sorted(x for x in os.listdir(d) if x.startswith("c")) if os.path.isdir(d) else []

    def close(self):
        for p in (self.controller, *self.vmhosts, self.node):
            if p:
                p.stop()
        if self.ptp:
            self.ptp.close()
        for host in self.hosts:
            host.kill_qemus()
        self._close_network()
        lab.sh("rm", "-rf", self.dir, check=False)
        lab.remove_dpdk_files(self.prefix)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TestbedExperiment(Experiment):
    """The same experiment laid out as on a testbed, the delay node a machine
    with NICs: amber-delaynode in the root namespace on net_af_packet ports
    (pmd="af_xdp": net_af_xdp) bound to veths, and each VM on a host of its
    own: a network namespace (<prefix>-h1, -h2, lab.TapHosts) where its
    agent (h1, h2) and QEMU run, the VM's tap bridged with the veth's peer.
    QEMU's tap backend moves the frames itself; vhost_net asks for the
    kernel's vhost-net (vhost=on: needs /dev/vhost-net); rx_queue_size
    sets the guests' receive rings (None: the VM host's default, 1024). Each tap holds
    tap_txqueuelen frames for a VM that is stopped: at high bandwidth-delay
    products a naive checkpoint overflows it.

    The management NICs' forwards listen on 127.0.0.1 inside each host's
    namespace (GuestProbe(port, netns=exp.probe_netns(vm))); run_dir holds
    a link to each VM's folder in its agent's run folder. The agents'
    sockets, PTP's and QEMU's are UNIX sockets: they work across the
    namespaces."""

    def __init__(self, build, prefix="amb-tb", pmd="af_packet", tap_txqueuelen=1000,
                 vhost_net=False, rx_queue_size=None, **kw):
        self.pmd = pmd
        self.tap_txqueuelen = tap_txqueuelen
        self.vhost_net = vhost_net
        self.rx_queue_size = rx_queue_size
        self.net = None
        super().__init__(build, prefix=prefix, **kw)

    def _start_network(self):
        self.net = lab.TapHosts(self.prefix, len(self.VMS), self.tap_txqueuelen, self.mtu)

    def _make_hosts(self):
        hosts = []
        for i, vm in enumerate(self.VMS):
            h = f"h{i + 1}"
            hosts.append(VmHost(h, [vm], f"unix:{self.dir}/{h}.sock",
                                os.path.join(self.dir, f"{h}.conf"),
                                os.path.join(self.dir, f"vms-{h}"),
                                os.path.join(self.dir, f"vmhost-{h}.log"), self.net.ns[i]))
        os.makedirs(self.run_dir)
        for host in hosts:
            for vm in host.vms:
                os.symlink(host.vm_dir(vm), os.path.join(self.run_dir, vm))
        return hosts

    def _node_ports(self):
        return [(f"net_{self.pmd}{i}", lab.kernel_port_vdev(i, iface, self.pmd, self.mtu))
                for i, iface in enumerate(self.net.node_if)]

    def _node_max_frame(self):
        # af_packet: the mbufs hold a whole ring slot but its header.
        if self.pmd == "af_packet" and self.mtu > 1500:
            return lab.af_packet_slot(self.mtu) - 32
        return super()._node_max_frame()

    def _nic_text(self, i, mac):
        vhost = " vhost_net: true" if self.vhost_net else ""
        if self.rx_queue_size:
            vhost += f" rx_queue_size: {self.rx_queue_size}"
        return f'nics {{ kind: TAP endpoint: "{self.net.tap[i]}" mac: "{mac}"{vhost} }}'

    def _close_network(self):
        if self.net:
            self.net.close()

    @property
    def run_dir(self):
        return os.path.join(self.dir, "vms")
