#!/usr/bin/env bash
#! Runs tandem once against the nested test guest and judges the run.
#! Default: inside an emulated KVM host, i.e. a Debian kernel booted under
#! QEMU TCG with SVM (x86_64) or EL2 (aarch64), whose busybox initramfs loads
#! KVM, reports the KVM mode, runs `tandem ARGS`, prints TANDEM-EXIT=<code>
#! and powers off. --direct runs tandem on this machine instead (needs
#! hardware KVM). The whole serial log goes to target/e2e-logs/<name>.log; the
#! last line is `RESULT: PASS <name>` or `RESULT: FAIL <name> (<why>)`.
#! Usage: ci/emulated-host.sh x86_64|aarch64 [options]
#!   --name NAME                 log/result name (default: <arch>)
#!   --tandem PATH               static tandem for ARCH (default: ci/build-static.sh's output)
#!   --run "ARGS"                tandem's arguments, shell-quoted; the guest's files are
#!                               /guest/vmlinuz, /guest/vmlinux (x86_64), /guest/initramfs.cpio.gz
#!   --add SRC:DEST              put file SRC at DEST in the emulated host (repeatable)
#!   --host-kernel-version V     6.1 (default) | 6.12 | 6.12-16k | a release (see guest-assets.sh)
#!   --guest-kernel-version V    same choices, for the nested guest (default 6.1)
#!   --cpu MODEL                 QEMU CPU (default: EPYC,+svm,+npt | max)
#!   --gic 2|3                   aarch64: the emulated host's GIC (default 3)
#!   --host-args "ARGS"          extra host kernel arguments, e.g. kvm-arm.mode=nvhe
#!   --smp N / --memory MIB      emulated host size (default 2 / 2048)
#!   --host-thp never|madvise|always  the emulated host's transparent huge pages
#!                               (default: its kernel's, always on Debian)
#!   --expect-exit N|nonzero     tandem's expected exit status (default 0)
#!   --expect REGEX              the log must match REGEX (repeatable)
#!   --expect-host REGEX         same, but only checked in an emulated host (host dmesg)
#!   --guest-cpus N              the guest's marker must say cpus=N
#!   --expect-stderr-lines N     tandem must print exactly N lines on stderr
#!   --no-guest-marker           do not require the guest's TANDEM-GUEST-UP line
#!   --host-only                 boot the host, check /dev/kvm and the guest files, skip tandem
#!   --share-root                share this machine's / read-only over 9p; the emulated host
#!                               mounts it at /hostroot (with proc, sys, dev), so
#!                               `chroot /hostroot CMD` runs this machine's programs (its QEMU)
#!   --host-script FILE          run `sh FILE` in the emulated host instead of tandem; its exit
#!                               status is reported as TANDEM-EXIT
#!   --timeout SECONDS           wall-clock limit (default 300)
#!   --direct                    run tandem on this machine (hardware KVM)
#!   --verbose                   also copy the serial log to stderr
#! Exit status: 0 pass, 1 fail, 77 skipped (missing QEMU/assets outside CI).
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=emulated-host
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

ARCH="" NAME="" TANDEM="" RUN_ARGS="run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz"
HOST_KVER=6.1 GUEST_KVER=6.1 CPU="" GIC=3 HOST_ARGS="" HOST_THP="" SMP=2 MEMORY=2048
EXPECT_EXIT=0 EXPECT_STDERR_LINES="" GUEST_MARKER=1 HOST_ONLY=0 TIMEOUT=300
DIRECT=0 VERBOSE=0 SHARE_ROOT=0 HOST_SCRIPT=""
EXPECT=() EXPECT_HOST=() ADD=() GUEST_CPUS=""
WORK="" LOG=""

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --name) NAME=$2; shift ;;
            --tandem) TANDEM=$2; shift ;;
            --run) RUN_ARGS=$2; shift ;;
            --add) ADD+=("$2"); shift ;;
            --host-kernel-version) HOST_KVER=$2; shift ;;
            --guest-kernel-version) GUEST_KVER=$2; shift ;;
            --cpu) CPU=$2; shift ;;
            --gic) GIC=$2; shift ;;
            --host-args) HOST_ARGS=$2; shift ;;
            --host-thp) HOST_THP=$2; shift ;;
            --smp) SMP=$2; shift ;;
            --memory) MEMORY=$2; shift ;;
            --expect-exit) EXPECT_EXIT=$2; shift ;;
            --expect) EXPECT+=("$2"); shift ;;
            --expect-host) EXPECT_HOST+=("$2"); shift ;;
            --guest-cpus) GUEST_CPUS=$2; shift ;;
            --expect-stderr-lines) EXPECT_STDERR_LINES=$2; shift ;;
            --no-guest-marker) GUEST_MARKER=0 ;;
            --host-only) HOST_ONLY=1 ;;
            --share-root) SHARE_ROOT=1 ;;
            --host-script) HOST_SCRIPT=$2; shift ;;
            --timeout) TIMEOUT=$2; shift ;;
            --direct) DIRECT=1 ;;
            --verbose) VERBOSE=1 ;;
            -h|--help) usage; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) ARCH=$1 ;;
        esac
        shift
    done
    [ -n "$ARCH" ] || die "usage: $0 x86_64|aarch64 [options] (--help)"
    [ -z "$HOST_SCRIPT" ] || [ -f "$HOST_SCRIPT" ] || die "--host-script: no file $HOST_SCRIPT"
    check_arch "$ARCH"
    NAME=${NAME:-$ARCH}
    TANDEM=${TANDEM:-$(default_tandem "$ARCH")}
    case $GIC in 2|3) ;; *) die "--gic takes 2 or 3" ;; esac
}

# Prints the asset directory for a kernel version (guest-assets.sh's last line).
assets() {
    local out
    out=$("$ROOT/ci/guest-assets.sh" "$ARCH" --kernel-version "$1" | tail -n 1) ||
        skip_or_fail "ci/guest-assets.sh $ARCH --kernel-version $1 failed"
    echo "$out"
}

# The nested guest's files, as the emulated host sees them under /guest.
stage_guest_files() {
    local guest=$1 dest=$2 spec
    mkdir -p "$dest/guest"
    ln -sf "$guest/vmlinuz" "$guest/initramfs.cpio.gz" "$dest/guest/"
    [ ! -f "$guest/vmlinux" ] || ln -sf "$guest/vmlinux" "$dest/guest/"
    for spec in ${ADD[@]+"${ADD[@]}"}; do
        [ -f "${spec%%:*}" ] || die "--add: no file ${spec%%:*}"
        mkdir -p "$dest/$(dirname "${spec#*:}")"
        ln -sf "$(realpath "${spec%%:*}")" "$dest/${spec#*:}"
    done
}


# Builds the host's uncompressed initramfs (the kernel unpacks it faster
# under TCG than a gzip'd one).
build_host_initramfs() {
    local host=$1 guest=$2 out=$3 stage=$WORK/host-root m
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,lib/modules}
    cp "$host/busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    while read -r m; do cp "$host/modules/$m.ko" "$stage/lib/modules/"; done <"$host/modules/host.order"
    cp "$host/modules/host.order" "$stage/lib/modules/order"
    stage_guest_files "$guest" "$stage"
    if [ "$HOST_ONLY" = 1 ]; then
        touch "$stage/host-only"
        [ ! -f "$TANDEM" ] || cp "$TANDEM" "$stage/bin/tandem"
    else
        cp "$TANDEM" "$stage/bin/tandem"
    fi
    printf '%s\n' "$RUN_ARGS" >"$stage/run.args"
    [ -z "$HOST_SCRIPT" ] || cp "$HOST_SCRIPT" "$stage/host-script"
    [ "$SHARE_ROOT" = 0 ] || touch "$stage/share-root"
    # Host scripts insmod what they need from here (tun for TAP devices).
    if [ "$SHARE_ROOT" = 1 ] || [ -n "$HOST_SCRIPT" ]; then
        mkdir -p "$stage/lib/modules/extra"
        [ -f "$host/modules/host-extra.order" ] ||
            die "$host has no host-extra.order (rerun ci/guest-assets.sh)"
        while read -r m; do cp "$host/modules/$m.ko" "$stage/lib/modules/extra/"; done \
            <"$host/modules/host-extra.order"
        cp "$host/modules/host-extra.order" "$stage/lib/modules/extra/order"
    fi
    install -m 755 "$ROOT/ci/initramfs/host-init" "$stage/init"
    (cd "$stage" && find . -print0 | LC_ALL=C sort -z |
        cpio --quiet --null -o -H newc -L --owner=0:0) >"$out"
}

qemu_command() {
    local host=$1 initrd=$2 console
    case $ARCH in
        x86_64)
            console=ttyS0
            QEMU_CMD=(qemu-system-x86_64 -M q35 -cpu "${CPU:-EPYC,+svm,+npt}") ;;
        aarch64)
            console=ttyAMA0
            QEMU_CMD=(qemu-system-aarch64 -M "virt,virtualization=on,gic-version=$GIC"
                      -cpu "${CPU:-max}") ;;
    esac
    QEMU_CMD+=(-accel tcg -smp "$SMP" -m "$MEMORY" -display none -nodefaults
               -no-reboot -serial stdio -monitor none
               -kernel "$host/vmlinuz" -initrd "$initrd"
               -append "console=$console panic=-1 rdinit=/init quiet $HOST_ARGS${HOST_THP:+ transparent_hugepage=$HOST_THP}")
    [ "$SHARE_ROOT" = 0 ] ||
        QEMU_CMD+=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on")
}

run_emulated() {
    local host guest initrd=$WORK/host-initramfs.cpio
    command -v "$(qemu_binary "$ARCH")" >/dev/null ||
        skip_or_fail "$(qemu_binary "$ARCH") not installed (ci/setup-host.sh)"
    host=$(assets "$HOST_KVER")
    guest=$(assets "$GUEST_KVER")
    [ -f "$initrd" ] || build_host_initramfs "$host" "$guest" "$initrd"
    qemu_command "$host" "$initrd"
    echo "# ${QEMU_CMD[*]}" >>"$LOG"
    run_bounded "${QEMU_CMD[@]}" >>"$LOG" 2>&1 || RUN_STATUS=$?
    printf '\n# QEMU exited with status %s\n' "$RUN_STATUS" >>"$LOG"
}

# True when the emulated host stopped on its own, before the time limit, after
# KVM came up but before its init reported tandem's exit: TCG's nested
# virtualisation is not flawless, and such a host dies with no panic and no
# word from its init (seen once in CI, x86_64, two nested VMs running).
host_vanished() {
    [ "$DIRECT" = 0 ] && [ "$HOST_ONLY" = 0 ] || return 1
    case ${RUN_STATUS:-0} in 124|137) return 1 ;; esac
    grep -aq 'TANDEM-HOST-KVM=yes' "$LOG" && ! grep -aq 'TANDEM-EXIT=' "$LOG" &&
        ! grep -aq 'Kernel panic' "$LOG"
}

# The emulated host's own kernel panic, when it panicked while tandem ran
# (KVM up, no exit reported): a user process cannot do that to a sound
# kernel, but the x86 host's 6.1 kernel under TCG's nested SVM overflows a
# vCPU thread's kernel stack now and then (docs/testing.md, "When a row
# fails"). Prints the panic line; false when there was none.
host_panic() {
    [ "$DIRECT" = 0 ] && [ "$HOST_ONLY" = 0 ] || return 1
    grep -aq 'TANDEM-HOST-KVM=yes' "$LOG" && ! grep -aq 'TANDEM-EXIT=' "$LOG" &&
        tr -d '\r' <"$LOG" | grep -a -m 1 -o 'Kernel panic - not syncing: .*'
}

# Whether a guest triple-faulted in an emulated x86 host. Nested SVM under
# TCG resets a guest now and then under heavy I/O, QEMU's guests as well as
# tandem's (docs/benchmarks.md, "Problems found while measuring"); a fault
# of tandem's own repeats on the second attempt.
nested_guest_reset() {
    [ "$DIRECT" = 0 ] && [ "$HOST_ONLY" = 0 ] && [ "$ARCH" = x86_64 ] &&
        grep -aq 'guest triple fault (KVM_EXIT_SHUTDOWN)' "$LOG"
}

# Runs the row once more after REASON, keeping the first log as
# NAME.attempt1.log; sets `retried` for the result line.
run_again() {
    retried="second attempt: $1, log $NAME.attempt1.log"
    log "$NAME: $retried"
    mv "$LOG" "${LOG%.log}.attempt1.log"
    RUN_STATUS=0
    : >"$LOG"
    run_emulated
}

# Runs a command under the time limit, in the background so that a signal to
# this script can stop it (cleanup()); returns its status (124: timed out).
run_bounded() {
    timeout --kill-after=10 "$TIMEOUT" "$@" </dev/null &
    CHILD=$!
    local status=0
    wait "$CHILD" || status=$?
    CHILD=""
    return "$status"
}

# Runs tandem with ARGS on this machine, the /guest/ paths in them mapped to
# the staged guest files.
run_direct() {
    local guest args
    hardware_kvm "$ARCH" || die "--direct needs hardware KVM for $ARCH on this machine"
    guest=$(assets "$GUEST_KVER")
    stage_guest_files "$guest" "$WORK"
    args=${1//\/guest\//$WORK/guest/}
    eval "set -- $args"
    {
        echo "tandem-host: direct on $(uname -r)"
        echo "TANDEM-HOST-KVM=yes"
        local code=0 tee_pid
        mkfifo "$WORK/stderr.pipe"
        tee "$WORK/stderr" <"$WORK/stderr.pipe" >&2 &
        tee_pid=$!
        run_bounded "$TANDEM" "$@" 2>"$WORK/stderr.pipe" || code=$?
        wait "$tee_pid" || true
        [ "$code" -ne 124 ] && [ "$code" -ne 137 ] || RUN_STATUS=$code
        echo
        echo "TANDEM-STDERR-LINES=$(wc -l <"$WORK/stderr")"
        echo "TANDEM-EXIT=$code"
    } >>"$LOG" 2>&1
}

# Sets WHY to "" when every pattern given matches the log, else says which did not.
match_all() {
    local pattern
    for pattern in "$@"; do
        grep -aqE -- "$pattern" "$LOG" || { WHY="log does not match '$pattern'"; return 0; }
    done
}

# The number after the last KEY= in the log, or nothing.
last_value() { grep -ao "$1=[0-9]*" "$LOG" | tail -n 1 | cut -d= -f2 || true; }

# Sets WHY to the first unmet expectation ("" when the run passed).
judge() {
    local code lines host_patterns=()
    [ "$DIRECT" = 1 ] || host_patterns=(${EXPECT_HOST[@]+"${EXPECT_HOST[@]}"})
    WHY=""
    case ${RUN_STATUS:-0} in 124|137) WHY="timed out after ${TIMEOUT}s" ;; esac
    if ! grep -aq 'TANDEM-HOST-KVM=yes' "$LOG"; then
        WHY=${WHY:-"no /dev/kvm in the emulated host"}; return 0
    fi
    if [ "$HOST_ONLY" = 1 ]; then
        grep -aq 'TANDEM-HOST-READY' "$LOG" || WHY=${WHY:-"host did not reach tandem"}
        [ -n "$WHY" ] || match_all ${host_patterns[@]+"${host_patterns[@]}"}
        return 0
    fi
    code=$(last_value TANDEM-EXIT)
    [ -n "$code" ] || { WHY=${WHY:-"tandem did not finish"}; return 0; }
    [ -z "$WHY" ] || return 0
    case $EXPECT_EXIT in
        nonzero) [ "$code" != 0 ] || WHY="tandem exited 0, expected an error" ;;
        *) [ "$code" = "$EXPECT_EXIT" ] || WHY="tandem exited $code, expected $EXPECT_EXIT" ;;
    esac
    [ -z "$WHY" ] || return 0
    if [ "$GUEST_MARKER" = 1 ] && ! grep -aq 'TANDEM-GUEST-UP uptime=' "$LOG"; then
        WHY="no TANDEM-GUEST-UP from the guest"; return 0
    fi
    [ -z "$GUEST_CPUS" ] || match_all "TANDEM-GUEST-UP uptime=[0-9.]+ cpus=$GUEST_CPUS\b"
    [ -n "$WHY" ] || match_all ${EXPECT[@]+"${EXPECT[@]}"} ${host_patterns[@]+"${host_patterns[@]}"}
    [ -z "$WHY" ] || return 0
    if [ -n "$EXPECT_STDERR_LINES" ]; then
        lines=$(last_value TANDEM-STDERR-LINES)
        [ "$lines" = "$EXPECT_STDERR_LINES" ] ||
            WHY="tandem printed ${lines:-?} stderr lines, expected $EXPECT_STDERR_LINES"
    fi
}

CHILD="" TAIL_PID=""
# Stops what this script started (QEMU or tandem under timeout, the log tail).
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null || true
    [ -z "$TAIL_PID" ] || kill "$TAIL_PID" 2>/dev/null || true
    rm -rf "$WORK"
}

main() {
    parse_args "$@"
    mkdir -p "$ROOT/target/e2e-logs" "$ROOT/target/e2e-work"
    LOG=$ROOT/target/e2e-logs/$NAME.log
    WORK=$(mktemp -d "$ROOT/target/e2e-work/$NAME.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    if [ "$HOST_ONLY" = 0 ] && [ ! -x "$TANDEM" ]; then
        die "no tandem binary at $TANDEM (ci/build-static.sh $ARCH, or --tandem PATH)"
    fi
    local start=$SECONDS
    RUN_STATUS=0
    : >"$LOG"
    rm -f "${LOG%.log}.attempt1.log"
    if [ "$VERBOSE" = 1 ]; then
        tail -n +1 -f "$LOG" >&2 &
        TAIL_PID=$!
    fi
    if [ "$DIRECT" = 1 ]; then run_direct "$RUN_ARGS"; else run_emulated; fi
    # One more try, reported as such, when the emulated host itself died or
    # panicked, or when a failed row's guest triple-faulted in an emulated
    # x86 host; the first attempt's log is kept beside the row's.
    local retried="" panic
    if host_vanished; then
        run_again "the first emulated host stopped after $((SECONDS - start)) s, QEMU status $RUN_STATUS"
    elif panic=$(host_panic); then
        run_again "the first emulated host's own kernel panicked after $((SECONDS - start)) s: $panic"
    fi
    judge
    if [ -n "$WHY" ] && [ -z "$retried" ] && nested_guest_reset; then
        run_again "a guest triple-faulted in the first emulated host ($WHY)"
        judge
    fi
    log "$NAME: $((SECONDS - start)) s, log $LOG"
    if [ -z "$WHY" ]; then
        echo "RESULT: PASS $NAME${retried:+ ($retried)}"
    else
        echo "RESULT: FAIL $NAME ($WHY${retried:+; $retried})"
        exit 1
    fi
}

# On one line, so that bash has read all it will run before main starts: an
# edit to this file while it runs cannot make it run more.
main "$@"; exit
