#!/usr/bin/env bash
#! The hostile-guest end-to-end rows: one per host flavour (x86_64, aarch64
#! GICv3 VHE, aarch64 GICv2 like a Raspberry Pi), each one emulated KVM
#! host running ci/hostile-host.sh: a guest running tandem-hostile (hostile/,
#! its attacks on every device, MMIO, ports and the UART, in rounds) beside
#! a well-behaved neighbour VM, with the host's checks:
#!   hostile-attacks    every attack ran (its `HOSTILE <name> done` line)
#!   hostile-neighbour  the neighbour keeps its disk and net throughput
#!   hostile-rss        the attacker's tandem stays within its memory bound
#!   hostile-sigterm    the attacker's tandem ends within 1 s of SIGTERM
#!   hostile-log        the attacker's tandem logs at most the bound in lines
#! A row passes when every check printed `CHECK <name> PASS`.
#! Sourced by ci/e2e.sh, this file only defines hostile_rows (rows named
#! *-hostile*) and hostile_prepare. Run directly, it runs those rows through
#! ci/e2e.sh, which prints each row's check lines.
#! Usage: ci/hostile-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

HOSTILE_CHECKS=(hostile-attacks hostile-neighbour hostile-rss hostile-sigterm hostile-log)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
HOSTILE_ROWS=(x86-hostile a64-hostile-gicv3 a64-hostile-gicv2)

# The attack program's cpio for ARCH (ci/program-initramfs.sh builds it).
hostile_cpio() { echo "$ROOT/target/$1-unknown-linux-gnu/release/tandem-hostile.cpio.gz"; }

# Registers the hostile rows with e2e.sh's row(). Host flavour: the host
# script needs an emulated host of its own (two VMs, TAPs, signals).
hostile_rows() {
    local arch check common
    for arch in x86_64 aarch64; do
        common=(--host-script "$ROOT/ci/hostile-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                --add "$(hostile_cpio "$arch"):/guest/hostile.cpio.gz" --timeout 900 --guest-cpus 1)
        for check in "${HOSTILE_CHECKS[@]}"; do common+=(--expect "CHECK $check PASS"); done
        case $arch in
            x86_64) row x86_64 x86-hostile host "${common[@]}" ;;
            aarch64)
                row aarch64 a64-hostile-gicv3 host "${common[@]}" --expect-host 'VHE mode initialized'
                extended row aarch64 a64-hostile-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m' ;;
        esac
    done
}

# Builds the attack program's cpio for ARCH (e2e.sh's prepare step).
hostile_prepare() { "$ROOT/ci/program-initramfs.sh" tandem-hostile "$1" >/dev/null; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=hostile-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main HOSTILE_ROWS "$@"
    exit
fi
