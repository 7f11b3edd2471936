#!/usr/bin/env bash
# clock-sync benchmarks (see clock-sync/README.md, "Measured"):
#  1. firing error of scheduled actions (p50, p99, max over 1000 actions 1 ms
#     apart), normal vs SCHED_FIFO, idle vs the other core busy;
#  2. the offset a free-running ptp4l slave reports from its grandmaster
#     between two namespaces, after convergence (~40 s).
#
#   bench/clock_sync.sh            both
#   bench/clock_sync.sh firing     1 only
#   bench/clock_sync.sh ptp        2 only
# Needs root (SCHED_FIFO, namespaces). Only its own processes are killed, by PID.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-build}
what=${1:-all}
cd "$here"
ninja -C "$build_dir" bench/clock-sync/clock_sync_firing_bench \
  bench/clock-sync/clock_sync_ptp_offset_bench >/dev/null
bench=$build_dir/bench/clock-sync/clock_sync_firing_bench
offset_bench=$build_dir/bench/clock-sync/clock_sync_ptp_offset_bench

master_ns=amb-cs-b-m
slave_ns=amb-cs-b-s
hog_pid=""
ptp_pids=()
work=""
cleanup() {
  if [ -n "$hog_pid" ]; then kill "$hog_pid" 2>/dev/null || true; wait "$hog_pid" 2>/dev/null || true; fi
  for pid in "${ptp_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  ip netns del "$master_ns" 2>/dev/null || true
  ip netns del "$slave_ns" 2>/dev/null || true
  if [ -n "$work" ] && [ -z "${AMBER_KEEP_LOGS:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "kernel $(uname -r), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg) (machine shared with other builds)"

fmt_us() { awk -v ns="$1" 'BEGIN { if (ns < 1000) printf "%d ns", ns; else printf "%.1f us", ns / 1000 }'; }

# One configuration, 3 runs of 1000 actions: the median run's p50 and p99,
# the worst max, and how many of the 3000 fired more than 20 us late.
firing_row() {  # label, priority [, spin margin in us]
  local p50s=() p99s=() max=0 over=0 late=0 sched out
  for _ in 1 2 3; do
    out=$(taskset -c 0 "$bench" --count=1000 --interval-us=1000 --spin-margin-us="${3:-500}" \
      --rt-priority="$2" 2>/dev/null)
    p50s+=("$(sed -E 's/.*p50_ns=([0-9-]+).*/\1/' <<<"$out")")
    p99s+=("$(sed -E 's/.*p99_ns=([0-9-]+).*/\1/' <<<"$out")")
    local m
    m=$(sed -E 's/.*max_ns=([0-9-]+).*/\1/' <<<"$out")
    [ "$m" -gt "$max" ] && max=$m
    over=$((over + $(sed -E 's/.*over20us=([0-9]+).*/\1/' <<<"$out")))
    late=$((late + $(sed -E 's/.*late_wake=([0-9]+).*/\1/' <<<"$out")))
    sched=$(sed -E 's/.*sched=([A-Za-z_]+).*/\1/' <<<"$out")
  done
  local p50 p99
  p50=$(printf "%s\n" "${p50s[@]}" | sort -n | sed -n 2p)
  p99=$(printf "%s\n" "${p99s[@]}" | sort -n | sed -n 2p)
  printf "  %-22s %-11s %10s %10s %10s %7s %9s\n" "$1" "$sched" "$(fmt_us "$p50")" \
    "$(fmt_us "$p99")" "$(fmt_us "$max")" "$over" "$late"
}

if [ "$what" = all ] || [ "$what" = firing ]; then
  echo "== firing error, 3 x 1000 actions 1 ms apart, spin margin 500 us, pinned to CPU 0 =="
  echo "   (p50, p99: the median of 3 runs; max: the worst; >20us: of 3000; late wake: of those,"
  echo "    the ones whose sleep already ended after T; the others were preempted while spinning)"
  printf "  %-22s %-11s %10s %10s %10s %7s %9s\n" "other core" "scheduling" "p50" "p99" "max" \
    ">20us" "late wake"
  firing_row "idle" 0
  firing_row "idle" 50
  taskset -c 1 bash -c 'while :; do :; done' &
  hog_pid=$!
  firing_row "busy (spin loop)" 0
  firing_row "busy (spin loop)" 50
  kill "$hog_pid"; wait "$hog_pid" 2>/dev/null || true; hog_pid=""
  echo "== spin margin, other core idle, SCHED_FIFO =="
  for margin in 50 150 500; do firing_row "margin $margin us" 50 "$margin"; done
fi

if [ "$what" = all ] || [ "$what" = ptp ]; then
  work=$(mktemp -d /tmp/amb-cs-bench-XXXXXX)
  ip netns del "$master_ns" 2>/dev/null || true
  ip netns del "$slave_ns" 2>/dev/null || true
  ip netns add "$master_ns"
  ip netns add "$slave_ns"
  ip link add amb-cs-b-m0 netns "$master_ns" type veth peer name amb-cs-b-s0 netns "$slave_ns"
  ip -n "$master_ns" link set amb-cs-b-m0 up
  ip -n "$slave_ns" link set amb-cs-b-s0 up
  fast=(--logSyncInterval=-2 --logMinDelayReqInterval=-2 --logAnnounceInterval=-2
    --announceReceiptTimeout=3)
  ip netns exec "$master_ns" ptp4l -i amb-cs-b-m0 -S -2 -m -q "${fast[@]}" \
    --uds_address="$work/master.sock" >"$work/master.log" 2>&1 &
  ptp_pids+=($!)
  ip netns exec "$slave_ns" ptp4l -i amb-cs-b-s0 -S -2 -s -m -q --free_running=1 "${fast[@]}" \
    --uds_address="$work/slave.sock" >"$work/slave.log" 2>&1 &
  ptp_pids+=($!)
  echo "== ptp4l pair, software timestamping, L2 over veth, free-running slave, 4 Sync/s =="
  echo "   (one kernel clock at both ends: the reported offset is the sync error itself;"
  echo "    samples read over the management socket for 40 s, from 5 s after the verdict)"
  for _ in $(seq 100); do [ -S "$work/slave.sock" ] && break; sleep 0.1; done
  "$offset_bench" --socket="$work/slave.sock" --seconds=40 --warmup=5
fi
