#!/usr/bin/env python3
"""Linux netem versus amber on the same link and the same traffic path.

The running kernel has no sch_netem, so netem runs in a small bridge VM
(Debian's cloud kernel with its bridge and sch_netem modules, tc from
iproute2: scripts/build-guest.sh, QEMU TCG). Two network namespaces are the
endpoints; every row sends its traffic through the same kind of path:

  netem        ns1 =veth= [br1] -tap1- bridge VM (br0 + netem on each egress) -tap2- [br2] =veth= ns2
  amber+VM     ns1 =veth= amber-delaynode (af_packet on h1 and tap1) -tap1- bridge VM (plain
               bridge, no qdisc) -tap2- [br2] =veth= ns2
  VM only      as netem without a qdisc: what the TCG VM alone costs
  amber veth   ns1 =veth= amber-delaynode (af_packet) =veth= ns2, no VM

For each link: iperf3 TCP throughput (8 s) and retransmits, idle ping RTT
(avg, mdev) and RTT - 2 x delay, the emulator's drops (netem: the qdiscs'
`dropped` in the VM; amber: /amber/stats dropped_* + /amber/ports rx_missed,
rx_no_mbuf, tx_errors) and, for the rows through the VM, the frames lost on
the way (taps' and VM NICs' rx/tx_dropped).

usage: bench/netem_vm.py BUILD_DIR   (root; builds the guest if needed)"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "scenario"))
import amberlab as lab  # noqa: E402

PREFIX = "amb-nv"
LINKS = [("100Mbit", "100mbit", 20), ("1Gbit", "1gbit", 50)]
SECONDS = 8
# netem's limit and amber's queue_frames, the same for both: above
# rate x delay in MTU frames for either link (1 Gbit/s x 50 ms ~ 4130).
QUEUE = 10000
# The guest NIC offloads off: the af_packet PMD cannot take GSO frames or
# partial checksums, and the netem rows use the same NICs (like for like).
NIC_OFFLOADS_OFF = ",".join(f"{k}=off" for k in (
    "csum", "guest_csum", "gso", "host_tso4", "host_tso6", "host_ecn", "host_ufo",
    "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo"))


class BridgeVm:
    """The netem bridge VM: two virtio NICs on taps, joined by br0 inside;
    driven through its serial console (a unix socket)."""

    def __init__(self, build, taps, smp=1):
        guest = os.path.join(build, "guest")
        self.taps = taps
        self.dir = tempfile.mkdtemp(prefix=f"{PREFIX}-vm-")
        self.console_path = os.path.join(self.dir, "console.sock")
        self.log_path = os.path.join(self.dir, "qemu.log")
        self.proc = None
        self.sock = None
        self.buf = b""
        self.seq = 0
        cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-smp", str(smp),
               "-m", "512", "-nodefaults", "-display", "none", "-monitor", "none",
               "-kernel", os.path.join(guest, "vmlinuz"),
               "-initrd", os.path.join(guest, "initramfs.cpio.gz"),
               "-append", "console=ttyS0 quiet amber.bridge=1",
               "-chardev", f"socket,id=con,path={self.console_path},server=on,wait=off",
               "-serial", "chardev:con"]
        for i, tap in enumerate(taps):
            cmd += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no",
                    "-device", f"virtio-net-pci,netdev=n{i},mac=52:54:00:4e:56:0{i + 1},"
                    + NIC_OFFLOADS_OFF]
        self.log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
            lab.wait_for(lambda: self.proc.poll() is not None or os.path.exists(self.console_path),
                         10, "the bridge VM's console socket")
            self._check_alive()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.console_path)
            boot = self._read_until(b"amber: guest ready", 120)
            if b"amber: bridge ready" not in boot:
                raise RuntimeError(f"bridge VM did not set up br0:\n{boot.decode(errors='replace')}")
        except Exception:
            self.close()
            raise

    def _check_alive(self):
        if self.proc.poll() is not None:
            with open(self.log_path) as f:
                raise RuntimeError(f"QEMU exited ({self.proc.returncode}): {f.read()}")

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"bridge VM console: no {marker!r} within {timeout}s; got:\n"
                                   + self.buf[-2000:].decode(errors="replace"))
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise RuntimeError("bridge VM console closed")
            self.buf += data
        head, _, self.buf = self.buf.partition(marker)
        return head

    def run(self, command, timeout=30):
        """Runs a shell command on the console; returns its output."""
        self.seq += 1
        # The echoed command line holds the marker split by quotes, the
        # output holds it whole: only the output matches.
        marker = f"@@end{self.seq}@@"
        split = f'"@@end""{self.seq}@@"'
        self.buf = b""
        self.sock.sendall(f"{command}; echo {split}\n".encode())
        out = self._read_until(marker.encode() + b"\r\n", timeout).decode(errors="replace")
        # Drop the echoed command line (the console wraps it at 80 columns).
        end_of_echo = out.find(f'""{self.seq}@@"')
        out = out[out.find("\n", end_of_echo) + 1:] if end_of_echo >= 0 else out
        return out.replace("\r", "")

    def close(self):
        if self.sock:
            self.sock.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        lab.sh("rm", "-rf", self.dir, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Lab:
    """TwoHosts (ns1, ns2 with h1, h2 in the root namespace), two taps of the
    bridge VM, and root bridges br1 {h1, tap1} and br2 {h2, tap2}."""

    def __init__(self, build):
        self.taps = [f"{PREFIX}-t1", f"{PREFIX}-t2"]
        self.bridges = [f"{PREFIX}-b1", f"{PREFIX}-b2"]
        self.hosts = None
        self.vm = None
        self._remove_links()
        try:
            self.hosts = lab.TwoHosts(PREFIX, subnet=81)
            self.vm = BridgeVm(build, self.taps)
            for i in range(2):
                lab.wait_for(lambda: os.path.exists(f"/sys/class/net/{self.taps[i]}"), 10,
                             f"tap {self.taps[i]}")
                lab.sh("ip", "link", "set", self.taps[i], "up")
                lab.sh("sysctl", "-qw", f"net.ipv6.conf.{self.taps[i]}.disable_ipv6=1", check=False)
                lab.offloads_off(self.taps[i])
                lab.sh("ip", "link", "add", self.bridges[i], "type", "bridge", "stp_state", "0",
                       "forward_delay", "0")
                lab.sh("sysctl", "-qw", f"net.ipv6.conf.{self.bridges[i]}.disable_ipv6=1",
                       check=False)
                lab.sh("ip", "link", "set", self.bridges[i], "up")
                lab.sh("ip", "link", "set", self.taps[i], "master", self.bridges[i])
            lab.sh("ip", "link", "set", self.hosts.host_if[1], "master", self.bridges[1])
        except Exception:
            self.close()
            raise

    def h1_bridged(self, on):
        """h1 in br1 (the VM is the whole link) or out of it (amber joins h1 and tap1)."""
        if on:
            lab.sh("ip", "link", "set", self.hosts.host_if[0], "master", self.bridges[0])
        else:
            lab.sh("ip", "link", "set", self.hosts.host_if[0], "nomaster")

    def tap1_bridged(self, on):
        lab.sh("ip", "link", "set", self.taps[0], *(["master", self.bridges[0]] if on else ["nomaster"]))

    def set_netem(self, rate, delay_ms):
        for dev in ("eth0", "eth1"):
            self.vm.run(f"/sbin/tc qdisc del dev {dev} root 2>/dev/null")
            if rate:
                out = self.vm.run(f"/sbin/tc qdisc add dev {dev} root netem delay {delay_ms}ms "
                                  f"rate {rate} limit {QUEUE} && echo qdisc-ok")
                if "qdisc-ok" not in out:
                    raise RuntimeError(f"netem on {dev} in the bridge VM failed: {out}")

    def netem_drops(self):
        out = self.vm.run("/sbin/tc -s qdisc show dev eth0; /sbin/tc -s qdisc show dev eth1")
        return sum(int(x) for x in re.findall(r"dropped (\d+)", out)), out

    def path_drops(self):
        """Frames lost outside any qdisc: the taps' tx drops (the VM did not
        take them in time) and the VM NICs' rx/tx drops."""
        n = 0
        for tap in self.taps:
            for c in ("tx_dropped", "rx_dropped"):
                with open(f"/sys/class/net/{tap}/statistics/{c}") as f:
                    n += int(f.read())
        out = self.vm.run("cat /sys/class/net/eth[01]/statistics/[rt]x_dropped")
        return n + sum(int(x) for x in out.split() if x.isdigit())

    def _remove_links(self):
        for dev in self.bridges + self.taps:
            lab.sh("ip", "link", "del", dev, check=False)

    def close(self):
        if self.vm:
            self.vm.close()
        self._remove_links()
        if self.hosts:
            self.hosts.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure_vm(L, measure_fn):
    before = L.path_drops()
    r = measure_fn()
    r["path_drops"] = L.path_drops() - before
    return r


def measure(hosts, delay_ms):
    lab.ping(hosts, 0, hosts.addr[1], 3, interval=0.2)  # ARP, bridges learn
    p = lab.ping(hosts, 0, hosts.addr[1], 50, interval=0.02)
    mdev = re.search(r"= [\d.]+/[\d.]+/[\d.]+/([\d.]+) ms", p["output"])
    j = lab.iperf3(hosts, server=1, client=0, seconds=SECONDS)
    if "error" in j:
        raise RuntimeError(f"iperf3: {j['error']}")
    return {"mbps": j["end"]["sum_received"]["bits_per_second"] / 1e6,
            "retr": j["end"]["sum_sent"].get("retransmits", 0),
            "rtt": p["avg_ms"], "mdev": float(mdev.group(1)) if mdev else None,
            "loss": p["loss"],
            "rtt_err": (p["avg_ms"] - 2 * delay_ms) if p["avg_ms"] else None}


def amber_config(rate, delay_ms):
    return (f'node_id: "netem-vm" link {{ name: "l" port_a: "net_af_packet0" '
            f'port_b: "net_af_packet1" both {{ rate: "{rate}" delay: "{delay_ms}ms" '
            f'queue_frames: {QUEUE} }} }}')


def amber_measure(binary, hosts, ifaces, rate, delay_ms, node_prefix):
    with lab.DelayNode(binary, amber_config(rate, delay_ms), ifaces, node_prefix) as node:
        r = measure(hosts, delay_ms)
        st = node.telemetry("/amber/stats")
        r["drops"] = sum(v for d in st.values() for k, v in d.items() if k.startswith("dropped_"))
        ports = node.telemetry("/amber/ports")
        r["drops"] += sum(p["rx_missed"] + p["rx_no_mbuf"] + p["tx_errors"] for p in ports.values())
        return r


def fmt(v, f):
    return "-" if v is None else format(v, f)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    if os.geteuid() != 0:
        print("needs root (namespaces, taps, hugepages)")
        return 1
    binary = os.path.join(build, "controller", "amber-delaynode")
    if not os.access(binary, os.X_OK):
        print(f"{binary} is missing: ninja -C {build} controller/amber-delaynode")
        return 1
    lab.sh(os.path.join(HERE, "..", "scripts", "build-guest.sh"), build, timeout=600)
    # SIGTERM unwinds like Ctrl-C, through every close().
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    t0 = time.monotonic()
    with Lab(build) as L:
        L.h1_bridged(True)
        L.set_netem(None, 0)
        r = measure_vm(L, lambda: measure(L.hosts, 0))
        r["drops"] = 0
        rows.append(("none", "bridge VM, no qdisc (the VM's own cost)", r))
        for name, rate, delay in LINKS:
            L.set_netem(rate, delay)
            r = measure_vm(L, lambda: measure(L.hosts, delay))
            r["drops"], stats = L.netem_drops()
            print(f"[netem {name}] tc -s qdisc in the VM:\n{stats}", file=sys.stderr)
            rows.append((f"{name}, {delay} ms", "netem in the bridge VM", r))
            # amber between h1 and tap1; the VM just bridges.
            L.set_netem(None, 0)
            L.h1_bridged(False)
            L.tap1_bridged(False)
            try:
                r = measure_vm(L, lambda: amber_measure(
                    binary, L.hosts, [L.hosts.host_if[0], L.taps[0]], rate, delay, f"{PREFIX}-node"))
            finally:
                L.tap1_bridged(True)
                L.h1_bridged(True)
            rows.append((f"{name}, {delay} ms", "amber (af_packet h1+tap1) + bridge VM", r))
    with lab.TwoHosts(f"{PREFIX}v", subnet=82) as h:
        for name, rate, delay in LINKS:
            r = amber_measure(binary, h, h.host_if, rate, delay, f"{PREFIX}v-node")
            rows.append((f"{name}, {delay} ms", "amber on veth (af_packet), no VM", r))
    print(f"| link | emulator and path | iperf3 TCP {SECONDS}s (Mbit/s) | retransmits | "
          "ping RTT avg / mdev (ms) | RTT - 2 x delay (ms) | ping loss | emulator drops | "
          "tap + VM NIC drops |")
    print("|---|---|---|---|---|---|---|---|---|")
    for link, who, r in rows:
        print(f"| {link} | {who} | {r['mbps']:.1f} | {r['retr']} | {fmt(r['rtt'], '.2f')} / "
              f"{fmt(r['mdev'], '.2f')} | {fmt(r['rtt_err'], '+.2f')} | {r['loss'] * 100:.0f}% | "
              f"{r['drops']} | {r.get('path_drops', '-')} |")
    print(f"\n(run took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
