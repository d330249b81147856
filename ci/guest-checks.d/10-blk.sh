# shellcheck shell=dash
# blk: 64 MiB of random data (tandem.blk_mib= MiB when given) written to
# /dev/vda with O_DIRECT and fsync, read back with O_DIRECT after dropping
# caches. CHECK-SUM vda lets the host compare the disk file (check
# blk-file). tandem.vda_id= is the serial the host gave the disk.
check_blk() {
    local sectors serial want_serial sum back mib
    mib=$(cmdline_value tandem.blk_mib)
    mib=${mib:-64}
    if [ ! -b /dev/vda ]; then check_result blk FAIL "no /dev/vda"; return; fi
    sectors=$(cat /sys/block/vda/size)
    if [ "$sectors" -lt $((mib * 2048)) ]; then check_result blk FAIL "vda has only $sectors sectors"; return; fi
    serial=$(cat /sys/block/vda/serial 2>/dev/null)
    want_serial=$(cmdline_value tandem.vda_id)
    if [ "$serial" != "$want_serial" ]; then
        check_result blk FAIL "serial '$serial', expected '$want_serial'"; return
    fi
    dd if=/dev/urandom of=/tmp/blk.bin bs=1M count="$mib" 2>/dev/null
    sum=$(sha_of_stdin </tmp/blk.bin)
    echo "CHECK-SUM vda $sum"
    if ! dd if=/tmp/blk.bin of=/dev/vda bs=1M oflag=direct conv=fsync,notrunc 2>/tmp/check.err; then
        check_result blk FAIL "write: $(last_error)"; rm -f /tmp/blk.bin; return
    fi
    rm -f /tmp/blk.bin
    sync
    echo 3 >/proc/sys/vm/drop_caches
    back=$(dd if=/dev/vda bs=1M count="$mib" iflag=direct 2>/tmp/check.err | sha_of_stdin)
    if [ "$back" = "$sum" ]; then
        check_result blk PASS "$mib MiB written and read back, sha256 $sum, $sectors sectors, serial $serial"
    else
        check_result blk FAIL "read back sha256 $back, wrote $sum ($(last_error))"
    fi
}
check_wanted blk && check_blk
