# shellcheck shell=dash
# crash: 8 MiB at 80 MiB into /dev/vda, written through the page cache and
# fsync'd (the device sees a FLUSH), then CRASH-READY and a long sleep: the
# host SIGKILLs tandem and checks the region of the disk file (check crash).
# Last in the order: it does not come back.
check_crash() {
    local sum
    dd if=/dev/urandom of=/tmp/crash.bin bs=1M count=8 2>/dev/null
    sum=$(sha_of_stdin </tmp/crash.bin)
    if ! dd if=/tmp/crash.bin of=/dev/vda bs=1M seek=80 conv=fsync,notrunc 2>/tmp/check.err; then
        check_result crash FAIL "write: $(last_error)"; return
    fi
    echo "CRASH-READY $sum"
    sleep 600
    check_result crash FAIL "still running 600 s after CRASH-READY"
}
check_wanted crash && check_crash
