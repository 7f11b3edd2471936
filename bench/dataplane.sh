#!/usr/bin/env bash
# The delay node's benchmarks (issue #3), as tables:
#  1. forwarding rate on ring ports vs a testpmd-style io forwarder (9
#     alternating runs, with the reference bounds), and the delay error at a
#     10 Gbit/s-equivalent load (bench/dataplane/forward_bench)
#  2. amber vs the Linux peers on the same links (bench/dataplane_peers.py)
#  3. how an idle worker waits: on its sockets or by polling, CPU and
#     lateness side by side (bench/dataplane_idle.py)
# Run as root on an otherwise idle machine: runs in which a forwarder or its
# source lost the CPU to another process do not count (the table says how
# many did).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-build}
cd "$here"
[ -x "$build_dir/bench/dataplane/forward_bench" ] || scripts/setup.sh
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== 1. forwarding rate and delay accuracy, ring ports, one forwarding lcore =="
"$build_dir/bench/dataplane/forward_bench" --bounds --seconds "${AMBER_BENCH_SECONDS:-1}" \
  --runs "${AMBER_BENCH_RUNS:-9}"
echo
echo "== 2. amber vs Linux peers, two namespaces, iperf3 and ping =="
# Its helpers are the amberlab package (python/README.md).
PYTHONPATH="$here/python${PYTHONPATH:+:$PYTHONPATH}" python3 bench/dataplane_peers.py "$build_dir"
echo
echo "== 3. the idle worker: waiting on its af_packet sockets vs looking every idle_sleep =="
PYTHONPATH="$here/python${PYTHONPATH:+:$PYTHONPATH}" python3 bench/dataplane_idle.py "$build_dir"
