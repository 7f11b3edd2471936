#!/usr/bin/env bash
# Builds the image reader's libFuzzer target with clang (ASan + UBSan) and
# runs it for a bounded time on a seed corpus of valid images. Fails on a
# crash; exits 77 (skipped) when clang cannot build fuzzers.
#
#   tests/core-checkpoint/fuzz/run.sh SOURCE_ROOT BUILD_DIR [SECONDS]
#
# BUILD_DIR must hold the generated proto/image.pb.cc and
# tests/core-checkpoint/make_test_image (meson builds both).
set -euo pipefail
src=$(cd "${1:?usage: run.sh SOURCE_ROOT BUILD_DIR [SECONDS]}" && pwd)
build=$(cd "${2:?usage: run.sh SOURCE_ROOT BUILD_DIR [SECONDS]}" && pwd)
seconds=${3:-30}
cxx=${CXX_FUZZ:-clang++}

say() { printf '[fuzz] %s\n' "$*"; }

command -v "$cxx" >/dev/null || { say "skipped: $cxx not found"; exit 77; }
work="$build/tests/core-checkpoint/fuzz-work"
mkdir -p "$work"
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
    "$cxx" -x c++ -fsanitize=fuzzer - -o "$work/probe" 2>"$work/probe.log"; then
  say "skipped: $cxx does not support -fsanitize=fuzzer ($(head -1 "$work/probe.log"))"
  exit 77
fi

sources=(
  "$src/tests/core-checkpoint/fuzz/image_reader_fuzz.cpp"
  "$src/core-checkpoint/convert.cpp" "$src/core-checkpoint/crc32c.cpp"
  "$src/core-checkpoint/frame_codec.cpp" "$src/core-checkpoint/frame_summary.cpp"
  "$src/core-checkpoint/image_reader.cpp"
  "$src/link-emulator/pipe_config.cpp" "$src/link-emulator/schedule.cpp" \
  "$src/link-emulator/link_event.cpp" "$src/link-emulator/pipe_edit.cpp"
  "$src/common/status.cpp" "$src/common/units.cpp"
  "$build/proto/image.pb.cc"
)
fuzzer="$work/image_reader_fuzz"
stale=0
[ -x "$fuzzer" ] || stale=1
for f in "${sources[@]}" "$src"/core-checkpoint/*.h; do
  [ "$f" -nt "$fuzzer" ] && stale=1
done
if [ "$stale" = 1 ]; then
  say "building $fuzzer"
  "$cxx" -std=c++20 -O1 -g -march=native -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -I"$src" -I"$build" "${sources[@]}" -lprotobuf -lpthread \
    -o "$fuzzer.new"
  mv "$fuzzer.new" "$fuzzer"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/amber-ckpt-fuzz-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/seeds" "$tmp/corpus"
maker="$build/tests/core-checkpoint/make_test_image"
"$maker" "$tmp/seeds/one-pipe.img" 4 1
"$maker" "$tmp/seeds/two-pipes.img" 6 2
"$maker" "$tmp/seeds/empty.img" 0 3
say "running for ${seconds}s on $(ls "$tmp/seeds" | wc -l) seed images"
"$fuzzer" -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$work/" "$tmp/corpus" "$tmp/seeds" 2>&1 | tail -25
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  say "FAILED (exit $status): crash inputs are in $work/"
  exit 1
fi
say "no crash"
