#!/usr/bin/env bash
#! Boots the demo guest on defaults and shows its console: Debian's kernel
#! and a busybox initramfs that prints TANDEM-GUEST-UP and powers off.
#! Sets up everything on a fresh machine first (packages, Rust targets,
#! guest assets, static tandem). Runs tandem directly where the host has
#! hardware KVM, otherwise inside an emulated KVM host, and says which.
#! Usage: ci/demo.sh [x86_64|aarch64]   (default: this machine's arch)
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh

arch="${1:-$(uname -m)}"
check_arch "$arch"
bash ci/setup-host.sh
bash ci/build-static.sh "$arch" >/dev/null
assets="$(bash ci/guest-assets.sh "$arch" | tail -n 1)"

if hardware_kvm "$arch"; then
    echo "demo: hardware KVM here: running tandem directly" >&2
    set +e
    "$(default_tandem "$arch")" run --kernel "$assets/vmlinuz" --initrd "$assets/initramfs.cpio.gz"
    code=$?
    echo "demo: tandem exited with $code" >&2
    exit "$code"
fi
echo "demo: no hardware $arch KVM here: booting an emulated $arch KVM host (QEMU TCG) and running tandem inside it" >&2
exec bash ci/emulated-host.sh "$arch" --name demo-"$arch" --verbose \
    --run "run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz"
