#!/bin/bash
# Runs a command (an evaluation) while holding the experiment's QEMUs and
# delay node at one CPU placement, re-applied every 0.5 s so that threads
# started later are caught too. Two placements, as README.md's
# "Why the resumed receiver is late" measured them:
#
#   bench/transparency/placement.sh nice N -- COMMAND...
#       every thread of every QEMU at nice N
#   bench/transparency/placement.sh pin -- COMMAND...
#       vm2's QEMU (the receiver) alone on CPU 1; vm1's QEMU and the delay
#       node on CPU 0
#
# Only processes the command started are touched (QEMUs whose command line
# names an amber run folder under /tmp/amb-, and every amber-delaynode); the loop
# ends with the command.
set -u
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
mode=$1; shift
case "$mode" in
  nice) [ $# -ge 2 ] || usage; level=$1; shift
        [[ "$level" =~ ^-?[0-9]+$ ]] && [ "$level" -ge -20 ] && [ "$level" -le 19 ] ||
          { echo "placement.sh: nice $level: a number from -20 to 19" >&2; exit 2; } ;;
  pin)  ;;
  *)    usage ;;
esac
[ "${1:-}" = "--" ] || usage
shift
[ $# -ge 1 ] || usage

ours() {  # PIDs of the experiment's QEMUs
  for p in $(pgrep -f qemu-system-x86_64); do
    tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q "/tmp/amb-" && echo "$p"
  done
}
hold() {
  while true; do
    for p in $(ours); do
      if [ "$mode" = nice ]; then
        for t in /proc/$p/task/*; do renice -n "$level" -p "${t##*/}" > /dev/null 2>&1; done
      elif tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q -- "-name vm2"; then
        taskset -a -p -c 1 "$p" > /dev/null 2>&1
      else
        taskset -a -p -c 0 "$p" > /dev/null 2>&1
      fi
    done
    if [ "$mode" = pin ]; then
      for p in $(pgrep -x amber-delaynode); do taskset -a -p -c 0 "$p" > /dev/null 2>&1; done
    fi
    sleep 0.5
  done
}
hold &
holder=$!
trap 'kill $holder 2>/dev/null' EXIT
"$@"
