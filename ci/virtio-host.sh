#!/bin/sh
# shellcheck shell=dash
#! The virtio scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/virtio-e2e.sh). tandem's base
#! arguments (kernel, initrd, cpus, memory) are this script's arguments, else
#! those in /run.args (emulated-host.sh --run); $TANDEM is the binary
#! (default /bin/tandem). Two tandem runs against the guest's checks (ci/guest-checks.d):
#!   1. serial console; vda (96 MiB, read-write), vdb (16 MiB random,
#!      readonly=on), virtio-net on tap0, virtio-rng; guest checks blk, blk-ro,
#!      rng, net. This script serves the host end of net, then checks the
#!      disk files: blk-file, blk-ro-file.
#!   2. virtio console (hvc0) and vda; guest checks console, crash. On
#!      CRASH-READY it SIGKILLs tandem and checks the region: crash.
#! Prints CHECK <name> PASS|FAIL <detail> for its own checks; exits 0 when
#! run 1 ended with tandem exiting 0 and run 2 reached CRASH-READY.

RUN_TIMEOUT=300
HOST_IP=10.77.0.1
GUEST_IP=10.77.0.2
GUEST_MAC=52:54:00:77:00:02
VDA_ID=tandem-vda
GUEST_CMDLINE="quiet panic=-1 tandem.mode=checks"
TANDEM_PID="" TAIL_PID=""

# Notes wait in a file while tandem's output is being copied to the
# console: written in between, they would split the guest's lines.
note() {
    local uptime
    read -r uptime _ </proc/uptime
    echo "virtio-host: [$uptime] $*" >>/tmp/notes
}
check_result() { echo "CHECK $1 $2 $3"; }
sha_file() { sha256sum "$1" | cut -c1-64; }
# sha256 of COUNT MiB of FILE from SKIP MiB on.
sha_range() { dd if="$1" bs=1M skip="$2" count="$3" 2>/dev/null | sha256sum | cut -c1-64; }
# The last 64-hex-digit sum after MARKER in FILE.
marker_sum() { sed -n "s/.*$1 \([0-9a-f]\{64\}\).*/\1/p" "$2" | tail -n 1; }

# Starts tandem in the background with its output in OUT, copied live to
# the console.
start_tandem() {
    local out=$1
    shift
    : >"$out"
    : >/tmp/notes
    note "tandem $*"
    "$TANDEM" "$@" >"$out" 2>&1 </dev/null &
    TANDEM_PID=$!
    tail -n +1 -f "$out" &
    TAIL_PID=$!
}

# Runs CMD once a second until it succeeds (0), SECONDS pass or tandem
# ends (1).
wait_until() {
    local left=$1
    shift
    while ! "$@"; do
        kill -0 "$TANDEM_PID" 2>/dev/null || return 1
        left=$((left - 1))
        [ "$left" -gt 0 ] || return 1
        sleep 1
    done
}

# Waits up to SECONDS for tandem to end (SIGKILL after that), stops the
# copy to the console and prints the notes. Sets TANDEM_EXIT.
finish_tandem() {
    local left=$1
    while kill -0 "$TANDEM_PID" 2>/dev/null && [ "$left" -gt 0 ]; do
        sleep 1
        left=$((left - 1))
    done
    if kill -0 "$TANDEM_PID" 2>/dev/null; then
        note "tandem still running after the time limit: SIGKILL"
        kill -9 "$TANDEM_PID"
    fi
    wait "$TANDEM_PID"
    TANDEM_EXIT=$?
    sleep 2 # busybox tail -f polls once a second
    kill "$TAIL_PID"
    wait "$TAIL_PID" 2>/dev/null
    note "tandem exited with $TANDEM_EXIT"
    echo
    cat /tmp/notes
}

# The host end of net: address tap0 once tandem created it, then fetch the
# guest's up.bin and publish the sum this side computed.
serve_net() {
    if ! wait_until 60 [ -d /sys/class/net/tap0 ]; then
        note "tap0 never appeared"
        return
    fi
    ip addr add "$HOST_IP/24" dev tap0 && ip link set tap0 up && note "tap0 up as $HOST_IP"
    if ! wait_until "$RUN_TIMEOUT" grep -q NET-UP-READY /tmp/run1.out; then
        note "the guest never served up.bin"
        return
    fi
    note "the guest serves up.bin"
    if timeout 300 wget -q -O /tmp/up.bin "http://$GUEST_IP:8080/up.bin" 2>>/tmp/notes; then
        # Renamed into place: the guest polls for it and must not see it half written.
        sha_file /tmp/up.bin >/tmp/up-received.sha256
        mv /tmp/up-received.sha256 /tmp/www/
        note "fetched up.bin from the guest, sha256 $(cat /tmp/www/up-received.sha256)"
    else
        note "wget of the guest's up.bin failed after $(wc -c </tmp/up.bin 2>/dev/null || echo 0) bytes"
    fi
}

run_devices() {
    local vdb_sum guest_vda file_vda httpd_pid
    dd if=/dev/zero of=/tmp/vda.img bs=1M count=0 seek=96 2>/dev/null
    dd if=/dev/urandom of=/tmp/vdb.img bs=1M count=16 2>/dev/null
    vdb_sum=$(sha_file /tmp/vdb.img)
    mkdir -p /tmp/www
    dd if=/dev/urandom of=/tmp/www/down.bin bs=1M count=8 2>/dev/null
    sha_file /tmp/www/down.bin >/tmp/www/down.sha256
    httpd -f -p 8080 -h /tmp/www &
    httpd_pid=$!

    start_tandem /tmp/run1.out "$@" --stats \
        --disk "path=/tmp/vda.img,id=$VDA_ID" --disk path=/tmp/vdb.img,readonly=on \
        --net "tap=tap0,mac=$GUEST_MAC" --rng \
        --cmdline "console=ttyS0 $GUEST_CMDLINE tandem.checks=blk,blk-ro,rng,net tandem.vda_id=$VDA_ID tandem.vdb_sum=$vdb_sum tandem.net_mac=$GUEST_MAC"
    serve_net
    finish_tandem "$RUN_TIMEOUT"
    RUN1_EXIT=$TANDEM_EXIT
    kill "$httpd_pid"

    guest_vda=$(marker_sum "CHECK-SUM vda" /tmp/run1.out)
    file_vda=$(sha_range /tmp/vda.img 0 64)
    if [ -n "$guest_vda" ] && [ "$guest_vda" = "$file_vda" ]; then
        check_result blk-file PASS "first 64 MiB of the disk file: sha256 $file_vda, as the guest wrote"
    else
        check_result blk-file FAIL "first 64 MiB of the disk file: sha256 $file_vda, guest wrote '${guest_vda:-nothing}'"
    fi
    if [ "$(sha_file /tmp/vdb.img)" = "$vdb_sum" ]; then
        check_result blk-ro-file PASS "read-only disk file unchanged, sha256 $vdb_sum"
    else
        check_result blk-ro-file FAIL "read-only disk file changed: sha256 $(sha_file /tmp/vdb.img), was $vdb_sum"
    fi
}

run_console_crash() {
    local guest_sum file_sum ready=0
    start_tandem /tmp/run2.out "$@" --disk path=/tmp/vda.img --console virtio \
        --cmdline "console=hvc0 $GUEST_CMDLINE tandem.checks=console,crash"
    if wait_until "$RUN_TIMEOUT" grep -q CRASH-READY /tmp/run2.out; then
        kill -9 "$TANDEM_PID"
        ready=1
        note "CRASH-READY seen: tandem SIGKILLed"
    fi
    finish_tandem 30
    RUN2_EXIT=$TANDEM_EXIT
    guest_sum=$(marker_sum CRASH-READY /tmp/run2.out)
    file_sum=$(sha_range /tmp/vda.img 80 8)
    if [ "$ready" = 1 ] && [ "$guest_sum" = "$file_sum" ]; then
        check_result crash PASS "8 MiB at 80 MiB after SIGKILL: sha256 $file_sum, as the guest fsync'd"
    else
        check_result crash FAIL "8 MiB at 80 MiB after tandem ended ($RUN2_EXIT): sha256 $file_sum, guest wrote '${guest_sum:-nothing}'"
    fi
    [ "$ready" = 1 ]
}

TANDEM=${TANDEM:-/bin/tandem}
[ $# -gt 0 ] || eval "set -- $(cat /run.args)"
# tun is a module in Debian's kernels (emulated-host.sh puts it in
# /lib/modules/extra).
[ -c /dev/net/tun ] || insmod /lib/modules/extra/tun.ko ||
    echo "virtio-host: no tun module: the net check will fail"
run_devices "$@"
run_console_crash "$@"
crash_ready=$?
echo "virtio-host: run 1 exit $RUN1_EXIT, run 2 exit $RUN2_EXIT (SIGKILLed: $((crash_ready == 0)))"
[ "$RUN1_EXIT" = 0 ] && [ "$crash_ready" = 0 ]
