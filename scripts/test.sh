#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: set-up (packages,
# hugepages, build), then every test. Run as root: the integration tests
# build network namespaces, start DPDK on hugepages, ptp4l and QEMU.
#
#   scripts/test.sh               everything
#   scripts/test.sh --suite unit  one suite (unit, integration)
#   scripts/test.sh link-emulator one test by name
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
"$here/scripts/setup.sh"
build_dir=${AMBER_BUILD_DIR:-build}
exec meson test -C "$build_dir" --print-errorlogs --num-processes 1 "$@"
