# shellcheck shell=dash
# crash: fresh random data written to /dev/vda (at least 96 MiB) in five
# regions of random offset and size, each fsync'd before the next:
#   direct0..2  4 KiB-96 KiB with O_DIRECT, one in each 16 MiB of 0-48 MiB
#   cache       256 KiB-8 MiB through the page cache, in 64-88 MiB
#   unaligned   1-4095 bytes at an odd byte offset in 88-96 MiB, page cache
#               (a partial-block write: read, modify, write back)
# Then one CRASH-REGION <name> <offset> <length> <sha256> line per region
# (bytes) and CRASH-READY <regions>, and a long sleep: the host SIGKILLs
# tandem and checks each region of the disk file (host-lib.sh
# crash_check_regions; check crash, and ci/crash-soak.sh). Last in the
# order: it does not come back.

# A random number from 0 to $1 - 1.
crash_random() { echo $(($(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % $1)); }

# Writes LENGTH fresh random bytes at byte OFFSET of /dev/vda with dd
# options DD_OPTS..., then fsync; records the region for the report.
crash_write() {
    local name=$1 offset=$2 length=$3 bs=4096 sum
    shift 3
    dd if=/dev/urandom of=/tmp/crash.bin bs="$length" count=1 iflag=fullblock 2>/dev/null
    sum=$(sha_of_stdin </tmp/crash.bin)
    [ $((offset % bs)) = 0 ] && [ $((length % bs)) = 0 ] || bs=1
    if ! dd if=/tmp/crash.bin of=/dev/vda bs=$bs seek=$((offset / bs)) "$@" conv=fsync,notrunc 2>/tmp/check.err; then
        check_result crash FAIL "write $name ($length bytes at $offset): $(last_error)"
        return 1
    fi
    echo "$name $offset $length $sum" >>/tmp/crash.regions
}

check_crash() {
    local mib=1048576 i
    : >/tmp/crash.regions
    for i in 0 1 2; do
        crash_write "direct$i" $((i * 16 * mib + $(crash_random 4072) * 4096)) \
            $(((1 + $(crash_random 24)) * 4096)) oflag=direct || return
    done
    crash_write cache $((64 * mib + $(crash_random 4096) * 4096)) \
        $(((64 + $(crash_random 1985)) * 4096)) || return
    crash_write unaligned $((88 * mib + 1 + 2 * $(crash_random 4000000))) \
        $((1 + $(crash_random 4095))) || return
    rm -f /tmp/crash.bin
    sed 's/^/CRASH-REGION /' /tmp/crash.regions
    echo "CRASH-READY $(wc -l </tmp/crash.regions | tr -d ' ')"
    sleep 600
    check_result crash FAIL "still running 600 s after CRASH-READY"
}
check_wanted crash && check_crash
