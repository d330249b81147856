# shellcheck shell=dash
# rng: /dev/hwrng is served by virtio_rng and gives 256 bytes that are not
# all the same.
check_rng() {
    local current bytes distinct
    if [ ! -c /dev/hwrng ]; then check_result rng FAIL "no /dev/hwrng"; return; fi
    current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    case $current in
        virtio_rng*) ;;
        *) check_result rng FAIL "rng_current is '$current'"; return ;;
    esac
    dd if=/dev/hwrng of=/tmp/rng.bin bs=64 count=4 iflag=fullblock 2>/tmp/check.err
    bytes=$(wc -c </tmp/rng.bin | tr -d " ")
    distinct=$(od -An -v -tx1 /tmp/rng.bin | tr -s ' ' '\n' | grep . | sort -u | wc -l)
    rm -f /tmp/rng.bin
    if [ "$bytes" -ne 256 ]; then
        check_result rng FAIL "read $bytes bytes, expected 256 ($(last_error))"
    elif [ "$distinct" -lt 2 ]; then
        check_result rng FAIL "256 bytes, all equal"
    else
        check_result rng PASS "$current, 256 bytes, $distinct distinct values"
    fi
}
check_wanted rng && check_rng
