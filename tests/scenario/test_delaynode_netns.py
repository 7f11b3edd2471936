#!/usr/bin/env python3
"""amber-delaynode between two network namespaces (veth + net_af_packet):
ping RTT is twice the one-way delay, iperf3 TCP throughput follows the
configured rate in each direction (asymmetric), configured loss shows up in
ping, runtime changes through the telemetry socket take effect, frames
the kernel drops at a full af_packet socket ring show in the port's
rx_missed, SIGTERM stops the node cleanly with final counters; an idle
worker told --idle-wait ports waits on its af_packet sockets (next to no
CPU), by default it polls; and with a 9000-byte MTU on
every veth, jumbo frames cross whole with the delay and at the rate.

usage: test_delaynode_netns.py BUILD/delaynode/amber-delaynode
Needs root (namespaces, hugepages); exits 77 (skipped) with the reason
otherwise."""

import os
import signal
import subprocess
import sys
import time
import unittest

from amberlab import lab

BINARY = None
RATE_AB, RATE_BA = 50e6, 20e6
DELAY_MS = 10
CONFIG = f'''node_id: "netns-test"
link {{
  name: "lan"
  port_a: "net_af_packet0"
  port_b: "net_af_packet1"
  both {{ delay: "{DELAY_MS}ms" queue_frames: 1000 }}
  a_to_b {{ rate: "{int(RATE_AB)}" }}
  b_to_a {{ rate: "{int(RATE_BA)}" }}
}}
'''


class NodeBetweenHosts(unittest.TestCase):
    """Two namespaces (PREFIX, SUBNET, MTU) and a node with config() between
    them, shared by a class's tests."""
    PREFIX, SUBNET, MTU = None, None, 1500
    APP = ()

    @classmethod
    def config(cls):
        return CONFIG

    @classmethod
    def setUpClass(cls):
        cls.hosts = lab.TwoHosts(cls.PREFIX, subnet=cls.SUBNET, mtu=cls.MTU)
        try:
            cls.node = lab.DelayNode(BINARY, cls.config(), cls.hosts.host_if,
                                     f"{cls.PREFIX}-node", mtu=cls.MTU, app=cls.APP)
        except Exception:
            cls.hosts.close()
            raise
        # ARP through the node before measuring.
        lab.ping(cls.hosts, 0, cls.hosts.addr[1], 2, interval=0.2)

    @classmethod
    def tearDownClass(cls):
        cls.node.close()
        cls.hosts.close()

    def worker_cpu_share(self, seconds=2.0):
        """The share of a core the worker (the main lcore's loop: the
        process's main thread) used over the next `seconds`."""
        pid = self.node.proc.pid

        def used():
            with open(f"/proc/{pid}/task/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), used()
        time.sleep(seconds)  # a measuring window, not a wait for something
        return (used() - c0) / (time.monotonic() - t0)


class DelayNodeBetweenNamespaces(NodeBetweenHosts):
    PREFIX, SUBNET = "amb-dpt", 78
    APP = ("--idle-wait", "ports")

    def test_0_an_idle_worker_waits_on_its_sockets(self):
        # Both ports are af_packet: the idle worker waits on their sockets
        # instead of looking every idle_sleep (10 us), so an idle node costs
        # next to no CPU; a frame wakes it (test_1: the RTT is still exact).
        self.assertIn("1 of 1 worker(s) wait on their af_packet sockets", self.node.output())
        share = self.worker_cpu_share()
        self.assertLess(share, 0.05, f"the idle worker used {share:.0%} of a core")

    def test_1_ping_rtt_is_twice_the_one_way_delay(self):
        p = lab.ping(self.hosts, 0, self.hosts.addr[1], 30, interval=0.05)
        self.assertEqual(p["loss"], 0.0, p["output"])
        # Never faster than the emulated link; at most 3 ms slower on
        # average (af_packet syscalls, a shared 2-core machine).
        self.assertGreaterEqual(p["min_ms"], 2 * DELAY_MS, p["output"])
        self.assertLess(p["avg_ms"], 2 * DELAY_MS + 3, p["output"])

    def test_2_iperf3_throughput_follows_the_rate_in_each_direction(self):
        fwd = lab.iperf3(self.hosts, server=1, client=0, seconds=4)
        rev = lab.iperf3(self.hosts, server=1, client=0, seconds=4, reverse=True)
        got_ab = fwd["end"]["sum_received"]["bits_per_second"]
        got_ba = rev["end"]["sum_received"]["bits_per_second"]
        # TCP goodput is ~95.6% of the L2 rate for 1514-byte frames; slow
        # start costs some of a 4 s run.
        self.assertGreater(got_ab, 0.80 * RATE_AB, f"a->b {got_ab / 1e6:.1f} Mbit/s")
        self.assertLess(got_ab, 1.00 * RATE_AB, f"a->b {got_ab / 1e6:.1f} Mbit/s")
        self.assertGreater(got_ba, 0.80 * RATE_BA, f"b->a {got_ba / 1e6:.1f} Mbit/s")
        self.assertLess(got_ba, 1.00 * RATE_BA, f"b->a {got_ba / 1e6:.1f} Mbit/s")

    def test_3_loss_set_at_runtime_shows_in_ping(self):
        reply = self.node.telemetry("/amber/set,lan,a_to_b,loss=20%")
        self.assertIn("ok", reply, reply)
        try:
            before = self.node.telemetry("/amber/stats")["lan/a_to_b"]["dropped_loss"]
            p = lab.ping(self.hosts, 0, self.hosts.addr[1], 300, interval=0.01)
            after = self.node.telemetry("/amber/stats")["lan/a_to_b"]["dropped_loss"]
        finally:
            self.node.telemetry("/amber/set,lan,a_to_b,loss=0")
        # 20% of the requests are lost: 3 sigma for 300 pings is ~7%.
        self.assertGreater(p["loss"], 0.12, p["output"])
        self.assertLess(p["loss"], 0.28, p["output"])
        self.assertGreaterEqual(after - before, round(p["loss"] * 300) - 2)

    def test_4_bad_runtime_change_is_refused_and_changes_nothing(self):
        reply = self.node.telemetry("/amber/set,lan,a_to_b,delay=-5ms")
        self.assertIn("error", reply)
        self.assertIn("delay", reply["error"])
        links = self.node.telemetry("/amber/links")
        self.assertIn(f"delay {DELAY_MS}ms", links["lan/a_to_b"])
        reply = self.node.telemetry("/amber/set,nolink,a_to_b,delay=5ms")
        self.assertIn("no link 'nolink'", reply["error"])

    def test_4z_frames_lost_in_a_full_socket_ring_are_counted(self):
        # The node stopped (SIGSTOP) while a host sends more datagrams than
        # its af_packet socket ring holds (framecnt 8192): the kernel drops
        # the rest, which the PMD does not report; the node must (rx_missed).
        port = "net_af_packet0"
        before = self.node.telemetry("/amber/ports")[port]
        softnet_before = softnet_dropped()
        sent = 12000
        os.kill(self.node.proc.pid, signal.SIGSTOP)
        try:
            self.hosts.run(0, sys.executable, "-c", (
                "import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range({sent}): s.sendto(bytes(1000), ('{self.hosts.addr[1]}', 9))\n"),
                timeout=60)
        finally:
            os.kill(self.node.proc.pid, signal.SIGCONT)

        def counts():
            after = self.node.telemetry("/amber/ports")[port]
            # The kernel's own backlog drops, before the ring.
            return {"missed": after["rx_missed"] - before["rx_missed"],
                    "taken": after["rx_frames"] - before["rx_frames"],
                    "backlog": softnet_dropped() - softnet_before}

        def accounted():
            c = counts()
            return c if sum(c.values()) >= sent else None

        # Every datagram is accounted for once the node has drained its
        # ring: taken, missed at the ring, or dropped before it.
        try:
            c = lab.wait_for(accounted, 10, "the node to account for every datagram")
        except TimeoutError:
            c = counts()
        self.assertGreaterEqual(sum(c.values()), sent, c)
        self.assertGreater(c["missed"], 0, c)
        self.assertLessEqual(c["taken"], 8192 + 100, c)

    def test_5_sigterm_stops_cleanly_with_final_counters(self):
        # Runs last (tests run in name order): stops the shared node.
        self.node.close()
        out = self.node.final_output
        self.assertEqual(self.node.proc.returncode, 0, out)
        self.assertIn("[final] lan/a_to_b", out)
        self.assertIn("stopped", out)


class TimerIdleWait(NodeBetweenHosts):
    """By default (--idle-wait timer) the worker looks at its ports every
    idle_sleep instead of waiting on their sockets, and forwards with the
    delay; a bad mode is refused before anything starts."""
    PREFIX, SUBNET = "amb-dpw", 74

    def test_timer_mode_polls_and_forwards(self):
        self.assertNotIn("wait on their af_packet sockets", self.node.output())
        p = lab.ping(self.hosts, 0, self.hosts.addr[1], 20, interval=0.05)
        self.assertEqual(p["loss"], 0.0, p["output"])
        self.assertGreaterEqual(p["min_ms"], 2 * DELAY_MS, p["output"])
        self.assertLess(p["avg_ms"], 2 * DELAY_MS + 3, p["output"])
        # It looks every 10 us: far more CPU than the waiting worker's.
        share = self.worker_cpu_share()
        self.assertGreater(share, 0.05, f"the polling worker used {share:.0%} of a core")

    def test_a_bad_mode_is_refused(self):
        # No hugepages taken, no files left: the EAL runs on plain memory.
        r = subprocess.run([BINARY, "--no-pci", "--no-huge", "-m", "64", "--file-prefix",
                            f"{self.PREFIX}-bad", "--", "--config", "/nonexistent",
                            "--idle-wait", "spin"], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--idle-wait: give", r.stderr + r.stdout)


class JumboFramesBetweenNamespaces(NodeBetweenHosts):
    """9000-byte MTU on every veth, the node's af_packet ring slots and
    mbufs sized for it: a 9000-byte packet crosses unfragmented with the
    link's delay, and TCP's segments are that large."""
    PREFIX, SUBNET, MTU = "amb-dpj", 76, 9000

    @classmethod
    def config(cls):
        return (f'node_id: "jumbo-test"\nmax_frame_bytes: {lab.af_packet_slot(9000) - 32}\n'
                f'sizing_frame_bytes: 9018\n' + CONFIG.split("\n", 1)[1])

    def test_a_full_size_jumbo_packet_crosses_with_the_delay(self):
        # 8972 bytes of ICMP payload + 28 of headers = a 9000-byte IP
        # packet, don't-fragment set.
        r = self.hosts.run(0, "ping", "-q", "-c", "10", "-i", "0.05", "-W", "2", "-M", "do",
                           "-s", "8972", self.hosts.addr[1], check=False, timeout=30)
        self.assertIn(" 0% packet loss", r.stdout, r.stdout + r.stderr)
        rtt = lab.ping(self.hosts, 0, self.hosts.addr[1], 5, interval=0.05)
        self.assertGreaterEqual(rtt["min_ms"], 2 * DELAY_MS, rtt["output"])

    def test_tcp_carries_jumbo_segments_at_the_rate(self):
        j = lab.iperf3(self.hosts, server=1, client=0, seconds=3)
        got = j["end"]["sum_received"]["bits_per_second"]
        self.assertGreater(got, 0.8 * RATE_AB, j["end"])
        self.assertLess(got, 1.02 * RATE_AB, j["end"])
        frames = self.node.telemetry("/amber/stats")["lan/a_to_b"]
        mean = frames["bytes_out"] / frames["frames_out"]
        self.assertGreater(mean, 5000, frames)  # mostly 9014-byte frames


def softnet_dropped():
    """Frames the kernel's per-CPU backlogs dropped since boot
    (/proc/net/softnet_stat's second column)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f if line.strip())


def main():
    global BINARY
    BINARY, rc = lab.test_main(__doc__)
    return rc if rc is not None else lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
