#!/usr/bin/env bash
#! The crash-consistency soak: per arch, ONE emulated KVM host runs
#! ci/crash-soak-host.sh, which boots the test guest N times on the same
#! disk file; each time the guest fsyncs fresh random data in five regions
#! (three small O_DIRECT writes, one page-cache write of up to 8 MiB, one
#! unaligned write of a few bytes; ci/guest-checks.d/90-crash.sh), the
#! host SIGKILLs tandem at the guest's CRASH-READY and checks that every
#! region is in the file. Prints one line per iteration and a summary:
#!   crash-soak: ARCH N/N iterations, every fsync'd block present (<s> s)
#! Serial logs: target/e2e-logs/crash-soak-<arch>-<N>.log.
#! Sourced by ci/e2e.sh, this file only defines crash_soak_rows: rows
#! x86-crash-soak and a64-crash-soak (GICv3, VHE), CI_SOAK_COUNT iterations.
#! Usage: ci/crash-soak.sh [--count N] [--no-build] [--timeout S] x86_64|aarch64|all
#!   --count N     iterations per arch (default 100)
#!   --timeout S   wall-clock limit per arch (default 90 s per iteration + 300)
#!   --no-build    use the existing static binaries
#! Exit status: 0 when every iteration of every arch passed.

CI_SOAK_COUNT=5
# The guest: 1 vCPU, 256 MiB (the check needs 8 MiB of /tmp in guest RAM).
SOAK_RUN="run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz --cpus 1 --memory 256M"

# Sets SOAK_OPTIONS to the emulated-host.sh options of a soak of COUNT iterations.
soak_options() {
    SOAK_OPTIONS=(--host-script "$ROOT/ci/crash-soak-host.sh" --add "$ROOT/ci/host-lib.sh:/host-lib.sh"
                  --host-args "tandem.soak_count=$1" --guest-cpus 1 --expect "CHECK crash-soak PASS $1/$1 ")
}

# Registers the CI rows with e2e.sh's row(). Host flavour: the host script
# needs an emulated host of its own (it SIGKILLs tandem). About 20-40 s
# per iteration under TCG on the 2-core machine.
crash_soak_rows() {
    soak_options "$CI_SOAK_COUNT"
    row x86_64 x86-crash-soak host "${SOAK_OPTIONS[@]}" --timeout 900 --run "$SOAK_RUN"
    row aarch64 a64-crash-soak host "${SOAK_OPTIONS[@]}" --timeout 900 --run "$SOAK_RUN" \
        --expect-host 'VHE mode initialized'
}

# The soak itself, when this file is run.
soak_main() {
    set -euo pipefail
    # shellcheck disable=SC2034 # used by lib.sh
    LOG_PREFIX=crash-soak
    # shellcheck source=ci/lib.sh
    . "$(dirname "$0")/lib.sh"
    local count=100 timeout="" build=1 arches=() arch name log status=0 one start
    while [ $# -gt 0 ]; do
        case $1 in
            --count) count=$2; shift ;;
            --timeout) timeout=$2; shift ;;
            --no-build) build=0 ;;
            -h|--help) usage; exit 0 ;;
            x86_64|aarch64) arches+=("$1") ;;
            all) arches+=(x86_64 aarch64) ;;
            *) die "unknown argument $1 (--help)" ;;
        esac
        shift
    done
    [ "${#arches[@]}" -gt 0 ] || die "which arch? x86_64, aarch64 or all (--help)"
    [[ $count =~ ^[1-9][0-9]*$ ]] || die "--count takes a positive number"
    timeout=${timeout:-$((90 * count + 300))}
    for arch in "${arches[@]}"; do
        [ "$build" = 0 ] || "$ROOT/ci/build-static.sh" "$arch" >/dev/null
        name=crash-soak-$arch-$count
        log=$ROOT/target/e2e-logs/$name.log
        soak_options "$count"
        log "$arch: $count iterations in one emulated host (limit $timeout s), log $log"
        start=$SECONDS one=0
        "$ROOT/ci/emulated-host.sh" "$arch" --name "$name" "${SOAK_OPTIONS[@]}" --timeout "$timeout" \
            --run "$SOAK_RUN" || one=$?
        # The iteration lines as they are in the log, then the summary.
        grep -a '^crash-soak: ' "$log" | tr -d '\r' || true
        if ! grep -aq "^crash-soak: $arch $count/$count iterations, every" "$log"; then
            echo "crash-soak: $arch did not complete $count iterations (emulated-host.sh $one; log $log)"
            status=1
        elif [ "$one" != 0 ]; then
            status=1
        fi
        log "$arch: $((SECONDS - start)) s"
    done
    return "$status"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then soak_main "$@"; exit; fi
