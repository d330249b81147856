#!/usr/bin/env bash
#! Many VMs at once: one row per arch (x86_64; aarch64 GICv3 VHE), each one
#! emulated KVM host running ci/many-host.sh, which starts 10 test guests
#! together, each with its own disk file and its own TAP and /24, and
#! checks:
#!   many-exit   all 10 tandem processes exited 0
#!   many-blk    every disk file holds exactly the 8 MiB its own guest
#!               wrote (no other guest's data), zeros after it
#!   many-net    every guest moved 2 MiB each way with its own host end
#! Sizes: emulated host 2 vCPUs (the machine has 2 cores), 3072 MiB; each
#! guest 1 vCPU, 160 MiB, a 16 MiB disk file in the host's tmpfs.
#! A row passes when every check printed `CHECK <name> PASS`; a FAIL names
#! each guest that failed and why.
#! Sourced by ci/e2e.sh, this file only defines many_rows (rows named
#! *-many). Run directly, it runs those rows through ci/e2e.sh, which
#! prints each row's check lines.
#! Usage: ci/many-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

MANY_CHECKS=(many-exit many-blk many-net)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
MANY_ROWS=(x86-many a64-many)

# Registers the row of ARCH (x86_64 or aarch64) with e2e.sh's row(). Host
# flavour: the host script needs an emulated host of its own (10 TAPs,
# addresses). e2e.sh registers the two apart, so that with two rows at a
# time they do not run beside each other (20 guests on 2 cores).
many_rows() {
    local check common=(--host-script "$ROOT/ci/many-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                        --memory 3072 --timeout 1500 --guest-cpus 1
                        --run "run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz --cpus 1 --memory 160M")
    for check in "${MANY_CHECKS[@]}"; do common+=(--expect "CHECK $check PASS"); done
    case $1 in
        x86_64) extended row x86_64 x86-many host "${common[@]}" ;;
        aarch64) extended row aarch64 a64-many host "${common[@]}" --expect-host 'VHE mode initialized' ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=many-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main MANY_ROWS "$@"
    exit
fi
