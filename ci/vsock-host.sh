#!/bin/sh
# shellcheck shell=dash
#! The vsock scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/vsock-e2e.sh). One tandem run,
#! seccomp on: the test guest (2 vCPUs) with --vsock cid=3,uds=/tmp/v.sock
#! and guest check vsock (ci/guest-checks.d/70-vsock.sh). This host listens
#! on /tmp/v.sock_6000 for the guest's connections before the guest starts,
#! and connects to the guest's port 5000 through /tmp/v.sock once the guest
#! says VSOCK-GUEST-LISTENING; both ends run tandem-vsock-e2e (vsock-e2e/).
#! Then it compares what both ends report: vsock-host-initiated,
#! vsock-guest-initiated, vsock-refused, vsock-exit. Shared helpers:
#! ci/host-lib.sh at /host-lib.sh. Exits 0 when every check passed.

CONNS=8
BYTES=$((2 * 1024 * 1024))
RUN_TIMEOUT=800
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

# True when FILE has VSOCK-DONE for MODE with every connection matched.
all_matched() { tr -d '\r' <"$2" | grep -q "VSOCK-DONE mode=$1 conns=$CONNS ok=$CONNS "; }

# Check NAME: connections opened by mode OPENER (output in FILE_O) and
# accepted by mode ACCEPTOR (in FILE_A) all matched at both ends, and what
# one end sent is what the other received, both ways.
compare_ends() {
    local name=$1 opener=$2 file_o=$3 acceptor=$4 file_a=$5 there back
    there=$(sums "$opener" sent_sum "$file_o")
    back=$(sums "$acceptor" sent_sum "$file_a")
    if ! all_matched "$opener" "$file_o" || ! all_matched "$acceptor" "$file_a"; then
        check "$name" FAIL "not every connection matched: $(tr -d '\r' <"$file_o" | grep "VSOCK-DONE mode=$opener\|VSOCK-ERROR") / $(tr -d '\r' <"$file_a" | grep "VSOCK-DONE mode=$acceptor\|VSOCK-ERROR")"
    elif [ -z "$there" ] || [ "$there" != "$(sums "$acceptor" received_sum "$file_a")" ] ||
        [ "$back" != "$(sums "$opener" received_sum "$file_o")" ]; then
        check "$name" FAIL "the ends' sums differ"
    else
        check "$name" PASS "$CONNS connections, $BYTES bytes each way on each, sums agree; $(tr -d '\r' <"$file_o" | grep -o "VSOCK-DONE mode=$opener.*")"
    fi
}

TANDEM=${TANDEM:-/bin/tandem}
rm -f /tmp/v.sock /tmp/v.sock_*
cat /guest/initramfs.cpio.gz /guest/vsock.cpio.gz >/tmp/vsock-initrd.gz
"$PROGRAM" listen-unix /tmp/v.sock_6000 "$CONNS" >/tmp/host-listen.out 2>&1 &
LISTEN_PID=$!
start_tandem /tmp/run.out run --kernel /guest/vmlinuz --initrd /tmp/vsock-initrd.gz \
    --cpus 2 --memory 512M --vsock cid=3,uds=/tmp/v.sock \
    --cmdline "console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=vsock tandem.vsock_conns=$CONNS tandem.vsock_bytes=$BYTES"
if wait_until 300 grep -q VSOCK-GUEST-LISTENING /tmp/run.out; then
    note "the guest listens: $CONNS connections to its port 5000"
    "$PROGRAM" connect-unix /tmp/v.sock 5000 "$CONNS" "$BYTES" >/tmp/host-connect.out 2>&1
    "$PROGRAM" refused-unix /tmp/v.sock 5001 >>/tmp/host-connect.out 2>&1
else
    note "the guest never said VSOCK-GUEST-LISTENING"
fi
finish_tandem "$RUN_TIMEOUT"
kill "$LISTEN_PID" 2>/dev/null
wait "$LISTEN_PID" 2>/dev/null
echo "vsock-host: host ends:"
cat /tmp/host-connect.out /tmp/host-listen.out 2>/dev/null

compare_ends vsock-host-initiated connect-unix /tmp/host-connect.out listen-vsock /tmp/run.out
compare_ends vsock-guest-initiated connect-vsock /tmp/run.out listen-unix /tmp/host-listen.out
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
