#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine for amber: installs the Debian
# packages amber builds and tests with, reserves and mounts hugepages, and
# builds into build/. Safe to run again: it only does what is missing.
#
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-build packages and hugepages only
#
# Environment: AMBER_HUGEPAGES (2 MiB pages to reserve, default 1024),
#              AMBER_BUILD_DIR (default build), AMBER_BUILDTYPE (default release).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${AMBER_BUILD_DIR:-build}
hugepages=${AMBER_HUGEPAGES:-1024}
do_build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) do_build=0 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and mounts hugetlbfs)"
[ -r /etc/debian_version ] || die "amber's set-up targets Debian 12; /etc/debian_version is missing"

# Build and library dependencies, then the real peers the tests drive.
packages=(
  meson ninja-build pkg-config g++ git
  libdpdk-dev dpdk dpdk-dev
  libpcap-dev libboost-dev
  libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libsqlite3-dev
  iproute2 ethtool iputils-ping iperf3 tcpdump procps psmisc
  linuxptp
  qemu-system-x86 qemu-utils busybox-static cpio xz-utils zstd
  python3 python3-matplotlib sqlite3
  clang libclang-rt-14-dev clang-format
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "all Debian packages present"
fi

# Hugepages for DPDK: reserve 2 MiB pages and mount hugetlbfs.
current=$(cat /proc/sys/vm/nr_hugepages)
if [ "$current" -lt "$hugepages" ]; then
  say "reserving $hugepages hugepages of 2 MiB (had $current)"
  echo "$hugepages" > /proc/sys/vm/nr_hugepages
  got=$(cat /proc/sys/vm/nr_hugepages)
  [ "$got" -ge "$hugepages" ] || say "warning: only $got hugepages could be reserved"
fi
if ! mount | grep -q ' type hugetlbfs '; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs none /dev/hugepages
  say "mounted hugetlbfs on /dev/hugepages"
fi

if [ "$do_build" -eq 1 ]; then
  cd "$here"
  if [ ! -f "$build_dir/build.ninja" ]; then
    say "configuring $build_dir/"
    meson setup "$build_dir" --buildtype="${AMBER_BUILDTYPE:-release}" >/dev/null
  fi
  say "building $build_dir/"
  ninja -C "$build_dir" >/dev/null || { ninja -C "$build_dir"; die "build failed"; }
fi
say "done"
