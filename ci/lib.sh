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
