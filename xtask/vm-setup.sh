#!/usr/bin/env bash
# Idempotent setup for `cargo xtask vm-test` only (the normal suite does not need it):
# QEMU from Debian, busybox-static, and the kernels of the matrix — Debian packages,
# downloaded (never installed) and cut down to what the VM boots: vmlinuz, the few modules
# the tests load, and the config. Everything lands under target/vm/ (gitignored).
#
# Kernels:
# - the flavours of Debian's linux-image meta packages reachable from this machine's apt
#   sources (VM_FLAVOURS, default "amd64 cloud-amd64"; bookworm: 6.1);
# - the `amd64` flavour of other Debian suites (VM_SUITES, default "trixie forky bullseye":
#   6.12, 7.x, 5.10; empty: none), each through a private apt state under
#   target/vm/apt/<suite>/ (its own sources list, lists and cache). The machine's apt
#   configuration is neither read for sources nor changed; the suites are checked against
#   Debian's archive keyring, and a suite whose signature does not verify is skipped, never
#   fetched unverified. `rm -rf target/vm/apt` makes the next run read the suites afresh.
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

# The concrete package behind a meta package (linux-image-amd64 -> linux-image-6.1.0-NN-amd64);
# after it, the apt options to use (none: the machine's own apt state).
resolve() {
  local meta=$1
  shift
  { apt-cache "$@" depends "$meta" 2>/dev/null || true; } | awk '/Depends: linux-image-/ { print $2; exit }'
}

# Download kernel package $1 (apt options after it) and keep only what the VM boots, in
# target/vm/kernels/$1/: boot/vmlinuz-<release>, boot/config-<release> and an uncompressed
# veth.ko. Up to 6.x Debian ships all of it in the image package under /boot and
# /lib/modules; from 7.x the image package is empty and depends on linux-base-* (the
# config), linux-binary-* (vmlinuz) and linux-modules-* (modules, .ko.xz), all under
# /usr/lib/modules/<release>/. Both layouts end up the same here, so vm-test reads one.
# Modules are decompressed on the host: busybox's insmod passes the file to init_module
# as it is, and only a kernel with CONFIG_MODULE_DECOMPRESS could take it compressed.
fetch_kernel() {
  local pkg=$1
  shift
  local dest="$vm/kernels/$pkg"
  if [ -f "$dest/.complete" ]; then
    return 0
  fi
  # The image and the packages of the same kernel it depends on (same <release> suffix).
  local abi=${pkg#linux-image-}
  local pkgs
  mapfile -t pkgs < <(
    echo "$pkg"
    apt-cache "$@" depends "$pkg" | awk -v abi="$abi" '
      $1 == "Depends:" && $2 ~ /^linux-/ && length($2) > length(abi) &&
        substr($2, length($2) - length(abi) + 1) == abi { print $2 }'
  )
  log "downloading ${pkgs[*]} (not installed: only vmlinuz, config and the veth module are kept)"
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$vm/debs" && apt-get "$@" download "${pkgs[@]}")
  local p deb members
  for p in "${pkgs[@]}"; do
    deb=$(ls "$vm"/debs/"${p}"_*.deb | head -n1)
    # `dpkg-deb -x`, restricted to the files the VM needs (the modules are ~400 MB); the
    # members are listed first because not every package holds every kind of file.
    mapfile -t members < <(dpkg-deb --fsys-tarfile "$deb" | tar -t |
      grep -E '^\./(boot/(vmlinuz|config)-[^/]*|(usr/)?lib/modules/[^/]+/(vmlinuz|config)|.*/kernel/drivers/net/veth\.ko(\.xz|\.zst|\.gz)?)$' || true)
    if [ "${#members[@]}" -gt 0 ]; then
      dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest" "${members[@]}"
    fi
    rm -f "$deb"
  done
  # 7.x layout -> boot/vmlinuz-<release>, boot/config-<release>.
  local f rel
  mkdir -p "$dest/boot"
  for f in "$dest"/usr/lib/modules/*/vmlinuz "$dest"/usr/lib/modules/*/config; do
    [ -e "$f" ] || continue
    rel=$(basename "$(dirname "$f")")
    mv "$f" "$dest/boot/$(basename "$f")-$rel"
  done
  while IFS= read -r f; do
    case "$f" in
      *.xz) xz -d "$f" ;;
      *.zst) zstd -q -d --rm "$f" ;;
      *.gz) gzip -d "$f" ;;
    esac
  done < <(find "$dest" -name 'veth.ko.*')
  if ! ls "$dest"/boot/vmlinuz-* >/dev/null 2>&1; then
    log "no vmlinuz in ${pkgs[*]}: Debian's packaging changed? Adapt fetch_kernel in $0"
    exit 1
  fi
  if [ -z "$(find "$dest" -name veth.ko)" ] && ! grep -qx 'CONFIG_VETH=y' "$dest"/boot/config-* 2>/dev/null; then
    log "no veth.ko in ${pkgs[*]} and no CONFIG_VETH=y in its config: the lab needs veth. Adapt fetch_kernel in $0"
    exit 1
  fi
  touch "$dest/.complete"
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
  fetch_kernel "$pkg"
done

# Other suites, one private apt state each (one state for all would see only the newest
# linux-image-amd64). Only Packages of main for amd64 are fetched (no translations, no
# DEP-11 metadata); the machine's preferences do not pin anything here.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for suite in ${VM_SUITES-trixie forky bullseye}; do
  d="$vm/apt/$suite"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "deb [arch=amd64 signed-by=$keyring target=Packages] http://deb.debian.org/debian $suite main" >"$d/sources.list"
  opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
  pkg=$(resolve linux-image-amd64 "${opts[@]}")
  if [ -n "$pkg" ] && [ -f "$vm/kernels/$pkg/.complete" ]; then
    continue
  fi
  # No lists yet, or a kernel to fetch (the lists may be stale: read them afresh).
  log "apt-get update for $suite (private state: target/vm/apt/$suite)"
  if ! out=$(apt-get -qq "${opts[@]}" update 2>&1) || grep -qE '^(E|W): (GPG error|The repository)' <<<"$out"; then
    printf '%s\n' "$out" >&2
    if grep -qE 'NO_PUBKEY|EXPKEYSIG|BADSIG|is not signed|signatures? (was|were) invalid' <<<"$out"; then
      log "$suite: its Release signature does not verify with $keyring (a newer debian-archive-keyring may know its key): skipped, not fetched unverified"
    else
      log "$suite: apt-get update failed (see above): skipped"
    fi
    continue
  fi
  pkg=$(resolve linux-image-amd64 "${opts[@]}")
  if [ -z "$pkg" ]; then
    log "no package behind linux-image-amd64 in $suite: skipped"
    continue
  fi
  fetch_kernel "$pkg" "${opts[@]}"
done
log "ok"
