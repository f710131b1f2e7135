#!/usr/bin/env bash
# Idempotent setup for `cargo xtask fleet-test` only (the normal suite does not need it).
# Quick when everything is there. Installs or builds, under target/fleet/ (gitignored):
#
# - systemd-nspawn and mmdebstrap (Debian packages, installed on the machine);
# - the hosts' root file system: Debian 12 minbase with systemd, sshd and python3, built by
#   mmdebstrap into target/fleet/rootfs-<key>/, where <key> hashes the suite, the package
#   list and the customization below; target/fleet/rootfs points to the current one. A
#   changed list builds a new tree; `rm -rf target/fleet/rootfs-*` rebuilds;
# - Prometheus and promtool, unpacked from Debian's `prometheus` package (downloaded, not
#   installed: the package would start a server on this machine);
# - ansible-core (pinned below) and ansible-lint in a virtualenv, target/fleet/venv.
#
# Mirrors: PS_FLEET_MIRROR (an apt sources file, or a URL) if set; otherwise the Debian
# bookworm sources this machine's apt is configured with (read from `apt-cache policy`).
set -euo pipefail

log() { printf '[fleet-setup] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
fleet="$root/target/fleet"
mkdir -p "$fleet"
export DEBIAN_FRONTEND=noninteractive

# ansible-core 2.16 is the newest line that still manages Python 3.6 nodes (RHEL 8's
# platform-python), so what the lab runs is what such a site can run.
ANSIBLE_CORE=2.16.19
ANSIBLE_LINT=24.12.2
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,iproute2,openssh-server,python3,python3-apt

updated=0
apt_update_once() {
  if [ "$updated" = 0 ]; then
    apt-get update -qq
    updated=1
  fi
}

need=()
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  apt_update_once
  log "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The apt sources the hosts are built from, one "deb URI SUITE main" line each.
sources() {
  if [ -n "${PS_FLEET_MIRROR:-}" ]; then
    if [ -f "$PS_FLEET_MIRROR" ]; then cat "$PS_FLEET_MIRROR"; else echo "deb $PS_FLEET_MIRROR $SUITE main"; fi
    return
  fi
  apt-cache policy | awk -v suite="$SUITE" '
    $1 ~ /^[0-9]+$/ && $2 ~ /^[a-z]+:\/\// { uri = $2; split($3, d, "/"); dist = d[1]; next }
    uri != "" && /release / && /o=Debian,/ && index($0, "n=" suite) { print "deb " uri " " dist " main"; uri = "" }
  ' | sort -u
}

# The hosts' root file system. The customization makes root reachable with the lab's key
# (bound over /root/.ssh/authorized_keys at boot) and leaves the hostname to nspawn.
customize='mkdir -p "$1/root/.ssh" && chmod 700 "$1/root/.ssh" && rm -f "$1/etc/hostname"'
key=$(printf '%s\n' "$SUITE" minbase "$PACKAGES" "$customize" | sha256sum | cut -c1-12)
rootfs="$fleet/rootfs-$key"
if [ ! -e "$rootfs/.complete" ]; then
  list=$(sources)
  [ -n "$list" ] || { log "no Debian $SUITE source in this machine's apt configuration; set PS_FLEET_MIRROR"; exit 1; }
  log "building the hosts' root file system ($SUITE, $PACKAGES) in $rootfs"
  rm -rf "$rootfs"
  printf '%s\n' "$list" >"$fleet/sources.list"
  t0=$(date +%s)
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --customize-hook="$customize" "$SUITE" "$rootfs" "$fleet/sources.list"
  touch "$rootfs/.complete"
  log "root file system built in $(($(date +%s) - t0)) s ($(du -sh "$rootfs" | cut -f1))"
fi
ln -sfn "rootfs-$key" "$fleet/rootfs"

# Prometheus and promtool from Debian's package, unpacked.
if [ ! -x "$fleet/prometheus/usr/bin/prometheus" ]; then
  mkdir -p "$fleet/debs"
  (cd "$fleet/debs" && { apt-get download prometheus 2>/dev/null || { apt_update_once; apt-get download prometheus; }; })
  rm -rf "$fleet/prometheus"
  dpkg-deb -x "$fleet"/debs/prometheus_*.deb "$fleet/prometheus"
  rm -f "$fleet"/debs/prometheus_*.deb
  log "unpacked $("$fleet/prometheus/usr/bin/prometheus" --version 2>&1 | head -1)"
fi

# Ansible for the controller, pinned.
venv="$fleet/venv"
have=$("$venv/bin/ansible-playbook" --version 2>/dev/null || true)
if [[ "$have" != *"[core $ANSIBLE_CORE]"* ]]; then
  log "installing ansible-core $ANSIBLE_CORE and ansible-lint $ANSIBLE_LINT into $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "ansible-core==$ANSIBLE_CORE" "ansible-lint==$ANSIBLE_LINT"
fi
log "ok"
