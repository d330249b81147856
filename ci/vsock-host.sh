#!/bin/sh
# shellcheck shell=dash
#! The vsock scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/vsock-e2e.sh). One tandem run,
#! seccomp on: the test guest (2 vCPUs; on x86_64 its console is the virtio
#! console, on aarch64 the serial port) with --vsock cid=3,uds=/tmp/v.sock
#! and guest check vsock (ci/guest-checks.d/70-vsock.sh). This host listens
#! on /tmp/v.sock_6000 for the guest's connections before the guest starts,
#! and connects to the guest's port 5000 through /tmp/v.sock once the guest
#! says VSOCK-GUEST-LISTENING; both ends run tandem-vsock-e2e (vsock-e2e/).
#! Last the guest opens two connections to port 6002, whose host end
#! (/tmp/v.sock_6002) leaves the first unread for STALL_S seconds while the
#! guest keeps writing; this script samples tandem's VmRSS meanwhile.
#! Then it compares what both ends report: vsock-host-initiated,
#! vsock-guest-initiated, vsock-stalled-reader, vsock-refused, vsock-exit.
#! Shared helpers: ci/host-lib.sh at /host-lib.sh. Exits 0 when every
#! check passed.

CONNS=32
BYTES=$((2 * 1024 * 1024))
# The stalled-reader bound: tandem may hold BUF_ALLOC = 256 KiB of guest
# data per connection; 8 MiB is that plus slack for heap and allocator
# noise (thread stacks, a 64 KiB scratch packet, the other connection).
# The stalled connection carries more than the bound from the guest (its
# socket buffer is 32 MiB, 70-vsock.sh), so a tandem that buffered what
# the guest sends while the host program does not read would pass it
# within the stall (tried with BUF_ALLOC raised to 64 MiB: VmRSS grew by
# 24 MiB).
STALL_S=10
STALL_BYTES=$((24 * 1024 * 1024))
RSS_BOUND_KB=$((8 * 1024))
RUN_TIMEOUT=480
PROGRAM=/bin/tandem-vsock-e2e
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=vsock-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

FAILED=0
check() {
    [ "$2" = PASS ] || FAILED=1
    check_result "$@"
}

# "index sum" lines, sorted, of the VSOCK-CONN lines of MODE in FILE,
# FIELD being sent_sum or received_sum.
sums() {
    tr -d '\r' <"$3" | grep "VSOCK-CONN mode=$1 " |
        sed -n "s/.* index=\([0-9]*\) .*$2=\([0-9a-f]*\).*/\1 \2/p" | sort
}

# True when FILE has VSOCK-DONE for MODE with all N connections matched.
all_matched() { tr -d '\r' <"$2" | grep -q "VSOCK-DONE mode=$1 conns=$3 ok=$3 "; }

# Succeeds when the N connections opened by mode OPENER (output in FILE_O)
# and accepted by mode ACCEPTOR (in FILE_A) all matched at both ends, and
# what one end sent is what the other received, both ways; else prints why.
ends_agree() {
    local opener=$1 file_o=$2 acceptor=$3 file_a=$4 n=$5 there back
    there=$(sums "$opener" sent_sum "$file_o")
    back=$(sums "$acceptor" sent_sum "$file_a")
    if ! all_matched "$opener" "$file_o" "$n" || ! all_matched "$acceptor" "$file_a" "$n"; then
        echo "not every connection matched: $(tr -d '\r' <"$file_o" | grep "VSOCK-DONE mode=$opener \|VSOCK-ERROR") / $(tr -d '\r' <"$file_a" | grep "VSOCK-DONE mode=$acceptor \|VSOCK-ERROR")"
        return 1
    elif [ -z "$there" ] || [ "$there" != "$(sums "$acceptor" received_sum "$file_a")" ] ||
        [ "$back" != "$(sums "$opener" received_sum "$file_o")" ]; then
        echo "the ends' sums differ"
        return 1
    fi
}

# Check NAME: the CONNS connections between OPENER and ACCEPTOR agree.
compare_ends() {
    local why
    if why=$(ends_agree "$2" "$3" "$4" "$5" "$CONNS"); then
        check "$1" PASS "$CONNS connections, $BYTES bytes each way on each, sums agree; $(tr -d '\r' <"$3" | grep -o "VSOCK-DONE mode=$2 .*")"
    else
        check "$1" FAIL "$why"
    fi
}

rss_kb() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$TANDEM_PID/status"; }

# Samples tandem's VmRSS every second from the host end's VSOCK-STALL
# begin line to its end line: sets STALL_BASE_KB, STALL_MAX_KB, STALL_SAMPLES.
sample_stall() {
    STALL_BASE_KB="" STALL_MAX_KB=0 STALL_SAMPLES=0
    wait_until "$RUN_TIMEOUT" grep -q "VSOCK-STALL begin" /tmp/host-stall.out || return 1
    STALL_BASE_KB=$(rss_kb)
    local left=$((STALL_S + 30)) rss
    while ! grep -q "VSOCK-STALL end" /tmp/host-stall.out && [ "$left" -gt 0 ]; do
        rss=$(rss_kb)
        [ -z "$rss" ] || [ "$rss" -le "$STALL_MAX_KB" ] || STALL_MAX_KB=$rss
        STALL_SAMPLES=$((STALL_SAMPLES + 1))
        sleep 1
        left=$((left - 1))
    done
}

# vsock-stalled-reader: while the host end left connection 0 unread for
# STALL_S s, tandem grew by at most RSS_BOUND_KB, connection 1 finished
# meanwhile, and afterwards both connections completed with agreeing sums.
check_stalled_reader() {
    local why others growth
    others=$(sed -n 's/.*VSOCK-STALL end others_finished=\([0-9]*\).*/\1/p' /tmp/host-stall.out)
    if [ -z "$STALL_BASE_KB" ] || [ "$STALL_SAMPLES" -lt $((STALL_S / 2)) ]; then
        check vsock-stalled-reader FAIL "no stall seen ($STALL_SAMPLES samples): $(grep 'VSOCK-STALL\|VSOCK-ERROR' /tmp/host-stall.out)"
        return
    fi
    growth=$((STALL_MAX_KB - STALL_BASE_KB))
    if ! why=$(ends_agree connect-vsock-stalled /tmp/run.out listen-unix /tmp/host-stall.out 2); then
        check vsock-stalled-reader FAIL "$why"
    elif [ "$growth" -gt "$RSS_BOUND_KB" ]; then
        check vsock-stalled-reader FAIL "VmRSS grew $growth kB (from $STALL_BASE_KB) while the host did not read, bound $RSS_BOUND_KB kB"
    elif [ "${others:-0}" -lt 1 ]; then
        check vsock-stalled-reader FAIL "the other connection did not finish during the stall"
    else
        check vsock-stalled-reader PASS "host end unread for $STALL_S s: VmRSS $STALL_BASE_KB kB, max $STALL_MAX_KB kB over $STALL_SAMPLES samples (grew $growth kB, bound $RSS_BOUND_KB kB); the other connection finished meanwhile; then $STALL_BYTES bytes guest to host matched, sums agree; $(tr -d '\r' </tmp/host-stall.out | grep -o 'VSOCK-CONN mode=listen-unix index=0 ms=[0-9]*')"
    fi
}

TANDEM=${TANDEM:-/bin/tandem}
rm -f /tmp/v.sock /tmp/v.sock_*
cat /guest/initramfs.cpio.gz /guest/vsock.cpio.gz >/tmp/vsock-initrd.gz
"$PROGRAM" listen-unix /tmp/v.sock_6000 "$CONNS" >/tmp/host-listen.out 2>&1 &
LISTEN_PID=$!
"$PROGRAM" listen-unix /tmp/v.sock_6002 2 "$STALL_S" >/tmp/host-stall.out 2>&1 &
STALL_PID=$!
# The x86_64 row's guest talks on the virtio console, the aarch64 rows'
# on the serial port: vsock beside either console.
console=ttyS0
[ "$(uname -m)" != x86_64 ] || console=hvc0
start_tandem /tmp/run.out run --kernel /guest/vmlinuz --initrd /tmp/vsock-initrd.gz \
    --cpus 2 --memory 512M --vsock cid=3,uds=/tmp/v.sock \
    --console "$([ "$console" = hvc0 ] && echo virtio || echo serial)" \
    --cmdline "console=$console quiet panic=-1 tandem.mode=checks tandem.checks=vsock tandem.vsock_conns=$CONNS tandem.vsock_bytes=$BYTES tandem.vsock_stall_bytes=$STALL_BYTES"
if wait_until 300 grep -q VSOCK-GUEST-LISTENING /tmp/run.out; then
    note "the guest listens: $CONNS connections to its port 5000"
    "$PROGRAM" connect-unix /tmp/v.sock 5000 "$CONNS" "$BYTES" >/tmp/host-connect.out 2>&1
    "$PROGRAM" refused-unix /tmp/v.sock 5001 >>/tmp/host-connect.out 2>&1
    sample_stall || note "the host end never said VSOCK-STALL begin"
else
    note "the guest never said VSOCK-GUEST-LISTENING"
fi
finish_tandem "$RUN_TIMEOUT"
kill "$LISTEN_PID" "$STALL_PID" 2>/dev/null
wait "$LISTEN_PID" 2>/dev/null
wait "$STALL_PID" 2>/dev/null
echo "vsock-host: host ends:"
cat /tmp/host-connect.out /tmp/host-listen.out /tmp/host-stall.out 2>/dev/null

compare_ends vsock-host-initiated connect-unix /tmp/host-connect.out listen-vsock /tmp/run.out
compare_ends vsock-guest-initiated connect-vsock /tmp/run.out listen-unix /tmp/host-listen.out
check_stalled_reader
if tr -d '\r' <"/tmp/run.out" | grep -q "VSOCK-REFUSED mode=refused-vsock refused=true" &&
    grep -q "VSOCK-REFUSED mode=refused-unix refused=true" /tmp/host-connect.out; then
    check vsock-refused PASS "$(tr -d '\r' </tmp/run.out | grep -o 'VSOCK-REFUSED mode=refused-vsock.*'); a host CONNECT 5001 got no OK"
else
    check vsock-refused FAIL "$(tr -d '\r' </tmp/run.out | grep VSOCK-REFUSED) / $(grep VSOCK-REFUSED /tmp/host-connect.out)"
fi
if [ "$TANDEM_EXIT" = 0 ] && ! grep -q "seccomp" /tmp/run.out; then
    check vsock-exit PASS "tandem exited 0, no seccomp line"
else
    check vsock-exit FAIL "tandem exited $TANDEM_EXIT; $(grep -m1 'seccomp\|tandem: error' /tmp/run.out)"
fi
exit "$FAILED"
