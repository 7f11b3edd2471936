#!/usr/bin/env bash
# The delay node's own cost during an evaluation, as README, Performance
# ("The delay node's own CPU") reports it: the share of a core the node's
# process used over its life, and per run the frames it sent and its bursts
# sent 1 ms or more late (runs/*/run.json, delaynode).
#
#   bench/transparency/node_cpu.sh EVAL_DIR -- scripts/amber-py transparency.evaluate build EVAL_DIR ...
#
# Samples the newest amber-delaynode process once a second while the
# command runs (run it alone: another node on the machine would be taken).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ $# -lt 3 ] || [ "$2" != "--" ]; then
  echo "usage: $0 EVAL_DIR -- COMMAND..." >&2
  exit 2
fi
eval_dir=$1
shift 2
"$@" &
cmd=$!
pid="" ticks="" start="" last=""
while kill -0 "$cmd" 2>/dev/null; do
  p=$(pgrep -n -x amber-delaynode || true)
  if [ -n "$p" ]; then
    [ "$p" != "$pid" ] && { pid=$p; start=$(date +%s); }
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
    [ -n "$t" ] && { ticks=$t; last=$(date +%s); }
  fi
  sleep 1
done
rc=0
wait "$cmd" || rc=$?
if [ -n "$ticks" ] && [ "$last" -gt "$start" ]; then
  hz=$(getconf CLK_TCK)
  echo "delay node: $(awk -v t="$ticks" -v hz="$hz" -v s=$((last - start)) \
    'BEGIN { printf "%.1f s of CPU over %d s: %.0f %% of a core", t / hz, s, 100 * t / hz / s }')"
else
  echo "delay node: not seen running"
fi
PYTHONPATH="$here/python" python3 - "$eval_dir" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "runs", "*", "run.json"))):
    j = json.load(open(f))
    n = j.get("delaynode") or {}
    print(f"  {os.path.basename(os.path.dirname(f))}: frames sent {n.get('frames_out')}, "
          f"bursts sent >= 1 ms late {n.get('late_bursts_1ms')}")
PY
exit "$rc"
