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

and with two endpoint VMs (guest iperf3 and busybox ping) instead of the
namespaces:

  netem        VM1 -e1- [br1] -tap1- bridge VM (br0 + netem) -tap2- [br2] -e2- VM2
  amber        VM1 =vhost-user= amber-delaynode (net_vhost) =vhost-user= VM2

For each link: iperf3 TCP throughput (8 s) and retransmits, idle ping RTT
(avg, mdev) and RTT - 2 x delay, the emulator's drops (netem: the qdiscs'
`dropped` in the VM; amber: /amber/stats dropped_* + /amber/ports rx_missed,
rx_no_mbuf, tx_errors) and, for the rows through the VM, the frames lost on
the way (taps' and VM NICs' rx/tx_dropped).

usage: bench/run.sh netem [--no-endpoint-vms]
       (root; builds the guest if needed; by hand:
       PYTHONPATH=python bench/netem_vm.py BUILD_DIR [--no-endpoint-vms])"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from amberlab import lab

HERE = os.path.dirname(os.path.abspath(__file__))

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


class Vm:
    """A TCG guest of scripts/build-guest.sh driven through its serial
    console (a unix socket). nics: ("tap", ifname) or ("vhost", socket path);
    guest RAM is a shared memfd so a vhost-user back end can map it."""

    def __init__(self, build, append, nics, mac_base, mem_mb=512, smp=1, ready=None):
        guest = os.path.join(build, "guest")
        self.dir = tempfile.mkdtemp(prefix=f"{PREFIX}-vm-")
        self.console_path = os.path.join(self.dir, "console.sock")
        self.log_path = os.path.join(self.dir, "qemu.log")
        self.proc = None
        self.sock = None
        self.buf = b""
        self.seq = 0
        cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-smp", str(smp),
               "-m", str(mem_mb), "-nodefaults", "-display", "none", "-monitor", "none",
               "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
               "-numa", "node,memdev=mem",
               "-kernel", os.path.join(guest, "vmlinuz"),
               "-initrd", os.path.join(guest, "initramfs.cpio.gz"),
               "-append", f"console=ttyS0 quiet {append}",
               "-chardev", f"socket,id=con,path={self.console_path},server=on,wait=off",
               "-serial", "chardev:con"]
        for i, (kind, where) in enumerate(nics):
            dev = f"virtio-net-pci,netdev=n{i},mac=52:54:00:4e:{mac_base:02x}:{i + 1:02x},"
            if kind == "tap":
                cmd += ["-netdev", f"tap,id=n{i},ifname={where},script=no,downscript=no"]
            else:
                # vectors=0: QEMU 7.2 under TCG crashes with vhost-user otherwise.
                cmd += ["-chardev", f"socket,id=vu{i},path={where}",
                        "-netdev", f"vhost-user,id=n{i},chardev=vu{i}"]
                dev += "vectors=0,"
            cmd += ["-device", dev + NIC_OFFLOADS_OFF]
        self.log = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
            lab.wait_for(lambda: self.proc.poll() is not None or os.path.exists(self.console_path),
                         10, "the VM's console socket")
            self._check_alive()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.console_path)
            boot = self._read_until(b"amber: guest ready", 120)
            if ready and ready.encode() not in boot:
                raise RuntimeError(f"VM printed no {ready!r}:\n{boot.decode(errors='replace')}")
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
                raise TimeoutError(f"VM console: no {marker!r} within {timeout}s; got:\n"
                                   + self.buf[-2000:].decode(errors="replace"))
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise RuntimeError("VM console closed")
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
            self.vm = Vm(build, "amber.bridge=1", [("tap", t) for t in self.taps], 0x56,
                         ready="amber: bridge ready")
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
        r["drops"] = node.drops()
        return r


EP_ADDR = ["10.83.0.1", "10.83.0.2"]
TCP_BUFFERS = "4096 131072 67108864"


class EndpointVms:
    """Two endpoint VMs (10.83.0.1 runs the client, 10.83.0.2 iperf3 -s),
    one NIC each, given as Vm nic specs."""

    def __init__(self, build, nics):
        self.vms = []
        try:
            for i in range(2):
                append = f"amber.ip={EP_ADDR[i]}/24" + (" amber.workload=iperf3-server" if i else "")
                self.vms.append(Vm(build, append, [nics[i]], 0x60 + i, mem_mb=256))
            for vm in self.vms:
                vm.run(f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_rmem; '
                       f'echo "{TCP_BUFFERS}" > /proc/sys/net/ipv4/tcp_wmem')
        except Exception:
            self.close()
            raise

    def measure(self, delay_ms):
        client = self.vms[0]
        client.run(f"ping -q -c 3 -i 0.2 {EP_ADDR[1]}", timeout=30)
        out = client.run(f"ping -q -c 50 -i 0.02 {EP_ADDR[1]}", timeout=60)
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+) ms", out)
        loss = re.search(r"(\d+)% packet loss", out)
        out = client.run(f"iperf3 -c {EP_ADDR[1]} -t {SECONDS} -J > /tmp/j; cat /tmp/j",
                         timeout=SECONDS + 60)
        try:
            j = json.loads(out[out.index("{"):out.rindex("}") + 1])
        except ValueError as e:
            raise RuntimeError(f"iperf3 in the endpoint VM printed no JSON ({e}):\n{out[-2000:]}")
        if "error" in j:
            raise RuntimeError(f"iperf3 in the endpoint VM: {j['error']}")
        avg = float(rtt.group(2)) if rtt else None
        return {"mbps": j["end"]["sum_received"]["bits_per_second"] / 1e6,
                "retr": j["end"]["sum_sent"].get("retransmits", 0),
                "rtt": avg, "mdev": None,  # busybox ping prints no mdev
                "loss": float(loss.group(1)) / 100 if loss else 1.0,
                "rtt_err": (avg - 2 * delay_ms) if avg else None}

    def close(self):
        for vm in self.vms:
            vm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def amber_vhost_rows(build, binary):
    """Endpoint VMs on vhost-user ports of amber-delaynode (DPDK net_vhost
    serves the sockets); VMs booted again for each link's config."""
    rows = []
    for name, rate, delay in LINKS:
        sock_dir = tempfile.mkdtemp(prefix=f"{PREFIX}u-")
        socks = [os.path.join(sock_dir, f"ep{i + 1}.sock") for i in range(2)]
        eal = [a for i in range(2) for a in ("--vdev", f"net_vhost{i},iface={socks[i]},client=0")]
        cfg = amber_config(rate, delay).replace("net_af_packet", "net_vhost")
        try:
            with lab.DelayNode(binary, cfg, [], f"{PREFIX}u-node", extra_eal=eal) as node:
                lab.wait_for(lambda: all(os.path.exists(x) for x in socks), 10, "vhost-user sockets")
                with EndpointVms(build, [("vhost", x) for x in socks]) as eps:
                    r = eps.measure(delay)
                r["drops"] = node.drops()
        finally:
            lab.sh("rm", "-rf", sock_dir, check=False)
        rows.append((f"{name}, {delay} ms", "endpoint VMs: amber, vhost-user ports", r))
    return rows


def netem_vm_rows(build):
    """The same endpoint VMs on taps, bridged through the netem bridge VM:
    root bridges b1 {e1, t1} and b2 {e2, t2}."""
    rows = []
    ep_taps = [f"{PREFIX}-e1", f"{PREFIX}-e2"]
    taps = [f"{PREFIX}-t1", f"{PREFIX}-t2"]
    bridges = [f"{PREFIX}-b1", f"{PREFIX}-b2"]

    def remove():
        for dev in bridges + taps + ep_taps:
            lab.sh("ip", "link", "del", dev, check=False)

    remove()
    bridge_vm = None
    try:
        bridge_vm = Vm(build, "amber.bridge=1", [("tap", t) for t in taps], 0x56,
                       ready="amber: bridge ready")
        with EndpointVms(build, [("tap", t) for t in ep_taps]) as eps:
            for i in range(2):
                lab.sh("ip", "link", "add", bridges[i], "type", "bridge", "stp_state", "0",
                       "forward_delay", "0")
                for dev in (bridges[i], taps[i], ep_taps[i]):
                    lab.sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
                    lab.sh("ip", "link", "set", dev, "up")
                for dev in (taps[i], ep_taps[i]):
                    lab.offloads_off(dev)
                    lab.sh("ip", "link", "set", dev, "master", bridges[i])
            for name, rate, delay in LINKS:
                for dev in ("eth0", "eth1"):
                    bridge_vm.run(f"/sbin/tc qdisc del dev {dev} root 2>/dev/null")
                    out = bridge_vm.run(f"/sbin/tc qdisc add dev {dev} root netem delay {delay}ms "
                                        f"rate {rate} limit {QUEUE} && echo qdisc-ok")
                    if "qdisc-ok" not in out:
                        raise RuntimeError(f"netem on {dev} in the bridge VM failed: {out}")
                r = eps.measure(delay)
                out = bridge_vm.run("/sbin/tc -s qdisc show dev eth0; /sbin/tc -s qdisc show dev eth1")
                r["drops"] = sum(int(x) for x in re.findall(r"dropped (\d+)", out))
                rows.append((f"{name}, {delay} ms", "endpoint VMs: netem in the bridge VM, taps", r))
    finally:
        if bridge_vm:
            bridge_vm.close()
        remove()
    return rows


def fmt(v, f):
    return "-" if v is None else format(v, f)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    if os.geteuid() != 0:
        print("needs root (namespaces, taps, hugepages)")
        return 1
    binary = os.path.join(build, "delaynode", "amber-delaynode")
    if not os.access(binary, os.X_OK):
        print(f"{binary} is missing: ninja -C {build} delaynode/amber-delaynode")
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
    if "--no-endpoint-vms" not in sys.argv:
        rows += netem_vm_rows(build)
        rows += amber_vhost_rows(build, binary)
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
