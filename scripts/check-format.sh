#!/usr/bin/env bash
# Every C++ source of the project laid out as .clang-format says; CI runs
# it as the unit test `format`.
#
#   scripts/check-format.sh         name each file that differs, with the
#                                   first lines of how; exit 1 if any does
#   scripts/check-format.sh --fix   reformat those files in place
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fix=false
case "${1:-}" in
  --fix) fix=true ;;
  "") ;;
  *) echo "usage: scripts/check-format.sh [--fix]" >&2; exit 2 ;;
esac
command -v clang-format >/dev/null ||
  { echo "check-format: clang-format is missing (scripts/setup.sh installs it)" >&2; exit 2; }

# The project's own files: tracked ones in a checkout, else every source
# outside the build folders.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.h')
else
  mapfile -t files < <(find . -path './build*' -prune -o \( -name '*.cpp' -o -name '*.h' \) -print)
fi
[ ${#files[@]} -gt 0 ] || { echo "check-format: no C++ files found under $root" >&2; exit 2; }

if $fix; then
  clang-format -i "${files[@]}"
  exit 0
fi
differ=0
for f in "${files[@]}"; do
  if ! out=$(clang-format "$f" | diff -u "$f" - 2>&1); then
    differ=$((differ + 1))
    echo "$f: not as .clang-format lays it out:"
    echo "$out" | sed -n '3,14p'
  fi
done
if [ $differ -gt 0 ]; then
  echo "check-format: $differ of ${#files[@]} files differ; scripts/check-format.sh --fix reformats them"
  exit 1
fi
echo "check-format: all ${#files[@]} C++ files as .clang-format lays them out"
