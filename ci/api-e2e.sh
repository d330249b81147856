#!/usr/bin/env bash
#! The API end-to-end checks: one row per host flavour (x86_64, aarch64
#! GICv3 VHE, aarch64 GICv2 like a Raspberry Pi), each one emulated KVM host
#! running ci/api-host.sh, which starts `tandem --api-sock /tmp/api.sock
#! --id e2e` and drives it only through `tandem api` (Firecracker's API):
#!   api-start      machine-config, boot-source, drive, NIC, metrics, InstanceStart; GET / Running
#!   api-pause      60 s paused: GET / Paused, not one byte of console output,
#!                  exits.total the same in FlushMetrics lines before and after
#!   api-resume     GET / Running, the guest's ticks go on, exits.total grows
#!   api-clock      (guest) no gap of more than 15 s of guest time between its
#!                  once-a-second ticks: the pause did not show as guest time
#!   blk, net       (guest) the virtio checks, on the drive and NIC the API added
#!   api-no-stall   (guest) no rcu stall, soft lockup, hung task, watchdog BUG or
#!                  unstable clocksource line in the kernel log after all that
#!   api-ctrl-alt-del           x86_64: SendCtrlAltDel, tandem exits 0 within 60 s
#!   api-ctrl-alt-del-refused   aarch64: 400 with a fault_message, VM still Running
#!   api-sigterm                aarch64: SIGTERM, tandem exits 143
#! A row passes when every check of its arch printed `CHECK <name> PASS`.
#! Sourced by ci/e2e.sh, this file only defines api_rows (rows named
#! *-api*). Run directly, it runs those rows through ci/e2e.sh and then
#! prints each row's check lines.
#! Usage: ci/api-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

API_CHECKS_COMMON=(api-start api-pause api-resume api-clock blk net api-no-stall)
API_CHECKS_X86=("${API_CHECKS_COMMON[@]}" api-ctrl-alt-del)
API_CHECKS_A64=("${API_CHECKS_COMMON[@]}" api-ctrl-alt-del-refused api-sigterm)
API_ROWS=(x86-api a64-api-gicv3 a64-api-gicv2)

# The checks row ROW must pass, one a line.
api_checks_of() {
    case $1 in
        x86-*) printf '%s\n' "${API_CHECKS_X86[@]}" ;;
        *) printf '%s\n' "${API_CHECKS_A64[@]}" ;;
    esac
}

# Registers the API rows with e2e.sh's row(). Host flavour: the host
# script needs an emulated host of its own (TAP, addresses, signals). 900 s,
# as the virtio rows: a row takes 2-3 min alone, of which the pause is 60 s,
# but 10 min and more with the machine's 2 cores shared (api-host.sh gives
# up at 780 s of host uptime so that it still reports).
api_rows() {
    local name arch check checks
    local common=(--host-script "$ROOT/ci/api-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                  --timeout 900 --guest-cpus 2 --expect 'TANDEM-GUEST-MEMORY kb=4[0-9]{5}\b')
    for name in "${API_ROWS[@]}"; do
        checks=()
        while read -r check; do checks+=(--expect "CHECK $check PASS"); done < <(api_checks_of "$name")
        case $name in
            x86-api) arch=x86_64 ;;
            *) arch=aarch64 ;;
        esac
        case $name in
            x86-api) row "$arch" "$name" host "${common[@]}" "${checks[@]}" ;;
            a64-api-gicv3) row "$arch" "$name" host "${common[@]}" "${checks[@]}" --expect-host 'VHE mode initialized' ;;
            a64-api-gicv2) row "$arch" "$name" host --gic 2 "${common[@]}" "${checks[@]}" --expect-host 'GICv2m' ;;
        esac
    done
}

# Prints each check's line from ROW's log, or MISSING.
print_api_checks() {
    local row=$1 log=$ROOT/target/e2e-logs/$1.log check line
    while read -r check; do
        line=$(grep -aoE "CHECK $check (PASS|FAIL)( .*)?" "$log" 2>/dev/null | tail -n 1 | tr -d '\r')
        echo "  $row: ${line:-CHECK $check MISSING}"
    done < <(api_checks_of "$row")
}

# The API rows ARG (a row name, x86_64, aarch64 or all) stands for.
api_rows_for() {
    case $1 in
        all) echo "${API_ROWS[@]}" ;;
        x86_64) echo x86-api ;;
        aarch64) echo a64-api-gicv3 a64-api-gicv2 ;;
        *) echo "$1" ;;
    esac
}

main() {
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=api-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    local options=() rows=() more=() row status=0
    while [ $# -gt 0 ]; do
        case $1 in
            -j) options+=("$1" "$2"); shift ;;
            -h|--help) sed -n 's/^#! \{0,1\}//p' "$0"; exit 0 ;;
            -*) options+=("$1") ;;
            *) read -ra more <<<"$(api_rows_for "$1")"; rows+=("${more[@]}") ;;
        esac
        shift
    done
    [ "${#rows[@]}" -gt 0 ] || rows=("${API_ROWS[@]}")
    "$ROOT/ci/e2e.sh" ${options[@]+"${options[@]}"} "${rows[@]}" || status=$?
    for row in "${rows[@]}"; do
        [ ! -f "$ROOT/target/e2e-logs/$row.log" ] || print_api_checks "$row"
    done
    return "$status"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; exit; fi
