"""Real kernel plumbing for amber's scenario tests and benchmarks: network
namespaces joined through a delay node by veth pairs, the amber-delaynode
process, and the tools that measure across it (ping, iperf3).

Everything created is named with a prefix and removed by close(), also
when a test fails (use the objects as context managers). Only processes
started here are ended, by PID."""

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


# Namespaces this process created: removed at exit whatever ended it, also
# meson's SIGTERM on a timeout (it would otherwise kill the test before its
# tearDown runs and leave them on the machine).
_NETNS = []


def add_netns(ns):
    sh("ip", "netns", "add", ns)
    _NETNS.append(ns)


def _remove_netns_left():
    for ns in _NETNS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


atexit.register(_remove_netns_left)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def sh(*args, check=True, capture=True, timeout=60):
    r = subprocess.run(list(args), capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def offloads_off(dev, netns=None):
    cmd = ["ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    sh(*cmd, check=False)


class TwoHosts:
    """Two namespaces, each with one veth whose peer stays in the root
    namespace for the delay node to attach to:

        [ns1: v1 10.77.X.1] === h1 ~ delay node ~ h2 === [ns2: v2 10.77.X.2]

    `mtu` is every veth end's (9000: jumbo frames).
    """

    def __init__(self, prefix, subnet=77, mtu=1500):
        self.prefix = prefix
        self.ns = [f"{prefix}-ns1", f"{prefix}-ns2"]
        self.host_if = [f"{prefix}-h1", f"{prefix}-h2"]
        self.ns_if = [f"{prefix}-v1", f"{prefix}-v2"]
        self.addr = [f"10.{subnet}.0.1", f"10.{subnet}.0.2"]
        self.close()  # leftovers of a crashed earlier run
        try:
            for i in range(2):
                add_netns(self.ns[i])
                sh("ip", "link", "add", self.host_if[i], "type", "veth", "peer", "name", self.ns_if[i])
                sh("ip", "link", "set", self.ns_if[i], "netns", self.ns[i])
                sh("ip", "link", "set", self.host_if[i], "mtu", str(mtu), "up")
                sh("sysctl", "-qw", f"net.ipv6.conf.{self.host_if[i]}.disable_ipv6=1", check=False)
                offloads_off(self.host_if[i])
                ex = ["ip", "netns", "exec", self.ns[i]]
                sh(*ex, "ip", "addr", "add", f"{self.addr[i]}/24", "dev", self.ns_if[i])
                sh(*ex, "ip", "link", "set", self.ns_if[i], "mtu", str(mtu), "up")
                sh(*ex, "ip", "link", "set", "lo", "up")
                offloads_off(self.ns_if[i], self.ns[i])
                # Long fat links need windows beyond Linux's 6 MB default
                # (1 Gbit/s x 100 ms is 12.5 MB).
                for knob in ("tcp_rmem", "tcp_wmem"):
                    sh(*ex, "sysctl", "-qw", f"net.ipv4.{knob}=4096 131072 67108864", check=False)
        except Exception:
            self.close()
            raise

    def run(self, i, *args, **kw):
        return sh("ip", "netns", "exec", self.ns[i], *args, **kw)

    def popen(self, i, *args, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns[i], *args], **kw)

    def close(self):
        for i in range(2):
            sh("ip", "link", "del", self.host_if[i], check=False)
            sh("ip", "netns", "del", self.ns[i], check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TapHosts:
    """VM hosts as on a testbed, the delay node a machine of its own in the
    root namespace. Host i is namespace ns[i] holding the peer of a veth
    whose root end node_if[i] a delay-node port attaches to, bridged with a
    persistent tap tap[i] that the host's QEMU opens:

        node port ~ n1 === [h1: e1 - bridge b1 - tap t1 ~ vm1]

    (names carry the prefix). Every end has its offloads off: the node's
    PMD does not do them and TCP hangs otherwise. The taps keep
    `txqueuelen` frames for a VM that is not reading (stopped). `mtu` is
    every end's (veths, bridge, tap): 9000 for jumbo frames."""

    def __init__(self, prefix, count=2, txqueuelen=1000, mtu=1500):
        if len(prefix) > 12:
            raise ValueError(f"prefix {prefix!r}: interface names would exceed 15 characters")
        self.ns = [f"{prefix}-h{i + 1}" for i in range(count)]
        self.node_if = [f"{prefix}-n{i + 1}" for i in range(count)]
        self.ns_if = [f"{prefix}-e{i + 1}" for i in range(count)]
        self.bridge = [f"{prefix}-b{i + 1}" for i in range(count)]
        self.tap = [f"{prefix}-t{i + 1}" for i in range(count)]
        self.close()  # leftovers of a crashed earlier run
        try:
            for i, ns in enumerate(self.ns):
                ip = ["ip", "-n", ns]
                add_netns(ns)
                sh("ip", "link", "add", self.node_if[i], "type", "veth", "peer", "name",
                   self.ns_if[i], "netns", ns)
                sh("sysctl", "-qw", f"net.ipv6.conf.{self.node_if[i]}.disable_ipv6=1", check=False)
                sh("ip", "link", "set", self.node_if[i], "mtu", str(mtu), "up")
                offloads_off(self.node_if[i])
                # No IPv6 chatter of the host's own through the node.
                for conf in ("all", "default"):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                       f"net.ipv6.conf.{conf}.disable_ipv6=1", check=False)
                sh(*ip, "link", "set", "lo", "up")  # QEMU's port forwards listen there
                sh(*ip, "link", "add", self.bridge[i], "type", "bridge", "stp_state", "0")
                sh(*ip, "tuntap", "add", "dev", self.tap[i], "mode", "tap")
                sh(*ip, "link", "set", self.tap[i], "txqueuelen", str(txqueuelen))
                for dev in (self.ns_if[i], self.tap[i]):
                    sh(*ip, "link", "set", dev, "master", self.bridge[i])
                for dev in (self.ns_if[i], self.tap[i], self.bridge[i]):
                    sh(*ip, "link", "set", dev, "mtu", str(mtu), "up")
                    offloads_off(dev, ns)
        except Exception:
            self.close()
            raise

    def close(self):
        for i, ns in enumerate(self.ns):
            remove_netns_processes(ns)
            sh("ip", "-n", ns, "tuntap", "del", "dev", self.tap[i], "mode", "tap", check=False)
            sh("ip", "link", "del", self.node_if[i], check=False)  # and its peer
            sh("ip", "netns", "del", ns, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def remove_netns_processes(ns, timeout=10):
    """Ends, by PID, whatever still runs in namespace `ns` (one of ours,
    named with our prefix) and waits until none is left: the namespace and
    its interfaces go only with its last process."""
    if not os.path.exists(f"/run/netns/{ns}"):
        return
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + timeout
    while sh("ip", "netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)


def kernel_port_vdev(i, iface, pmd="af_packet", mtu=1500):
    """The --vdev of delay-node port i on a kernel interface: net_af_packet<i>
    or net_af_xdp<i> (its port name is the part before the comma), for
    frames of up to `mtu` + 18 bytes."""
    if pmd == "af_xdp":
        if mtu > 3000:
            raise ValueError(f"MTU {mtu}: af_xdp's frames are one 4 KiB page; use af_packet")
        return f"net_af_xdp{i},iface={iface},start_queue=0,queue_count=1"
    if pmd != "af_packet":
        raise ValueError(f"kernel port PMD {pmd!r}: expected af_packet or af_xdp")
    # A deeper socket ring than the PMD's default 512 frames rides out the
    # moments the loop is descheduled.
    if mtu <= 1500:
        return f"net_af_packet{i},iface={iface},qpairs=1,framecnt=8192"
    # Jumbo frames: a ring slot holds a whole frame (the PMD's default slot
    # is 2 KiB), four slots to a block of whole pages.
    slot = af_packet_slot(mtu)
    return (f"net_af_packet{i},iface={iface},qpairs=1,blocksz={4 * slot},framesz={slot},"
            f"framecnt=2048")


def af_packet_slot(mtu):
    """net_af_packet's ring slot (framesz) for frames of an MTU: the frame,
    its 32 bytes of slot header and padding, in whole KiB. The PMD wants the
    delay node's mbufs to hold all of it but the header
    (max_frame_bytes >= slot - 32)."""
    return -(-(mtu + 18 + 32) // 1024) * 1024


def telemetry(prefix, command):
    """Sends one command to the DPDK telemetry socket of the node started
    with --file-prefix `prefix`, returns its JSON."""
    path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    s.recv(16384)  # greeting
    s.send(command.encode())
    reply = json.loads(s.recv(1 << 20).decode())
    s.close()
    return reply[command.split(",")[0]]


class DelayNode:
    """amber-delaynode on af_packet ports bound to the given interfaces
    (ring slots for frames of `mtu`: the config's max_frame_bytes must be
    af_packet_slot(mtu) - 32 for more than 1500)."""

    def __init__(self, binary, config_text, interfaces, prefix, lcores="0", extra_eal=(),
                 agent=None, app=(), mtu=1500):
        self.prefix = prefix
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}-")
        self.config = os.path.join(self.dir, "links.textproto")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self.dir, "delaynode.log")
        cores = ["--lcores", lcores] if "@" in lcores else ["-l", lcores]
        eal = [*cores, "--no-pci", "--file-prefix", prefix, "-m", "512",
               "--log-level", "lib.eal:error"]
        for i, iface in enumerate(interfaces):
            eal += ["--vdev", kernel_port_vdev(i, iface, mtu=mtu)]
        eal += list(extra_eal)
        self.log = open(self.log_path, "w")
        extra_app = app
        app = ["--config", self.config]
        if agent:
            app += ["--agent", agent]
        app += list(extra_app)
        self.proc = subprocess.Popen([binary, *eal, "--", *app],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.proc.poll() is not None or "running" in self.output(), 30,
                     "amber-delaynode to start")
            if self.proc.poll() is not None:
                raise RuntimeError(f"amber-delaynode exited ({self.proc.returncode}):\n{self.output()}")
        except Exception:
            self.close()
            raise

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def telemetry(self, command):
        return telemetry(self.prefix, command)

    def drops(self):
        """Every frame the node dropped: in its pipes, by cause, and at its
        ports (socket ring overflows, no mbuf, tx errors)."""
        st = self.telemetry("/amber/stats")
        n = sum(v for d in st.values() for k, v in d.items() if k.startswith("dropped_"))
        ports = self.telemetry("/amber/ports")
        return n + sum(p["rx_missed"] + p["rx_no_mbuf"] + p["tx_errors"] for p in ports.values())

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
            self.final_output = self.output()
        sh("rm", "-rf", self.dir, check=False)
        remove_dpdk_files(self.prefix)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def remove_dpdk_files(prefix):
    """What a DPDK process with --file-prefix `prefix` leaves behind: its
    runtime folder and hugepage files."""
    sh("rm", "-rf", f"/var/run/dpdk/{prefix}", check=False)
    for f in os.listdir("/dev/hugepages") if os.path.isdir("/dev/hugepages") else []:
        if f.startswith(prefix):
            os.unlink(os.path.join("/dev/hugepages", f))


def ping(hosts, src, dst_addr, count, interval=0.05, timeout=60):
    r = hosts.run(src, "ping", "-q", "-c", str(count), "-i", str(interval), "-W", "2", dst_addr,
                  check=False, timeout=timeout)
    loss = re.search(r"([\d.]+)% packet loss", r.stdout)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    return {
        "loss": float(loss.group(1)) / 100 if loss else 1.0,
        "min_ms": float(rtt.group(1)) if rtt else None,
        "avg_ms": float(rtt.group(2)) if rtt else None,
        "max_ms": float(rtt.group(3)) if rtt else None,
        "output": r.stdout,
    }


def iperf3(hosts, server, client, seconds=5, reverse=False, udp_rate=None, port=5201, extra=()):
    """Runs one iperf3 test; returns the parsed JSON of the client (extra:
    more client arguments, e.g. ("-i", "0.25"))."""
    srv = hosts.popen(server, "iperf3", "-s", "-1", "-p", str(port),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening():
            r = hosts.run(server, "ss", "-ltn", check=False)
            return f":{port} " in r.stdout
        wait_for(listening, 10, "iperf3 server")
        args = ["iperf3", "-c", hosts.addr[server], "-p", str(port), "-t", str(seconds), "-J"]
        if reverse:
            args.append("-R")
        if udp_rate:
            args += ["-u", "-b", udp_rate]
        args += list(extra)
        r = hosts.run(client, *args, check=False, timeout=seconds + 30)
        return json.loads(r.stdout)
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def bench_delaynode(argv):
    """The amber-delaynode binary for a benchmark's command line (its one
    optional argument: the build directory, default "build"), or None,
    said why, when not run as root."""
    if os.geteuid() != 0:
        print("needs root")
        return None
    build = argv[1] if len(argv) > 1 else "build"
    return os.path.join(build, "delaynode", "amber-delaynode")


def test_main(doc, tools=("ip", "ethtool", "iperf3", "ping", "ss")):
    """The command line of a scenario test: takes its one argument (a build
    directory or binary) off sys.argv and returns (argument, None), or
    (None, exit code): 2 without an argument, 77 (skipped, reason printed)
    without root or a tool."""
    import shutil
    import sys
    if len(sys.argv) < 2:
        print(doc)
        return None, 2
    arg = sys.argv.pop(1)
    if os.geteuid() != 0:
        print("SKIPPED: needs root for network namespaces and hugepages")
        return None, 77
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"SKIPPED: {tool} is not installed (scripts/setup.sh installs it)")
            return None, 77
    return arg, None


def run_cases():
    import unittest
    result = unittest.main(exit=False, verbosity=2).result
    return 0 if result.wasSuccessful() else 1
