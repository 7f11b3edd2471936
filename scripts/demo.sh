#!/usr/bin/env bash
# amber's end-to-end demo, from a fresh Debian 12 machine (as root): set-up
# (packages, hugepages, build, the guest image), then the demo itself
# (python/amberlab/demo.py, run by scripts/amber-py): two QEMU VMs across a
# DPDK delay node emulating a long fat link, iperf3 between them,
# checkpoints of the whole experiment every 5 s (VMs and the frames in
# flight together) against no checkpoints and against pausing only the
# VMs, a restore with the transfer continuing, and the transparency report.
#
#   scripts/demo.sh [demo options]   (scripts/demo.sh --help; --quick: ~3 min)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
"$here/scripts/setup.sh"
build=${AMBER_BUILD_DIR:-build}
"$here/scripts/build-guest.sh" "$build"
# Debian's python3 (amber-py uses it): the report needs its numpy and
# matplotlib packages.
exec "$here/scripts/amber-py" demo --build "$build" "$@"
