#!/usr/bin/env bash
# Idempotent setup for `cargo xtask vm-test` only (the normal suite does not need it):
# QEMU from Debian, busybox-static, and the kernels of the matrix — Debian and Ubuntu
# packages, downloaded (never installed) and cut down to what the VM boots: vmlinuz, the few
# modules the tests load (`modules` below), and the config. Everything lands under target/vm/
# (gitignored).
#
# Kernels:
# - the flavours of Debian's linux-image meta packages reachable from this machine's apt
#   sources (VM_FLAVOURS, default "amd64 cloud-amd64"; bookworm: 6.1);
# - the `amd64` flavour of other Debian suites (VM_SUITES, default "trixie forky bullseye":
#   6.12, 7.x, 5.10; empty: none), each through a private apt state under
#   target/vm/apt/<suite>/ (its own sources list, lists and cache);
# - Ubuntu's kernels of the series no Debian suite has (VM_UBUNTU, default
#   "5.4 5.11 5.13 5.14-oem 5.15 5.17-oem 5.19 6.0-oem 6.8": <series>[-<flavour>], flavour
#   `generic` unless named; empty: none), the newest of each series in focal-updates or
#   jammy-updates (VM_UBUNTU_SUITES names others, e.g. bionic-updates for 4.15 and 4.18),
#   through private apt states target/vm/apt/ubuntu-<suite>/.
# The machine's apt configuration is neither read for sources nor changed. Debian's suites
# are checked against Debian's archive keyring, Ubuntu's against Ubuntu's (ubuntu-keyring,
# itself fetched from Debian's trixie, under Debian's signature, when the machine lacks it);
# a suite whose signature does not verify is skipped, never fetched unverified.
# `rm -rf target/vm/apt` makes the next run read the suites afresh.
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

# zstd for the modules of newer kernels (.ko.zst: Ubuntu's 6.8; xz-utils comes with dpkg).
if ! command -v zstd >/dev/null 2>&1; then
  apt_update_once
  log "installing zstd"
  apt-get install -y -qq --no-install-recommends zstd >/dev/null
fi

# A static busybox for the initramfs: shell, mount, insmod, poweroff.
if [ ! -x "$vm/busybox" ]; then
  (cd "$vm/debs" && { apt-get download busybox-static 2>/dev/null || { apt_update_once; apt-get download busybox-static; }; })
  tmp=$(mktemp -d)
  dpkg-deb -x "$vm"/debs/busybox-static_*.deb "$tmp"
  install -m 0755 "$tmp/bin/busybox" "$vm/busybox"
  rm -rf "$tmp" "$vm"/debs/busybox-static_*.deb
fi

# The modules the guests load where the kernel builds them as modules: veth for the lab;
# sch_ingress (clsact) and cls_bpf for the egress program before TCX (6.6).
modules="veth cls_bpf sch_ingress"

# Whether kernel directory $1 has each of `modules`, as a file or built in (=y).
has_modules() {
  local m cfg
  for m in $modules; do
    cfg=CONFIG_$(tr 'a-z' 'A-Z' <<<"$m")
    case $m in sch_ingress) cfg=CONFIG_NET_SCH_INGRESS ;; cls_bpf) cfg=CONFIG_NET_CLS_BPF ;; esac
    if [ -z "$(find "$1" -name "$m.ko")" ] && ! grep -qx "$cfg=y" "$1"/boot/config-* 2>/dev/null; then
      return 1
    fi
  done
}

# The concrete package behind a meta package (linux-image-amd64 -> linux-image-6.1.0-NN-amd64);
# after it, the apt options to use (none: the machine's own apt state).
resolve() {
  local meta=$1
  shift
  { apt-cache "$@" depends "$meta" 2>/dev/null || true; } | awk '/Depends: linux-image-/ { print $2; exit }'
}

# Download kernel package $1 (apt options after it) and keep only what the VM boots, in
# target/vm/kernels/$1/: boot/vmlinuz-<release>, boot/config-<release> and the uncompressed
# `modules`. A kernel fetched before a module joined the list is fetched again. Up to 6.x Debian ships all of it in the image package under /boot and
# /lib/modules; from 7.x the image package is empty and depends on linux-base-* (the
# config), linux-binary-* (vmlinuz) and linux-modules-* (modules, .ko.xz), all under
# /usr/lib/modules/<release>/. Both layouts end up the same here, so vm-test reads one.
# Modules are decompressed on the host: busybox's insmod passes the file to init_module
# as it is, and only a kernel with CONFIG_MODULE_DECOMPRESS could take it compressed.
fetch_kernel() {
  local pkg=$1
  shift
  local dest="$vm/kernels/$pkg"
  if [ -f "$dest/.complete" ] && has_modules "$dest"; then
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
  log "downloading ${pkgs[*]} (not installed: only vmlinuz, config and the modules $modules are kept)"
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$vm/debs" && apt-get "$@" download "${pkgs[@]}")
  local p deb members
  for p in "${pkgs[@]}"; do
    deb=$(ls "$vm"/debs/"${p}"_*.deb | head -n1)
    # `dpkg-deb -x`, restricted to the files the VM needs (the modules are ~400 MB); the
    # members are listed first because not every package holds every kind of file.
    mapfile -t members < <(dpkg-deb --fsys-tarfile "$deb" | tar -t |
      grep -E '^\./(boot/(vmlinuz|config)-[^/]*|(usr/)?lib/modules/[^/]+/(vmlinuz|config)|.*/kernel/(drivers/net/veth|net/sched/(cls_bpf|sch_ingress))\.ko(\.xz|\.zst|\.gz)?)$' || true)
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
  done < <(find "$dest" -name '*.ko.*')
  if ! ls "$dest"/boot/vmlinuz-* >/dev/null 2>&1; then
    log "no vmlinuz in ${pkgs[*]}: the packaging changed? Adapt fetch_kernel in $0"
    exit 1
  fi
  if ! has_modules "$dest"; then
    log "one of the modules $modules is neither in ${pkgs[*]} nor built in (=y): the guests need them. Adapt fetch_kernel in $0"
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

# A private apt state under target/vm/apt/$1/ with the one sources line $2, left in `opts`
# (the options for apt-get and apt-cache). Only Packages of main for amd64 are fetched (no
# translations, no DEP-11 metadata); the machine's preferences do not pin anything here.
private_state() {
  local d="$vm/apt/$1"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "$2" >"$d/sources.list"
  opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
}

# Whether the private state target/vm/apt/$1/ has lists at all.
has_lists() {
  compgen -G "$vm/apt/$1/lists/*_Packages*" >/dev/null
}

# apt-get update of the private state $1 (in `opts`), signed by keyring $2; fails, with the
# reason logged, when the update fails or the signature does not verify.
update_state() {
  local out
  log "apt-get update for $1 (private state: target/vm/apt/$1)"
  if ! out=$(apt-get -qq "${opts[@]}" update 2>&1) || grep -qE '^(E|W): (GPG error|The repository)' <<<"$out"; then
    printf '%s\n' "$out" >&2
    if grep -qE 'NO_PUBKEY|EXPKEYSIG|BADSIG|is not signed|signatures? (was|were) invalid' <<<"$out"; then
      log "$1: its Release signature does not verify with $2 (a newer keyring may know its key): skipped, not fetched unverified"
    else
      log "$1: apt-get update failed (see above): skipped"
    fi
    return 1
  fi
}

# Other Debian suites, one private apt state each (one state for all would see only the
# newest linux-image-amd64).
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
debian_state() {
  private_state "$1" "deb [arch=amd64 signed-by=$keyring target=Packages] http://deb.debian.org/debian $1 main"
}
for suite in ${VM_SUITES-trixie forky bullseye}; do
  debian_state "$suite"
  pkg=$(resolve linux-image-amd64 "${opts[@]}")
  if [ -n "$pkg" ] && [ -f "$vm/kernels/$pkg/.complete" ] && has_modules "$vm/kernels/$pkg"; then
    continue
  fi
  # No lists yet, or a kernel to fetch (the lists may be stale: read them afresh).
  update_state "$suite" "$keyring" || continue
  pkg=$(resolve linux-image-amd64 "${opts[@]}")
  if [ -z "$pkg" ]; then
    log "no package behind linux-image-amd64 in $suite: skipped"
    continue
  fi
  fetch_kernel "$pkg" "${opts[@]}"
done

# Ubuntu's archive keyring: the machine's if it has one, else Debian's ubuntu-keyring package
# (trixie and later; bookworm has none), downloaded through a private trixie state under
# Debian's signature, of which only the keyring is kept, under target/vm/apt/. Fails when
# neither is to be had.
ubuntu_keyring() {
  ukeyring=/usr/share/keyrings/ubuntu-archive-keyring.gpg
  [ -f "$ukeyring" ] && return 0
  ukeyring="$vm/apt/ubuntu-archive-keyring.gpg"
  [ -f "$ukeyring" ] && return 0
  debian_state trixie
  if ! has_lists trixie; then
    update_state trixie "$keyring" || return 1
  fi
  # Stale lists name a file the archive no longer has: read them afresh once.
  if ! (cd "$vm/debs" && apt-get -qq "${opts[@]}" download ubuntu-keyring 2>/dev/null); then
    update_state trixie "$keyring" || return 1
    (cd "$vm/debs" && apt-get -qq "${opts[@]}" download ubuntu-keyring) || return 1
  fi
  local deb tmp
  deb=$(ls "$vm"/debs/ubuntu-keyring_*.deb | head -n1)
  tmp=$(mktemp -d)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/share/keyrings/ubuntu-archive-keyring.gpg
  install -m 0644 "$tmp/usr/share/keyrings/ubuntu-archive-keyring.gpg" "$ukeyring"
  rm -rf "$tmp" "$deb"
  # Called as a condition, where `set -e` does not stop at a failed step: check the result.
  [ -s "$ukeyring" ] || return 1
  log "Ubuntu's archive keyring from Debian's $(basename "$deb"): target/vm/apt/ubuntu-archive-keyring.gpg"
}

# Ubuntu: 20.04's own 5.4 and the series from 5.11 to 6.0 are in no Debian suite. Ubuntu
# 20.04's kernels (5.4; HWE and OEM 5.11, 5.13, 5.14-oem: the closest to RHEL 9's 5.14) are in
# focal-updates,
# 22.04's (5.15, 5.17-oem, 5.19, 6.0-oem, and 24.04's 6.8 as HWE) in jammy-updates. Every
# ABI is a package of its own (linux-image-5.14.0-1059-oem), so the newest of a series is
# the highest ABI among the suites (a tie, as 5.15 in both: the later suite, the series' own
# release). The signed image is taken (what a machine installs; its EFI signature does not
# matter to -kernel) with its linux-modules-* (config, veth.ko).
ubuntu_suites=${VM_UBUNTU_SUITES-focal-updates jammy-updates}
ubuntu_state() {
  private_state "ubuntu-$1" "deb [arch=amd64 signed-by=$ukeyring target=Packages] http://archive.ubuntu.com/ubuntu $1 main"
}
# "<abi> <suite> <package>", a line per kernel image (linux-image-<x.y>.0-<abi>-<flavour>)
# in the Ubuntu suites' lists.
ubuntu_images() {
  local s
  for s in $ubuntu_suites; do
    ubuntu_state "$s"
    apt-cache "${opts[@]}" pkgnames linux-image- 2>/dev/null |
      awk -F- -v s="$s" '/^linux-image-[0-9]+\.[0-9]+\.0-[0-9]+-[a-z]/ { print $4, s, $0 }'
  done
}
# "<suite> <package>" of the newest image in $images for entry $1 of VM_UBUNTU
# (<series>[-<flavour>]: 5.14-oem, 6.8), if any.
ubuntu_pick() {
  local series=${1%%-*} flavour=generic
  [ "$1" = "$series" ] || flavour=${1#*-}
  awk -v p="linux-image-$series.0-" -v f="^[0-9]+-$flavour\$" \
    'index($3, p) == 1 && substr($3, length(p) + 1) ~ f' <<<"$images" | sort -s -k1,1n | tail -n1 | cut -d' ' -f2-
}
ubuntu=${VM_UBUNTU-5.4 5.11 5.13 5.14-oem 5.15 5.17-oem 5.19 6.0-oem 6.8}
if [ -n "$ubuntu" ] && ! ubuntu_keyring; then
  log "no Ubuntu archive keyring (ubuntu-keyring) to verify Ubuntu's suites with: Ubuntu kernels skipped, not fetched unverified"
  ubuntu=""
fi
if [ -n "$ubuntu" ]; then
  # The suites are read again only when one has no lists yet, or a series has no kernel
  # fetched (or none at all in the lists we have).
  fresh=0
  for s in $ubuntu_suites; do
    has_lists "ubuntu-$s" || fresh=1
  done
  images=$(ubuntu_images)
  for entry in $ubuntu; do
    [ "$fresh" = 0 ] || break
    read -r _ pkg <<<"$(ubuntu_pick "$entry")"
    [ -n "$pkg" ] && [ -f "$vm/kernels/$pkg/.complete" ] && has_modules "$vm/kernels/$pkg" || fresh=1
  done
  if [ "$fresh" = 1 ]; then
    verified=""
    for s in $ubuntu_suites; do
      ubuntu_state "$s"
      update_state "ubuntu-$s" "$ukeyring" && verified="$verified $s"
    done
    ubuntu_suites=${verified# }
    images=$(ubuntu_images)
  fi
  for entry in $ubuntu; do
    read -r suite pkg <<<"$(ubuntu_pick "$entry")"
    if [ -z "$pkg" ]; then
      log "no Ubuntu kernel of series $entry in ${ubuntu_suites:-no verified suite}: skipped"
      continue
    fi
    ubuntu_state "$suite"
    fetch_kernel "$pkg" "${opts[@]}"
  done
fi
log "ok"
