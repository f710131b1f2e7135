#!/usr/bin/env bash
# Idempotent machine setup for ps-agent: everything a fresh Debian machine of this kind
# lacks to build the eBPF program and run the tests and the demo. Quick when already done.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
# llvm-22 brings llc, which builds the stand-in "other" XDP program of the coexistence
# tests; systemd brings systemd-analyze, which verifies the unit `ps-agent install` writes;
# ethtool reads veth's per-queue XDP counters for the benchmark's threaded-NAPI flood.
for p in llvm-22-dev llvm-22 libpolly-22-dev zlib1g-dev libzstd-dev bpftool xdp-tools nftables \
         iptables tcpdump iproute2 util-linux systemd gzip ethtool; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
for c in rust-src clippy rustfmt; do
  if ! rustup component list --toolchain nightly --installed | grep -q "^$c"; then
    log "adding $c to nightly"
    rustup component add "$c" --toolchain nightly
  fi
done
for c in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$c"; then
    log "adding $c to the default toolchain"
    rustup component add "$c"
  fi
done

if ! command -v bpf-linker >/dev/null 2>&1; then
  log "building bpf-linker against LLVM 22 (about 2 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install --locked bpf-linker --no-default-features --features llvm-22
fi

if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ok"
