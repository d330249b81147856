#!/bin/sh
# shellcheck shell=dash
#! The crash-consistency soak, run by busybox sh inside ONE emulated KVM
#! host (ci/emulated-host.sh --host-script; see ci/crash-soak.sh). tandem's
#! base arguments (kernel, initrd, cpus, memory) are those in /run.args;
#! the kernel argument tandem.soak_count=N (default 5) is the number of
#! iterations. Each iteration boots the test guest on the same 96 MiB disk
#! file with the guest check crash (ci/guest-checks.d/90-crash.sh): fresh
#! random data in five regions of random offset and size (three O_DIRECT,
#! one page cache, one unaligned), each fsync'd. On CRASH-READY this script
#! SIGKILLs tandem and compares every region with the disk file
#! (host-lib.sh crash_check_regions). An iteration passes when tandem died
#! of the SIGKILL (exit 137), every region is in the file and no region's
#! data repeats the iteration before's. Prints one line per iteration,
#!   crash-soak: ARCH iteration I/N PASS|FAIL <regions or why> [<s> s]
#! then `CHECK crash-soak PASS|FAIL ...` and the summary
#!   crash-soak: ARCH N/N iterations, every fsync'd block present
#! (or which iterations failed). Exits 0 when every iteration passed.
#! Shared helpers: ci/host-lib.sh, at /host-lib.sh beside this script.

RUN_TIMEOUT=300
DISK=/tmp/soak.img
GUEST_CMDLINE="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=crash"
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=crash-soak
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

# Iteration I with tandem's base ARGS. Prints its line; fails when it did
# not pass.
soak_iteration() {
    local i=$1 start ready=0 why="" sums sum up
    shift
    start=$(uptime_s)
    : >/tmp/notes
    spawn_tandem /tmp/soak.out "$@" --disk "path=$DISK" --cmdline "$GUEST_CMDLINE"
    if wait_until "$RUN_TIMEOUT" grep -q CRASH-READY /tmp/soak.out; then
        kill -9 "$TANDEM_PID"
        ready=1
    fi
    kill -9 "$TANDEM_PID" 2>/dev/null
    wait "$TANDEM_PID" 2>/dev/null # no "Killed" job line
    TANDEM_EXIT=$?
    if [ "$ready" = 0 ]; then
        why="no CRASH-READY (tandem exited $TANDEM_EXIT)"
    elif [ "$TANDEM_EXIT" != 137 ]; then
        why="tandem exited $TANDEM_EXIT before the SIGKILL"
    elif ! crash_check_regions /tmp/soak.out "$DISK"; then
        why=$CRASH_DETAIL
    else
        # Fresh data every time: no sum may repeat one of the iteration before.
        sums=$(cut -d' ' -f5 /tmp/crash.regions)
        for sum in $sums; do
            if grep -q "$sum" /tmp/soak.prev-sums; then why="region data $sum repeats the iteration before"; fi
        done
        echo "$sums" >/tmp/soak.prev-sums
    fi
    up=$(tr -d '\r' </tmp/soak.out | grep -o 'TANDEM-GUEST-UP uptime=[0-9.]* cpus=[0-9]*' | tail -n 1)
    if [ -z "$why" ]; then
        echo "crash-soak: $ARCH iteration $i/$COUNT PASS $CRASH_REGIONS regions $CRASH_DETAIL [${up:-no TANDEM-GUEST-UP}, $(($(uptime_s) - start)) s]"
        return 0
    fi
    echo "crash-soak: $ARCH iteration $i/$COUNT FAIL $why [$(($(uptime_s) - start)) s]"
    cat /tmp/notes
    tr -d '\r' </tmp/soak.out | tail -n 20 | sed "s/^/crash-soak: iteration $i: | /"
    return 1
}

TANDEM=${TANDEM:-/bin/tandem}
ARCH=$(uname -m)
COUNT=$(sed -n 's/.*tandem\.soak_count=\([0-9]*\).*/\1/p' /proc/cmdline)
COUNT=${COUNT:-5}
eval "set -- $(cat /run.args)"
dd if=/dev/zero of="$DISK" bs=1M count=0 seek=96 2>/dev/null
: >/tmp/soak.prev-sums
passed=0 failed="" i=1 begin=$(uptime_s)
while [ "$i" -le "$COUNT" ]; do
    if soak_iteration "$i" "$@"; then passed=$((passed + 1)); else failed="$failed $i"; fi
    i=$((i + 1))
done
took=$(($(uptime_s) - begin))
if [ -z "$failed" ]; then
    check_result crash-soak PASS "$COUNT/$COUNT iterations, every fsync'd region present after SIGKILL, $took s"
    echo "crash-soak: $ARCH $COUNT/$COUNT iterations, every fsync'd block present ($took s)"
else
    check_result crash-soak FAIL "$passed/$COUNT iterations passed; failed:$failed"
    echo "crash-soak: $ARCH $passed/$COUNT iterations passed, failed:$failed ($took s)"
fi
[ -z "$failed" ]
