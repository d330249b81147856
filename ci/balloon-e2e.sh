#!/usr/bin/env bash
#! The balloon end-to-end rows: one emulated KVM host per row running
#! ci/balloon-host.sh (its checks are listed there: balloon-stats,
#! balloon-inflate, balloon-rss, balloon-deflate, balloon-exit, balloon-oom,
#! balloon-oom-exit) with the guest's balloon-guest and balloon-oom-guest
#! (ci/guest-checks.d/75-balloon.sh): x86_64, aarch64 with GICv3 and a
#! Raspberry Pi-like aarch64 host with GICv2.
#! A row passes when every check printed `CHECK <name> PASS`.
#! Sourced by ci/e2e.sh, this file only defines balloon_rows.
#! Run directly, it runs those rows through ci/e2e.sh.
#! Usage: ci/balloon-e2e.sh [e2e.sh options] [x86_64|aarch64|all|ROW...]   (default: all)

BALLOON_CHECKS=(balloon-guest balloon-stats balloon-inflate balloon-rss balloon-deflate balloon-exit
                balloon-oom-guest balloon-oom balloon-oom-exit)
# shellcheck disable=SC2034 # read by suite_main (a nameref)
BALLOON_ROWS=(x86-balloon a64-balloon-gicv3 a64-balloon-gicv2)

# Registers the balloon rows with e2e.sh's row().
balloon_rows() {
    local arch check common
    for arch in x86_64 aarch64; do
        common=(--host-script "$ROOT/ci/balloon-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                --timeout 1500 --guest-cpus 2)
        for check in "${BALLOON_CHECKS[@]}"; do common+=(--expect "CHECK $check PASS"); done
        case $arch in
            x86_64) row x86_64 x86-balloon host "${common[@]}" ;;
            aarch64)
                extended row aarch64 a64-balloon-gicv3 host "${common[@]}" --expect-host 'VHE mode initialized'
                extended row aarch64 a64-balloon-gicv2 host --gic 2 "${common[@]}" --expect-host 'GICv2m' ;;
        esac
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=balloon-e2e
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    suite_main BALLOON_ROWS "$@"
    exit
fi
