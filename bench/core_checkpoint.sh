#!/usr/bin/env bash
# Checkpoint image save and restore throughput (core-checkpoint/): a node
# holding 1 Gbit/s x 500 ms per direction (two pipes, 62.5 MB each), in
# 1500-byte and in 64-byte frames, written to and read from a file in the
# page cache; then the 1500-byte case with fsync. Prints the median of
# --reps runs per line and the peak RSS beyond the frames' own buffers.
#
#   bench/core_checkpoint.sh [DIR]     DIR: where images go (default /tmp)
#
# Environment: AMBER_BUILD_DIR (default build), REPS (default 5).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-build}
dir=${1:-/tmp}
reps=${REPS:-5}
cd "$here"
bench="$build_dir/bench/core-checkpoint/image_bench"
if [ ! -x "$bench" ]; then
  ninja -C "$build_dir" bench/core-checkpoint/image_bench >/dev/null ||
    { echo "core_checkpoint.sh: cannot build $bench" >&2; exit 1; }
fi

echo "== checkpoint image: save/restore of 2 pipes x 62.5 MB (1 Gbit/s x 500 ms), median of $reps =="
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), images in $dir ($(df -T "$dir" | awk 'NR==2 {print $2}'))"
run() {
  local label=$1
  shift
  "$bench" --dir "$dir" --reps "$reps" "$@" | tail -n +2 | sed "s/^/  $(printf '%-7s' "$label") /"
}
run "1500 B" --length 1500 --frames-per-pipe 41667
run "64 B" --length 64 --frames-per-pipe 976563
run "1500 B" --length 1500 --frames-per-pipe 41667 --sync | grep save
