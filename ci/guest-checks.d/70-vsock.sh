# shellcheck shell=dash
# vsock (ci/vsock-e2e.sh): the guest end of the vsock rows, with
# /bin/tandem-vsock-e2e from the cpio appended to the initramfs
# (ci/program-initramfs.sh). A listener on port 5000 takes the host's
# connections (host-initiated); once it listens the guest says
# VSOCK-GUEST-LISTENING, then opens its own connections to the host's port
# 6000 (guest-initiated) and one to port 6001, where nobody listens. Each
# connection carries tandem.vsock_bytes each way, tandem.vsock_conns of
# them at once. Last, two connections to port 6002, whose host end leaves
# the first unread for a while (the stalled-reader check): the first
# carries tandem.vsock_stall_bytes guest to host, the second 512 KiB each
# way; their lines say mode=connect-vsock-stalled. Their sockets have a
# 32 MiB buffer: this guest's kernel sends no more than its own buffer
# ahead of the host's reads, so with the default 256 KiB a tandem that
# advertised and buffered more would go unnoticed. The host compares both ends' lines
# (VSOCK-CONN, VSOCK-DONE).
check_vsock() {
    local conns bytes stall_bytes listener left rc=0
    conns=$(cmdline_value tandem.vsock_conns)
    bytes=$(cmdline_value tandem.vsock_bytes)
    stall_bytes=$(cmdline_value tandem.vsock_stall_bytes)
    if [ ! -x /bin/tandem-vsock-e2e ]; then
        check_result vsock-guest FAIL "no /bin/tandem-vsock-e2e in the initramfs"
        return
    fi
    /bin/tandem-vsock-e2e listen-vsock 5000 "$conns" >/tmp/vsock-listen.out 2>&1 &
    listener=$!
    left=30
    while ! grep -q VSOCK-LISTENING /tmp/vsock-listen.out && [ "$left" -gt 0 ]; do
        sleep 1
        left=$((left - 1))
    done
    echo "VSOCK-GUEST-LISTENING"
    /bin/tandem-vsock-e2e connect-vsock 6000 "$conns" "$bytes" || rc=1
    /bin/tandem-vsock-e2e refused-vsock 6001 || rc=1
    wait "$listener" || rc=1
    cat /tmp/vsock-listen.out
    /bin/tandem-vsock-e2e connect-vsock 6002 2 512K "FIRST=$stall_bytes,0" BUF=32M >/tmp/vsock-stall.out 2>&1 || rc=1
    sed 's/mode=connect-vsock /mode=connect-vsock-stalled /' /tmp/vsock-stall.out
    if [ "$rc" = 0 ]; then
        check_result vsock-guest PASS "$conns connections each way, $bytes bytes each way on each, all matched"
    else
        check_result vsock-guest FAIL "see the VSOCK- lines above"
    fi
}
check_wanted vsock && check_vsock
