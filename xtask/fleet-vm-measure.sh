#!/usr/bin/env bash
# The measurement behind the fleet lab's choice of nspawn containers over VMs
# (docs/dev/fleet-lab.md): boots the lab's host — the same Debian 12 package set, plus
# Debian's cloud kernel — as a QEMU VM and prints the seconds until systemd reports sshd
# started and until the serial console's login prompt, and the QEMU process's memory. TCG unless
# FLEET_VM_ACCEL says otherwise: on a machine without nested virtualization /dev/kvm
# opens but the guest hangs after the BIOS. Not part of any test; run it by hand, as root,
# after xtask/fleet-setup.sh. The image is cached in target/fleet/vm-measure/ (1.3 GB);
# the VM has no network (`-nic none`) and writes to a throw-away snapshot.
#   bash xtask/fleet-vm-measure.sh [MEMORY_MIB]
set -euo pipefail

log() { printf '[fleet-vm-measure] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
mem=${1:-512}
accel=${FLEET_VM_ACCEL:-tcg}
dir="$root/target/fleet/vm-measure"
mkdir -p "$dir"

sources="$root/target/fleet/sources.list"
[ -f "$sources" ] || { log "run xtask/fleet-setup.sh first"; exit 1; }
if [ ! -f "$dir/disk.img" ]; then
  pkgs=systemd,systemd-sysv,dbus,iproute2,openssh-server,python3,python3-apt,linux-image-cloud-amd64,initramfs-tools
  log "building the VM's image"
  rm -rf "$dir/rootfs"
  mmdebstrap --quiet --variant=minbase --include="$pkgs" bookworm "$dir/rootfs" "$sources"
  cp "$(ls "$dir"/rootfs/boot/vmlinuz-* | head -1)" "$dir/vmlinuz"
  cp "$(ls "$dir"/rootfs/boot/initrd.img-* | head -1)" "$dir/initrd"
  truncate -s 2G "$dir/disk.tmp"
  mkfs.ext4 -q -d "$dir/rootfs" "$dir/disk.tmp"
  rm -rf "$dir/rootfs"
  mv "$dir/disk.tmp" "$dir/disk.img"
fi

qemu=""
trap '[ -n "$qemu" ] && kill "$qemu" 2>/dev/null' EXIT

log "booting with $mem MiB ($accel)"
t0=$(date +%s.%N)
since() { awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }'; }
qemu-system-x86_64 -machine "accel=$accel" -m "$mem" -smp 1 \
  -nographic -no-reboot -kernel "$dir/vmlinuz" -initrd "$dir/initrd" \
  -append "root=/dev/vda rw console=ttyS0 systemd.show_status=1" \
  -drive "file=$dir/disk.img,if=virtio,format=raw,snapshot=on" \
  -nic none >"$dir/console.log" 2>&1 &
qemu=$!
login="" sshd=""
for _ in $(seq 1 1200); do
  kill -0 "$qemu" 2>/dev/null || break
  [ -z "$sshd" ] && grep -aq 'Started.*ssh\.service' "$dir/console.log" && sshd=$(since)
  [ -z "$login" ] && grep -aq 'login:' "$dir/console.log" && login=$(since)
  [ -n "$login" ] && [ -n "$sshd" ] && break
  sleep 0.5
done
rss=$(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$qemu/status" 2>/dev/null || echo "?")
[ -n "$sshd" ] || { log "sshd did not start within 10 minutes; console: $dir/console.log"; exit 1; }
echo "VM ($accel, $mem MiB): sshd started after $sshd s, login prompt after ${login:-?} s; QEMU RSS $rss MiB"
