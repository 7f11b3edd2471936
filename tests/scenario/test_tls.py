"""The agents and the controller are not open to anyone: beyond loopback
they serve gRPC only with mutual TLS, and a client without a certificate
of the experiment's CA is refused. Among the CA's certificates the agent
gives roles by subject CN (#16 defect 5): the controller's may do
everything, an operator's only read, any other nothing; and the paths a
call names stay inside the agent's store. Real processes on real TCP
sockets (127.0.0.1), certificates from scripts/make-certs.sh.

usage: test_tls.py BUILD_DIR   (root: the delay node needs hugepages)"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

from amberlab import lab
from amberlab.experiment import Process

BUILD = None
HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(HERE, "..", "..", "scripts", "make-certs.sh")


class MutualTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="amb-tls-")
        cls.certs = os.path.join(cls.dir, "certs")
        cls.rogue = os.path.join(cls.dir, "rogue")
        lab.sh(MAKE_CERTS, cls.certs, "controller", "dn1", "operator", "stranger")
        lab.sh(MAKE_CERTS, cls.rogue, "operator")  # same name, another CA
        config = os.path.join(cls.dir, "links.textproto")
        with open(config, "w") as f:
            f.write('node_id: "dn1"\nlink { name: "l" port_a: "net_null0" port_b: "net_null1" '
                    'both { delay: "1ms" } }\n')
        cls.config = config
        argv = [os.path.join(BUILD, "delaynode", "amber-delaynode"), "-l", "0", "--no-pci",
                "--in-memory", "--file-prefix", "amb-tls", "-m", "256",
                "--log-level", "lib.eal:error",
                "--vdev", "net_null0", "--vdev", "net_null1", "--", "--config", config,
                "--agent", "127.0.0.1:0", *cls.tls_args(cls.certs, "dn1"),
                "--controller-identity", "controller", "--operator-identity", "operator",
                "--store", f"{cls.dir}/store"]
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
        return subprocess.run([os.path.join(BUILD, "amberctl", "amberctl"), *args],
                              capture_output=True, text=True, timeout=30)

    def test_agent_with_the_right_certificate_answers(self):
        r = self.amberctl("--agent", self.node_address, *self.tls_args(self.certs, "operator"),
                          "--timeout", "5s", "stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("node dn1", r.stdout)

    def as_(self, name, *args):
        """amberctl to the delay node with the certificate made for `name`."""
        return self.amberctl("--agent", self.node_address, *self.tls_args(self.certs, name),
                             "--timeout", "10s", *args)

    def frozen(self):
        r = self.as_("operator", "--json", "stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        return bool(json.loads(r.stdout).get("frozen"))

    def test_operator_reads_but_may_not_control_or_change(self):
        for args in (["freeze", "--in", "1s"], ["thaw", "--in", "1s"],
                     ["save", f"{self.dir}/store/op.img"], ["restore", f"{self.dir}/store/op.img"],
                     ["drop", "l", "a_to_b", "0"], ["set", "l", "a_to_b", "delay=5ms"],
                     ["pcap", f"{self.dir}/store/pcap"]):
            r = self.as_("operator", *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("permission denied", r.stderr, args)
            self.assertIn("'operator' has the operator role", r.stderr, args)
        self.assertFalse(self.frozen())
        self.assertIn("delay 1ms", self.as_("operator", "stats").stdout)
        self.assertFalse(os.path.exists(f"{self.dir}/store/op.img"))

    def test_unknown_certificate_of_the_ca_is_refused(self):
        for args in (["stats"], ["freeze", "--in", "1s"], ["save", f"{self.dir}/store/x.img"]):
            r = self.as_("stranger", *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("permission denied", r.stderr, args)
            self.assertIn("'stranger' has no role", r.stderr, args)
        # The agent's own certificate is no controller either.
        r = self.as_("dn1", "freeze", "--in", "1s")
        self.assertIn("'dn1' has no role", r.stderr)

    def test_controller_identity_controls_within_the_store(self):
        os.makedirs(f"{self.dir}/store", exist_ok=True)
        r = self.as_("controller", "freeze", "--in", "1s")
        self.assertEqual(r.returncode, 0, r.stderr)
        lab.wait_for(self.frozen, 10, "the node to freeze")
        try:
            r = self.as_("controller", "save", f"{self.dir}/elsewhere.img")
            self.assertEqual(r.returncode, 1)
            self.assertIn("permission denied", r.stderr)
            self.assertIn(f"is outside the store {self.dir}/store", r.stderr)
            r = self.as_("controller", "save", f"{self.dir}/store/../elsewhere.img")
            self.assertIn("'..'", r.stderr)
            self.assertFalse(os.path.exists(f"{self.dir}/elsewhere.img"))
            r = self.as_("controller", "save", f"{self.dir}/store/dn1.img")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(os.path.exists(f"{self.dir}/store/dn1.img"))
        finally:
            r = self.as_("controller", "thaw", "--in", "1s")
            self.assertEqual(r.returncode, 0, r.stderr)
        lab.wait_for(lambda: not self.frozen(), 10, "the node to thaw")

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
        agents = json.loads(r.stdout)["agents"]
        self.assertEqual(len(agents), 1)
        self.assertTrue(agents[0]["reachable"], agents[0])
        self.assertEqual(len(agents[0]["pipes"]), 2)

    def test_controller_checkpoints_over_mutual_tls(self):
        r = self.amberctl("--controller", self.controller_address,
                          *self.tls_args(self.certs, "operator"), "--json", "checkpoint",
                          "--label", "tls")
        self.assertEqual(r.returncode, 0, r.stderr)
        manifest = json.loads(r.stdout)
        self.assertTrue(os.path.exists(
            f"{self.dir}/store/tls/{manifest['id']}/delaynodes/dn1.img"))

    def test_controller_with_an_operators_certificate_may_not_checkpoint(self):
        """The agent decides by the certificate the controller presents."""
        topology = os.path.join(self.dir, "topology-op.conf")
        with open(topology, "w") as f:
            f.write(f'experiment: "tls-op"\nlisten: "unix:{self.dir}/op.sock"\n'
                    f'store: "{self.dir}/store"\nallow_unsynchronized: true\n'
                    f'tls {{ ca: "{self.certs}/ca.pem" cert: "{self.certs}/operator.pem" '
                    f'key: "{self.certs}/operator.key" }}\n'
                    f'delay_node {{ id: "dn1" address: "{self.node_address}" link: "l" }}\n')
        controller = Process([os.path.join(BUILD, "controller", "amber-controller"),
                              "--topology", topology],
                             os.path.join(self.dir, "controller-op.log"), "serving on",
                             "amber-controller")
        try:
            ctl = ["--controller", f"unix:{self.dir}/op.sock",
                   *self.tls_args(self.certs, "operator")]
            r = self.amberctl(*ctl, "--json", "status")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(json.loads(r.stdout)["agents"][0]["reachable"])
            r = self.amberctl(*ctl, "checkpoint")
            self.assertEqual(r.returncode, 1)
            self.assertIn("permission denied", r.stderr)
            self.assertIn("nothing was touched", r.stderr)
            self.assertFalse(self.frozen())
        finally:
            controller.stop()

    def test_controller_refuses_strangers(self):
        for extra in (self.tls_args(self.rogue, "operator"), []):
            r = self.amberctl("--controller", self.controller_address, *extra, "--timeout", "5s",
                              "status")
            self.assertEqual(r.returncode, 1, extra)
            self.assertIn("unavailable", r.stderr)

    def test_plain_text_beyond_loopback_is_refused_at_start(self):
        r = subprocess.run([os.path.join(BUILD, "delaynode", "amber-delaynode"), "-l", "0",
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
