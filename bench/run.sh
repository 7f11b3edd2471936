#!/usr/bin/env bash
# Runs amber's benchmarks and prints their tables. Each is also runnable on
# its own; see README.md, "Performance".
#
#   bench/run.sh            all benchmarks
#   bench/run.sh pipe       the link model only
#   bench/run.sh dataplane  the delay node (root)
#   bench/run.sh checkpoint the checkpoint image: save and restore throughput
#   bench/run.sh clock      clock-sync: firing error, ptp4l offsets (root)
#   bench/run.sh vm         vm-checkpoint: stop, save, restore, 4-VM skew (root)
#   bench/run.sh netem      amber vs netem in a bridge VM (root, ~3 min; not in "all")
#   bench/run.sh transparency [DIR]
#                           the transparency evaluation: 20 checkpoints of two VMs
#                           and the delay node vs baseline and naive (root, ~13 min;
#                           not in "all"); the report goes to DIR (default
#                           build/transparency-DATE)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-build}
what=${1:-all}
cd "$here"
[ -x "$build_dir/bench/pipe_bench" ] || scripts/setup.sh

machine() {
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
}

if [ "$what" = all ] || [ "$what" = pipe ]; then
  echo "== link model: enqueue + dequeue per frame, 10^5 frames held (median of 5) =="
  machine
  "$build_dir/bench/pipe_bench" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_min_time=0.5 2>/dev/null |
    awk '/_median/ {
      name=$1; sub(/_median/, "", name); ns=""; allocs=""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^ns_per_frame=/) { ns=$i; sub(/ns_per_frame=/, "", ns) }
        if ($i ~ /^allocs_per_frame=/) { allocs=$i; sub(/allocs_per_frame=/, "", allocs) }
      }
      printf "  %-22s %12s/frame  %8.1f Mframes/s  allocations/frame %s\n", name, ns, 1000/ns, allocs
    }'
fi

if [ "$what" = all ] || [ "$what" = dataplane ]; then
  echo
  bench/dataplane.sh
fi

if [ "$what" = all ] || [ "$what" = checkpoint ]; then
  echo
  bench/core_checkpoint.sh
  echo
  echo "== a running node: freeze latency, save/restore from and into mbufs (ring ports) =="
  "$build_dir/bench/core-checkpoint/node_bench" 2>/dev/null
fi
if [ "$what" = all ] || [ "$what" = clock ]; then
  echo
  bench/clock_sync.sh
fi
if [ "$what" = all ] || [ "$what" = vm ]; then
  echo
  bench/vm_checkpoint.sh
fi

if [ "$what" = netem ]; then
  python3 bench/netem_vm.py "$build_dir"
fi

if [ "$what" = transparency ]; then
  out=${2:-$build_dir/transparency-$(date +%Y%m%d-%H%M%S)}
  machine
  scripts/build-guest.sh "$build_dir"
  /usr/bin/python3 bench/transparency/evaluate.py "$build_dir" "$out" --duration 60 --interval 5 \
    --runs baseline,amber:lead,amber:shift,amber:shiftboost,naive,baseline --restore 3
fi
