#!/usr/bin/env bash
#! Helpers shared by the ci/ end-to-end scripts; sourced, never run.
#! Callers set LOG_PREFIX before sourcing.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Exit status of a script that skipped its work (automake's convention).
SKIP_STATUS=77

log() { echo "${LOG_PREFIX:-ci}: $*" >&2; }
# Prints the calling script's header: its lines starting with "#! ".
usage() { sed -n 's/^#!\( \|$\)//p' "$0"; }
die() { log "error: $*"; exit 1; }

# A missing tool or asset skips a run on a developer machine; in CI
# (CI=true) it is a failure.
skip_or_fail() {
    if [ "${CI:-}" = true ]; then die "$* (CI=true: not skipping)"; fi
    log "skip: $*"
    exit "$SKIP_STATUS"
}

check_arch() {
    case $1 in
        x86_64|aarch64) ;;
        *) die "unknown arch '$1' (x86_64 or aarch64)" ;;
    esac
}

qemu_binary() { echo "qemu-system-$1"; }

# True when this machine has hardware KVM for ARCH (not PVM, which runs only
# PVM-built guest kernels), so tandem can run directly.
hardware_kvm() {
    [ "$(uname -m)" = "$1" ] && [ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] || return 1
    case $1 in
        x86_64) [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ] ;;
        aarch64) [ -d /sys/module/kvm ] ;;
    esac
}

# The static tandem binary ci/build-static.sh builds for ARCH.
default_tandem() { echo "$ROOT/target/$1-unknown-linux-gnu/release/tandem"; }
# The binary a --vmm value names: firecracker (built by
# ci/peer-firecracker.sh), tandem (ci/build-static.sh's x86_64), or a path.
resolve_vmm() {
    local vmm
    case $1 in
        "") die "--vmm is required (--help)" ;;
        firecracker) vmm=$("$ROOT/ci/peer-firecracker.sh" | tail -n 1) ;;
        tandem) vmm=$(default_tandem x86_64) ;;
        *) vmm=$1 ;;
    esac
    [ -x "$vmm" ] || die "not an executable: $vmm"
    realpath "$vmm"
}

# The standalone form of a row suite sourced by ci/e2e.sh (virtio-e2e.sh,
# api-e2e.sh, …): runs the rows of array ROWS (its name) through
# ci/e2e.sh, which prints each row's result and check lines. Arguments:
# e2e.sh options, then x86_64 | aarch64 | all | row names (default all);
# the suite's rows are named x86-… and a64-….
suite_main() {
    local -n suite_rows=$1
    shift
    local options=() rows=() row
    while [ $# -gt 0 ]; do
        case $1 in
            -j) options+=("$1" "$2"); shift ;;
            -h|--help) usage; exit 0 ;;
            -*) options+=("$1") ;;
            all) rows+=("${suite_rows[@]}") ;;
            x86_64|aarch64)
                for row in "${suite_rows[@]}"; do
                    case $1:$row in x86_64:x86-*|aarch64:a64-*) rows+=("$row") ;; esac
                done ;;
            *) rows+=("$1") ;;
        esac
        shift
    done
    [ "${#rows[@]}" -gt 0 ] || rows=("${suite_rows[@]}")
    "$ROOT/ci/e2e.sh" ${options[@]+"${options[@]}"} "${rows[@]}"
}
