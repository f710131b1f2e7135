#!/usr/bin/env bash
# Idempotent machine setup for ps-agent: everything a fresh Debian machine of this kind
# lacks to build the eBPF program and run the tests and the demo. Quick when already done.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
# llvm-22 brings llc, which builds the stand-in "other" XDP program of the coexistence
# tests; systemd brings systemd-analyze, which verifies the unit `ps-agent install` writes;
# ethtool reads veth's per-queue XDP counters for the benchmark's threaded-NAPI flood;
# tcpdump and wireshark-common (dumpcap, editcap) write the captures `explain --pcap` replays;
# rpm reads back the .rpm `cargo xtask dist` builds; dnsmasq-base (DHCP and DHCPv6 server),
# busybox (udhcpc) and isc-dhcp-client (dhclient -6: Debian's busybox has no udhcpc6) run
# real lease exchanges through the agent; nmap runs the stateful tests' ACK scan.
for p in llvm-22-dev llvm-22 libpolly-22-dev zlib1g-dev libzstd-dev bpftool xdp-tools nftables \
         iptables tcpdump wireshark-common iproute2 util-linux systemd gzip ethtool rpm \
         dnsmasq-base busybox isc-dhcp-client nmap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs+=("$p")
done
# prometheus brings promtool (the alert rules' unit tests) and the Prometheus that scrapes
# the agent in the metrics lab tests; its recommends (node exporter, collectors) are not
# needed. curl reads Prometheus' API and the endpoint in those tests. musl-tools brings
# musl-gcc, which ring (rustls' crypto) builds its C and assembly with for the static
# x86_64-unknown-linux-musl release binary.
need_bare=()
for p in prometheus curl musl-tools; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_bare+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ] || [ ${#need_bare[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]} ${need_bare[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#need_pkgs[@]} -eq 0 ] || apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  [ ${#need_bare[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need_bare[@]}" >/dev/null
  # The downloaded .debs are not needed once installed (on images that keep them).
  apt-get clean
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

# `cargo xtask dist`: the static release target and the two packagers (versions pinned;
# cargo-generate-rpm takes a few minutes to build, once).
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  log "adding the x86_64-unknown-linux-musl target"
  rustup target add x86_64-unknown-linux-musl
fi
for tool in cargo-deb@3.8.0 cargo-generate-rpm@0.21.1; do
  if ! command -v "${tool%@*}" >/dev/null 2>&1; then
    log "installing $tool"
    cargo install --locked "$tool"
  fi
done

if ! command -v bpf-linker >/dev/null 2>&1; then
  log "building bpf-linker against LLVM 22 (about 2 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH \
    cargo install --locked bpf-linker --no-default-features --features llvm-22
fi

if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf -o mode=0700 bpf /sys/fs/bpf
fi
log "ok"
