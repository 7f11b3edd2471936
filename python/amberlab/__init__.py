"""amber's Python side: the scenario tests' and benchmarks' helpers and the
transparency evaluation (python/README.md).

  amberlab.lab           network namespaces, veth and taps, processes, QEMU
                         VMs, ptp4l: the plumbing the scenario tests drive
  amberlab.experiment    a whole experiment (delay node, VM-host agent,
                         controller, VMs) through amberctl
  amberlab.transparency  the transparency evaluation and its report
  amberlab.demo          scripts/demo.sh's demo

The package is found through PYTHONPATH=<repository>/python: scripts/amber-py,
the shell wrappers and the meson tests set it."""

import os
import sys

# python/amberlab/__init__.py: the repository is two folders up.
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_DIR = os.path.join(SOURCE_DIR, "python")


def module_command(name, *args):
    """The command line that runs amberlab.<name> as a program with this
    interpreter; pass module_env() with it so the child finds the package."""
    return [sys.executable, "-m", f"amberlab.{name}", *[str(a) for a in args]]


def module_env():
    """The environment for module_command(): this one with the package's
    folder first on PYTHONPATH."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=PYTHON_DIR + (os.pathsep + path if path else ""))
