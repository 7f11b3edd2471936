#!/usr/bin/env bash
# Builds amber's tiny test guest from Debian packages only: Debian's cloud
# kernel, and an initramfs with busybox, the virtio modules, iperf3 and its
# libraries, the bridge and sch_netem modules with tc (for the netem bridge
# VM of bench/netem_vm.py), the measurement probe (guest/probe.c, built
# static here) and guest/init. Also a small ext4 base disk image.
#
#   scripts/build-guest.sh [BUILD_DIR]     (default: $AMBER_BUILD_DIR or build)
#
# Output (cached; a second run with the inputs unchanged does nothing):
#   BUILD_DIR/guest/vmlinuz  BUILD_DIR/guest/initramfs.cpio.gz  BUILD_DIR/guest/base.qcow2
# Downloaded .deb files are kept in BUILD_DIR/guest/debs/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${1:-${AMBER_BUILD_DIR:-$here/build}}
out=$build_dir/guest
init_src=$here/guest/init
probe_src=$here/guest/probe.c
stamp=$out/.stamp

say() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] error: %s\n' "$*" >&2; exit 1; }

# The cache key: this script, the init and the probe's source.
key=$(cat "${BASH_SOURCE[0]}" "$init_src" "$probe_src" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] &&
   [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/base.qcow2" ]; then
  exit 0
fi

for tool in apt-get dpkg-deb cpio gzip mkfs.ext4 qemu-img gcc; do
  command -v "$tool" >/dev/null || die "'$tool' is missing (run scripts/setup.sh)"
done
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list | grep -x insmod >/dev/null || die "busybox-static is not installed"

mkdir -p "$out/debs"
tmp=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Resolve the meta package to the versioned kernel image package.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
       awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64 (apt-get update?)"
fetch() {
  local pkg=$1
  if ! ls "$out/debs/${pkg}_"*.deb >/dev/null 2>&1; then
    say "downloading $pkg"
    (cd "$out/debs" && apt-get download -q "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  fi
  dpkg-deb -x "$(ls "$out/debs/${pkg}_"*.deb | head -1)" "$tmp/pkgs"
}
for p in "$kpkg" iperf3 libiperf0 libsctp1; do fetch "$p"; done
kver=$(ls "$tmp/pkgs/lib/modules")

root=$tmp/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,lib64,lib/x86_64-linux-gnu,proc,sys,dev,etc,root}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         failover net_failover virtio_net virtio_blk llc stp bridge sch_netem; do
  f=$(find "$tmp/pkgs/lib/modules/$kver" -name "$m.ko*" | head -1)
  [ -n "$f" ] || die "module $m not found in $kpkg"
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done
# iperf3 from the package, its libraries from the packages or the host's libc.
cp "$tmp/pkgs/usr/bin/iperf3" "$root/usr/bin/"
cp -a "$tmp/pkgs/usr/lib/x86_64-linux-gnu/"lib{iperf,sctp}.so.* "$root/lib/x86_64-linux-gnu/"
for lib in libc.so.6 libm.so.6 libcrypto.so.3; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/"
done
# tc from the host's iproute2 (Debian 12's package), with every library it
# links; busybox's tc applet knows no netem, so its link goes.
tc=/sbin/tc
[ -x "$tc" ] || die "tc is missing (iproute2)"
rm -f "$root/bin/tc"
cp -L "$tc" "$root/sbin/tc"
for lib in $(ldd "$tc" | awk '$3 ~ /^\// {print $3}'); do
  cp -L "$lib" "$root/lib/x86_64-linux-gnu/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# The probe: static, so it needs nothing from the initramfs.
gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/probe" "$probe_src" -lpthread ||
  die "building $probe_src failed (gcc and libc6-dev are needed)"
strip "$root/bin/probe"
install -m 0755 "$init_src" "$root/init"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initramfs.cpio.gz"

# Base disk: a small ext4 with a marker file; VMs run on overlays over it.
mkdir -p "$tmp/disk"
echo "amber base image" > "$tmp/disk/base.txt"
mkfs.ext4 -q -F -L amber-base -d "$tmp/disk" "$tmp/base.raw" 32M >/dev/null
qemu-img convert -q -f raw -O qcow2 "$tmp/base.raw" "$tmp/base.qcow2"

cp "$tmp/pkgs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
mv "$tmp/vmlinuz" "$out/vmlinuz"
mv "$tmp/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
mv "$tmp/base.qcow2" "$out/base.qcow2"
chmod 0444 "$out/base.qcow2"
echo "$key" > "$stamp"
say "guest ready in $out (kernel $kver)"
