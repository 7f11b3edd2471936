"""The agents and the controller are not open to anyone: beyond loopback
they serve gRPC only with mutual TLS, and a client without a certificate
of the experiment's CA is refused. Real processes on real TCP sockets
(127.0.0.1), certificates from scripts/make-certs.sh.

usage: test_tls.py BUILD_DIR   (root: the delay node needs hugepages)"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

import amberlab as lab
from experimentlab import Process

BUILD = None
HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(HERE, "..", "..", "scripts", "make-certs.sh")


class MutualTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="amb-tls-")
        cls.certs = os.path.join(cls.dir, "certs")
        cls.rogue = os.path.join(cls.dir, "rogue")
        lab.sh(MAKE_CERTS, cls.certs, "controller", "dn1", "operator")
        lab.sh(MAKE_CERTS, cls.rogue, "operator")  # same name, another CA
        config = os.path.join(cls.dir, "links.textproto")
        with open(config, "w") as f:
            f.write('node_id: "dn1"\nlink { name: "l" port_a: "net_null0" port_b: "net_null1" '
                    'both { delay: "1ms" } }\n')
        cls.config = config
        argv = [os.path.join(BUILD, "controller", "amber-delaynode"), "-l", "0", "--no-pci",
                "--in-memory", "--file-prefix", "amb-tls", "-m", "256",
                "--log-level", "lib.eal:error",
                "--vdev", "net_null0", "--vdev", "net_null1", "--", "--config", config,
                "--agent", "127.0.0.1:0", *cls.tls_args(cls.certs, "dn1")]
        cls.node = Process(argv, os.path.join(cls.dir, "dn.log"), "agent listening on",
                           "amber-delaynode")
        cls.node_address = re.search(r"agent listening on (\S+)", cls.node.output()).group(1)
        cls.topology = os.path.join(cls.dir, "topology.conf")
        with open(cls.topology, "w") as f:
            f.write(f'experiment: "tls"\nlisten: "127.0.0.1:0"\nstore: "{cls.dir}/store"\n'
                    f'allow_unsynchronized: true\n'
                    f'tls {{ ca: "{cls.certs}/ca.pem" cert: "{cls.certs}/controller.pem" '
                    f'key: "{cls.certs}/controller.key" }}\n'
                    f'delay_node {{ id: "dn1" address: "{cls.node_address}" link: "l" }}\n')
        cls.controller = Process([os.path.join(BUILD, "controller", "amber-controller"),
                                  "--topology", cls.topology],
                                 os.path.join(cls.dir, "controller.log"), "serving on",
                                 "amber-controller")
        cls.controller_address = re.search(r"serving on (\S+)", cls.controller.output()).group(1)

    @classmethod
    def tearDownClass(cls):
        for p in (getattr(cls, "controller", None), getattr(cls, "node", None)):
            if p:
                p.stop()
        lab.sh("rm", "-rf", cls.dir, "/var/run/dpdk/amb-tls", check=False)

    @staticmethod
    def tls_args(folder, name):
        return ["--tls-ca", f"{folder}/ca.pem", "--tls-cert", f"{folder}/{name}.pem",
                "--tls-key", f"{folder}/{name}.key"]

    def amberctl(self, *args):
        return subprocess.run([os.path.join(BUILD, "controller", "amberctl"), *args],
                              capture_output=True, text=True, timeout=30)

    def test_agent_with_the_right_certificate_answers(self):
        r = self.amberctl("--agent", self.node_address, *self.tls_args(self.certs, "operator"),
                          "--timeout", "5s", "stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("node dn1", r.stdout)

    def test_agent_refuses_another_cas_certificate(self):
        r = self.amberctl("--agent", self.node_address, *self.tls_args(self.rogue, "operator"),
                          "--timeout", "5s", "stats")
        self.assertEqual(r.returncode, 1)
        self.assertNotIn("node dn1", r.stdout)
        self.assertIn("unavailable", r.stderr)

    def test_agent_refuses_a_client_without_certificate(self):
        r = self.amberctl("--agent", self.node_address, "--timeout", "5s", "stats")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unavailable", r.stderr)
        # TLS to the agent, but no client certificate of ours: a CA only.
        only_ca = ["--tls-ca", f"{self.certs}/ca.pem", "--tls-cert", f"{self.rogue}/operator.pem",
                   "--tls-key", f"{self.rogue}/operator.key"]
        r = self.amberctl("--agent", self.node_address, *only_ca, "--timeout", "5s", "stats")
        self.assertEqual(r.returncode, 1)

    def test_controller_reaches_the_agent_over_mutual_tls(self):
        r = self.amberctl("--controller", self.controller_address,
                          *self.tls_args(self.certs, "operator"), "--json", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        agents = json.loads(r.stdout)["agents"]
        self.assertEqual(len(agents), 1)
        self.assertTrue(agents[0]["reachable"], agents[0])
        self.assertEqual(len(agents[0]["pipes"]), 2)

    def test_controller_refuses_strangers(self):
        for extra in (self.tls_args(self.rogue, "operator"), []):
            r = self.amberctl("--controller", self.controller_address, *extra, "--timeout", "5s",
                              "status")
            self.assertEqual(r.returncode, 1, extra)
            self.assertIn("unavailable", r.stderr)

    def test_plain_text_beyond_loopback_is_refused_at_start(self):
        r = subprocess.run([os.path.join(BUILD, "controller", "amber-delaynode"), "-l", "0",
                            "--no-pci", "--in-memory", "--file-prefix", "amb-tls2", "-m", "256",
                            "--log-level", "lib.eal:error", "--vdev", "net_null0",
                            "--vdev", "net_null1", "--", "--config", self.config,
                            "--agent", "0.0.0.0:0"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("loopback", r.stdout + r.stderr)
        lab.sh("rm", "-rf", "/var/run/dpdk/amb-tls2", check=False)


def main():
    global BUILD
    BUILD, code = lab.test_main(__doc__, tools=("openssl",))
    if code is not None:
        return code
    BUILD = os.path.abspath(BUILD)
    return lab.run_cases()


if __name__ == "__main__":
    sys.exit(main())
