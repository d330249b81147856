#!/usr/bin/env bash
#! The vsock end-to-end rows: one emulated KVM host per arch (and a
#! Raspberry Pi-like GICv2 aarch64 host, a64-vsock-gicv2) running
#! ci/vsock-host.sh: the test guest with a vsock device (cid 3, Unix socket
#! /tmp/v.sock) and tandem-vsock-e2e (vsock-e2e/) at both ends, moving
#! checksummed data each way on concurrent connections both ways:
#!   vsock-guest           the guest's end: every connection matched (its line)
#!   vsock-host-initiated  32 host connections (`CONNECT 5000`), 2 MiB each way
#!                         on each (64 MiB each way), both ends matched, sums agree
#!   vsock-guest-initiated 32 guest connections to port 6000 (/tmp/v.sock_6000),
#!                         the same amounts, both ends matched, sums agree; the
#!                         two directions run at once (64 connections)
#!   vsock-stalled-reader  the host end leaves one connection unread for 10 s
#!                         while the guest keeps writing: tandem's VmRSS grows
#!                         by at most 8 MiB, another connection finishes
#!                         meanwhile, then its 24 MiB match
#!   vsock-refused         a guest connect to a port nobody listens on fails,
#!                         a host CONNECT to one is closed without OK
#!   vsock-exit            tandem (seccomp on) exits 0 when the guest powers off
#! A row passes when every check printed `CHECK <name> PASS`.
#! Sourced by ci/e2e.sh, this file only defines vsock_rows and vsock_prepare.
#! Run directly, it runs those rows through ci/e2e.sh.
#! Usage: ci/vsock-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

VSOCK_CHECKS=(vsock-guest vsock-host-initiated vsock-guest-initiated vsock-stalled-reader vsock-refused vsock-exit)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
VSOCK_ROWS=(x86-vsock a64-vsock-gicv3 a64-vsock-gicv2)

# The program's cpio and binary for ARCH (ci/program-initramfs.sh builds them).
vsock_cpio() { echo "$ROOT/target/$1-unknown-linux-gnu/release/tandem-vsock-e2e.cpio.gz"; }
vsock_bin() { echo "$ROOT/target/$1-unknown-linux-gnu/release/tandem-vsock-e2e"; }

# Registers the vsock rows with e2e.sh's row(). Host flavour: the host end
# runs in the emulated host beside tandem. Measured one at a time
# (2026-11-30): x86-vsock 71 s, a64-vsock-gicv3 73 s, a64-vsock-gicv2 86 s;
# the limit leaves room for a loaded machine (rows run two at a time).
vsock_rows() {
    local arch check common
    for arch in x86_64 aarch64; do
        common=(--host-script "$ROOT/ci/vsock-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                --add "$(vsock_cpio "$arch"):/guest/vsock.cpio.gz"
                --add "$(vsock_bin "$arch"):/bin/tandem-vsock-e2e" --timeout 900 --guest-cpus 2)
        for check in "${VSOCK_CHECKS[@]}"; do common+=(--expect "CHECK $check PASS"); done
        case $arch in
            x86_64) row x86_64 x86-vsock host "${common[@]}" ;;
            aarch64) extended row aarch64 a64-vsock-gicv3 host "${common[@]}" --expect-host 'VHE mode initialized'
                     extended row aarch64 a64-vsock-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m' \
                         --expect 'in-kernel GICv2' ;;
        esac
    done
}

# Builds the program and its cpio for ARCH (e2e.sh's prepare step).
vsock_prepare() { "$ROOT/ci/program-initramfs.sh" tandem-vsock-e2e "$1" >/dev/null; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=vsock-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main VSOCK_ROWS "$@"
    exit
fi
