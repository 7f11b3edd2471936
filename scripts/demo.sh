#!/usr/bin/env bash
# amber's end-to-end demo, from a fresh Debian 12 machine (as root): set-up,
# build, then scripts/demo.py: iperf3 across a DPDK delay node between two
# network namespaces, the node frozen, its in-flight frames listed and saved
# to an image, thawed; then the link model's transparency check. It grows
# into the two-VM iperf3 demo with the controller.
#
#   scripts/demo.sh [demo.py options]   (scripts/demo.py --help)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
"$here/scripts/setup.sh"
exec python3 "$here/scripts/demo.py" --build "${AMBER_BUILD_DIR:-build}" "$@"
