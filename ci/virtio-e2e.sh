#!/usr/bin/env bash
#! The virtio end-to-end checks: one row per host flavour (x86_64, aarch64
#! GICv3 VHE, aarch64 GICv2 like a Raspberry Pi), each one emulated KVM host
#! running ci/virtio-host.sh, which boots the test guest twice with the guest
#! checks of ci/guest-checks.d:
#!   blk          64 MiB random written to /dev/vda (O_DIRECT, fsync), read back
#!   blk-file     (host) the disk file holds what the guest wrote
#!   blk-ro       /dev/vdb (readonly=on) reads the host's data, refuses writes
#!   blk-ro-file  (host) the read-only disk file is unchanged
#!   rng          /dev/hwrng is virtio_rng and gives 256 varied bytes
#!   net          8 MiB each way between guest and emulated host over a TAP
#!   console      hvc0 is the guest's only console (--console virtio)
#!   crash        (host) fsync'd regions (O_DIRECT, page cache, unaligned) are in the disk file after SIGKILL
#!   pci          (*-virtio-pci rows, --transport pci) every device is a virtio-pci
#!                function beside tandem's host bridge, with MSI-X vectors in run 1
#!                and on INTx under pci=nomsi in run 2
#! A row passes when every check printed `CHECK <name> PASS`.
#! Sourced by ci/e2e.sh, this file only defines virtio_rows (rows named
#! *-virtio*). Run directly, it runs those rows through ci/e2e.sh, which
#! prints each row's check lines.
#! Usage: ci/virtio-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

VIRTIO_CHECKS=(blk blk-file blk-ro blk-ro-file rng net console crash)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
VIRTIO_ROWS=(x86-virtio a64-virtio-gicv3 a64-virtio-gicv2 x86-virtio-pci a64-virtio-pci-gicv3
             a64-virtio-pci-gicv2)

# Registers the virtio rows with e2e.sh's row(). Host flavour: the host
# script needs an emulated host of its own (TAP, addresses, SIGKILL).
virtio_rows() {
    local check common=(--host-script "$ROOT/ci/virtio-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                        --timeout 900 --guest-cpus 2
                        --run "run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz --cpus 2 --memory 512M")
    for check in "${VIRTIO_CHECKS[@]}"; do common+=(--expect "CHECK $check PASS"); done
    # CI runs the checks over PCI (below): the devices are the same, and
    # every other feature row drives them over virtio-mmio.
    extended row x86_64 x86-virtio host "${common[@]}"
    extended row aarch64 a64-virtio-gicv3 host "${common[@]}" --expect-host 'VHE mode initialized'
    extended row aarch64 a64-virtio-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m'
    # The same devices as PCI functions (docs/pci.md), plus check pci: MSI-X
    # in run 1, INTx under pci=nomsi in run 2; vda on io_engine=async.
    local pci=("${common[@]/%--memory 512M/--memory 512M --transport pci}"
               --expect "CHECK pci PASS 4 virtio functions:" --expect "CHECK pci PASS 2 virtio functions \\(pci=nomsi"
               --expect "CHECK blk-engine PASS")
    row x86_64 x86-virtio-pci host "${pci[@]}"
    row aarch64 a64-virtio-pci-gicv3 host "${pci[@]}" --expect "in-kernel GICv3 with ITS"
    row aarch64 a64-virtio-pci-gicv2 host --gic 2 "${pci[@]}" --expect "in-kernel GICv2"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=virtio-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main VIRTIO_ROWS "$@"
    exit
fi
