#!/usr/bin/env bash
# amber's end-to-end demo, from a fresh Debian 12 machine: set-up, build,
# then the run. Today the run is the link model on its own: a long fat link
# frozen and thawed in the middle of a paced transfer, checked to be
# invisible in virtual time. It grows into the two-VM iperf3 demo.
#
#   scripts/demo.sh [amber-pipe-sim options]   (see --help)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
"$here/scripts/setup.sh"
build_dir=${AMBER_BUILD_DIR:-build}
if [ $# -eq 0 ]; then
  set -- --rate 1Gbit --delay 50ms --jitter 200us --frames 200000 --freeze-for 10s
fi
exec "$build_dir/link-emulator/amber-pipe-sim" "$@"
