#!/usr/bin/env bash
#! The snapshot end-to-end rows, sourced by ci/e2e.sh: one per host
#! flavour (x86-snapshot; a64-snapshot-gicv3, GICv3 + ITS on a VHE host;
#! a64-snapshot-gicv2, a Raspberry Pi-like GICv2 host), each one emulated
#! KVM host running ci/snapshot-host.sh (a Debian guest snapshotted,
#! killed, restored in new tandem processes, saved as a diff, migrated;
#! checks snap-create, snap-restore, snap-clock, snap-no-stall,
#! snap-devices, snap-tcp, snap-disk, snap-restore-again, snap-diff,
#! snap-migrate).
#! Usage: ci/snapshot-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]

SNAPSHOT_CHECKS=(snap-create snap-restore snap-clock snap-no-stall snap-devices snap-tcp snap-disk snap-restore-again snap-diff snap-migrate)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
SNAPSHOT_ROWS=(x86-snapshot a64-snapshot-gicv3 a64-snapshot-gicv2)

# Registers the rows with e2e.sh's row(). Host flavour: the scenario needs
# an emulated host of its own (several tandem processes, SIGKILL). The
# memory file lives in the host's RAM (/tmp), beside the guest's.
snapshot_rows() {
    local check expects=()
    for check in "${SNAPSHOT_CHECKS[@]}"; do expects+=(--expect "CHECK $check PASS"); done
    local common=(--host-script "$ROOT/ci/snapshot-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                  --timeout 1200 --memory 3072 --guest-cpus 2 "${expects[@]}")
    row x86_64 x86-snapshot host "${common[@]}"
    row aarch64 a64-snapshot-gicv3 host "${common[@]}" --expect-host 'VHE mode initialized' \
        --expect 'in-kernel GICv3 with ITS'
    extended row aarch64 a64-snapshot-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m' \
        --expect 'in-kernel GICv2'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=snapshot-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main SNAPSHOT_ROWS "$@"
    exit
fi
