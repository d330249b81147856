#!/usr/bin/env bash
#! Builds an arm64 folder that runs Debian's arm64 qemu-system-aarch64 (from
#! bookworm-backports, the version this machine's x86 QEMU is), so that an
#! emulated arm64 KVM host can run QEMU with -accel kvm beside tandem. The
#! folder is qemu-system-arm:arm64 and its dependencies, extracted (no
#! maintainer scripts run: nothing here executes arm64 code) by mmdebstrap
#! --variant=extract from the Debian mirror, with empty proc, sys, dev, tmp
#! and mnt for a chroot's mounts. The emulated host sees it through its 9p
#! share of this machine's root (emulated-host.sh --share-root) at
#! /hostroot<folder>; ci/bench-host.sh's bench_prepare_chroot mounts what
#! the chroot needs and bench_qemu_virt_arm64 runs QEMU in it.
#! Owns target/arm64-qemu-root/ (rebuilt when this script changes, or with
#! --rebuild); installs mmdebstrap when missing. Prints the folder's path as
#! its last line.
#! Usage: ci/arm64-qemu-root.sh [--rebuild]
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=arm64-qemu-root
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

OUT=$ROOT/target/arm64-qemu-root
MIRROR=http://deb.debian.org/debian

ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null && return
    log "installing mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2
}

# What the folder is built from; a change rebuilds it.
wanted() { echo "inputs=$(sha256sum <"$0" | cut -d' ' -f1)"; }

build() {
    local dir=$1
    # Default-Release: the QEMU packages and whatever they need from
    # backports come from there (as ci/setup-host.sh's -t does), the rest
    # from bookworm.
    mmdebstrap --variant=extract --architectures=arm64 --include=qemu-system-arm \
        --aptopt='APT::Default-Release "bookworm-backports"' \
        --aptopt='Acquire::Languages "none"' \
        bookworm "$dir" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-backports main" >&2
    # qemu-system-arm is the 32-bit Arm emulator: not needed.
    rm -rf "$dir"/usr/share/{doc,man,locale,info} "$dir/usr/bin/qemu-system-arm"
    find "$dir/usr/bin" -xtype l -delete
    mkdir -p "$dir"/{proc,sys,dev,tmp,mnt}
    [ -x "$dir/usr/bin/qemu-system-aarch64" ] || die "no usr/bin/qemu-system-aarch64 in $dir"
    [ -e "$dir/lib/ld-linux-aarch64.so.1" ] || die "no arm64 dynamic loader in $dir"
}

main() {
    local rebuild=0 want
    case ${1:-} in
        --rebuild) rebuild=1 ;;
        -h|--help) usage; exit 0 ;;
        "") ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    mkdir -p "$ROOT/target"
    exec 9>"$ROOT/target/.arm64-qemu-root.lock"
    flock 9
    want=$(wanted)
    if [ "$rebuild" = 0 ] && [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$want" ]; then
        log "up to date: $OUT"
    else
        ensure_mmdebstrap
        # Built aside and swapped in, so a run using the old folder keeps it whole.
        rm -rf "$OUT.new" "$OUT.old"
        build "$OUT.new"
        echo "$want" >"$OUT.new/stamp"
        [ ! -d "$OUT" ] || mv "$OUT" "$OUT.old"
        mv "$OUT.new" "$OUT"
        rm -rf "$OUT.old"
        log "built $OUT ($(du -sh "$OUT" | cut -f1), $(grep -c . <<<"$(ls "$OUT/usr/lib/aarch64-linux-gnu")") libraries)"
    fi
    echo "$OUT"
}

# On one line, so that bash has read all it will run before main starts.
main "$@"; exit
