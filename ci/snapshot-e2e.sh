#!/usr/bin/env bash
#! The snapshot end-to-end row, sourced by ci/e2e.sh: x86-snapshot, one
#! emulated x86_64 KVM host running ci/snapshot-host.sh (a Debian guest
#! snapshotted, killed, restored in new tandem processes; checks
#! snap-create, snap-restore, snap-clock, snap-no-stall, snap-devices,
#! snap-disk, snap-restore-again, snap-diff, snap-migrate).
#! aarch64 rows come with aarch64 snapshots (docs/snapshots.md).
#! Usage: ci/snapshot-e2e.sh [e2e.sh options] [x86_64|all|ROW...]

SNAPSHOT_CHECKS=(snap-create snap-restore snap-clock snap-no-stall snap-devices snap-disk snap-restore-again snap-diff snap-migrate)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
SNAPSHOT_ROWS=(x86-snapshot)

# Registers the row with e2e.sh's row(). Host flavour: the scenario needs
# an emulated host of its own (several tandem processes, SIGKILL).
snapshot_rows() {
    local check expects=()
    for check in "${SNAPSHOT_CHECKS[@]}"; do expects+=(--expect "CHECK $check PASS"); done
    row x86_64 x86-snapshot host --host-script "$ROOT/ci/snapshot-host.sh" \
        --add "$ROOT/ci/host-lib.sh:/host-lib.sh" --timeout 900 --memory 3072 \
        --guest-cpus 2 "${expects[@]}"
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
