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
#! *-api*). Run directly, it runs those rows through ci/e2e.sh, which
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
            a64-api-gicv2) extended row "$arch" "$name" host --gic 2 "${common[@]}" "${checks[@]}" --expect-host 'GICv2m' ;;
        esac
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=api-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main API_ROWS "$@"
    exit
fi
