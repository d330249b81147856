# shellcheck shell=dash
# blk-ro: /dev/vdb (readonly=on) reads back the contents the host wrote
# (sha256 in tandem.vdb_sum=) and refuses a write. The host checks the file
# did not change (check blk-ro-file).
check_blk_ro() {
    local ro sum want
    if [ ! -b /dev/vdb ]; then check_result blk-ro FAIL "no /dev/vdb"; return; fi
    ro=$(cat /sys/block/vdb/ro)
    want=$(cmdline_value tandem.vdb_sum)
    sum=$(dd if=/dev/vdb bs=1M iflag=direct 2>/tmp/check.err | sha_of_stdin)
    if [ "$sum" != "$want" ]; then
        check_result blk-ro FAIL "read sha256 $sum, host wrote $want ($(last_error))"; return
    fi
    if dd if=/dev/zero of=/dev/vdb bs=4k count=1 oflag=direct conv=fsync,notrunc 2>/tmp/check.err; then
        check_result blk-ro FAIL "a write to the read-only disk succeeded (ro=$ro)"; return
    fi
    if [ "$ro" != 1 ]; then check_result blk-ro FAIL "/sys/block/vdb/ro is '$ro'"; return; fi
    check_result blk-ro PASS "ro=1, read sha256 matches, write refused: $(last_error)"
}
check_wanted blk-ro && check_blk_ro
