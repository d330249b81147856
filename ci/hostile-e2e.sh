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
#! ci/e2e.sh and then prints each row's check lines.
#! Usage: ci/hostile-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

HOSTILE_CHECKS=(hostile-attacks hostile-neighbour hostile-rss hostile-sigterm hostile-log)
HOSTILE_ROWS=(x86-hostile a64-hostile-gicv3 a64-hostile-gicv2)

# The attack program's cpio for ARCH (ci/hostile-initramfs.sh builds it).
hostile_cpio() { echo "$ROOT/target/$1-unknown-linux-gnu/release/hostile.cpio.gz"; }

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
                row aarch64 a64-hostile-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m' ;;
        esac
    done
}

# Builds the attack program's cpio for ARCH (e2e.sh's prepare step).
hostile_prepare() { "$ROOT/ci/hostile-initramfs.sh" "$1" >/dev/null; }

# Prints each check's line from ROW's log, or MISSING.
print_checks() {
    local row=$1 log=$ROOT/target/e2e-logs/$1.log check line
    for check in "${HOSTILE_CHECKS[@]}"; do
        line=$(grep -aoE "CHECK $check (PASS|FAIL)( .*)?" "$log" 2>/dev/null | tail -n 1 | tr -d '\r')
        echo "  $row: ${line:-CHECK $check MISSING}"
    done
}

# The hostile rows ARG (a row name, x86_64, aarch64 or all) stands for.
rows_for() {
    case $1 in
        all) echo "${HOSTILE_ROWS[@]}" ;;
        x86_64) echo x86-hostile ;;
        aarch64) echo a64-hostile-gicv3 a64-hostile-gicv2 ;;
        *) echo "$1" ;;
    esac
}

main() {
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=hostile-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    local options=() rows=() more=() row status=0
    while [ $# -gt 0 ]; do
        case $1 in
            -j) options+=("$1" "$2"); shift ;;
            -h|--help) sed -n 's/^#! \{0,1\}//p' "$0"; exit 0 ;;
            -*) options+=("$1") ;;
            *) read -ra more <<<"$(rows_for "$1")"; rows+=("${more[@]}") ;;
        esac
        shift
    done
    [ "${#rows[@]}" -gt 0 ] || rows=("${HOSTILE_ROWS[@]}")
    "$ROOT/ci/e2e.sh" ${options[@]+"${options[@]}"} "${rows[@]}" || status=$?
    for row in "${rows[@]}"; do
        [ ! -f "$ROOT/target/e2e-logs/$row.log" ] || print_checks "$row"
    done
    return "$status"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; exit; fi
