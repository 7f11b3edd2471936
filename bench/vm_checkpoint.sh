#!/usr/bin/env bash
# vm-checkpoint timings on real QEMU: stop latency, save time and rate, state
# size, restore time, resume latency (256 MiB guest with 160 MiB of RAM
# dirtied), and the STOP skew of 4 VMs stopped at one instant.
#
#   bench/vm_checkpoint.sh [RUNS]      (build dir: $AMBER_BUILD_DIR or build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-$here/build}
runs=${1:-5}
ninja -C "$build_dir" bench/vm-checkpoint/vm_checkpoint_bench >/dev/null
"$here/scripts/build-guest.sh" "$build_dir"
work=$(mktemp -d /tmp/amb-vm-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(uname -r), $(qemu-system-x86_64 --version | head -1)"
"$build_dir/bench/vm-checkpoint/vm_checkpoint_bench" "$build_dir/guest" "$work" 256 160 "$runs" 4
