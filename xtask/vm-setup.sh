#!/usr/bin/env bash
# Idempotent setup for `cargo xtask vm-test` only (the normal suite does not need it):
# QEMU from Debian, busybox-static, and the kernels of the matrix — Debian packages,
# downloaded (never installed) and cut down to what the VM boots: vmlinuz, the few modules
# the tests load, and the config. Everything lands under target/vm/ (gitignored).
#
# Kernels: the flavours of Debian's linux-image meta packages reachable from this
# machine's apt sources (VM_FLAVOURS, default "amd64 cloud-amd64"; bookworm: 6.1).
set -euo pipefail

log() { printf '[vm-setup] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
vm="$root/target/vm"
mkdir -p "$vm/debs" "$vm/kernels"
export DEBIAN_FRONTEND=noninteractive

updated=0
apt_update_once() {
  if [ "$updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    updated=1
  fi
}

# QEMU (no recommends: no GUI, no firmware beyond SeaBIOS, which -kernel needs).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  apt_update_once
  log "installing qemu-system-x86"
  apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

# A static busybox for the initramfs: shell, mount, insmod, poweroff.
if [ ! -x "$vm/busybox" ]; then
  (cd "$vm/debs" && { apt-get download busybox-static 2>/dev/null || { apt_update_once; apt-get download busybox-static; }; })
  tmp=$(mktemp -d)
  dpkg-deb -x "$vm"/debs/busybox-static_*.deb "$tmp"
  install -m 0755 "$tmp/bin/busybox" "$vm/busybox"
  rm -rf "$tmp" "$vm"/debs/busybox-static_*.deb
fi

# The concrete package behind a meta package (linux-image-amd64 -> linux-image-6.1.0-NN-amd64).
resolve() {
  apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'
}

for flavour in ${VM_FLAVOURS:-amd64 cloud-amd64}; do
  pkg=$(resolve "linux-image-$flavour")
  if [ -z "$pkg" ]; then
    apt_update_once
    pkg=$(resolve "linux-image-$flavour")
  fi
  if [ -z "$pkg" ]; then
    log "no package behind linux-image-$flavour in this machine's apt sources: skipped"
    continue
  fi
  dest="$vm/kernels/$pkg"
  if [ -f "$dest/.complete" ]; then
    continue
  fi
  log "downloading $pkg (not installed: only vmlinuz, config and the veth module are kept)"
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$vm/debs" && apt-get download "$pkg")
  deb=$(ls "$vm"/debs/"${pkg}"_*.deb | head -n1)
  # `dpkg-deb -x`, restricted to the files the VM needs (the modules tree is ~400 MB).
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -C "$dest" --wildcards --no-anchored 'boot/vmlinuz-*' 'boot/config-*' \
      'kernel/drivers/net/veth.ko*'
  rm -f "$deb"
  touch "$dest/.complete"
done
log "ok"
