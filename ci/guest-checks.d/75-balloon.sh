# shellcheck shell=dash
# balloon (ci/balloon-e2e.sh): the guest end of the balloon rows. Fills
# tandem.balloon_fill_mib MiB of a tmpfs and frees it (the host's pages
# behind them stay resident), says BALLOON-FREED, then follows MemTotal
# (virtio_balloon without DEFLATE_ON_OOM takes inflated pages out of it):
# down by at least 200 MiB once the host inflated, back within 8 MiB once
# it deflated. Then it fills the tmpfs again: the guest keeps working.
mem_total_kb() { sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }

# Fills and frees MIB MiB of tmpfs; false if the writing failed.
balloon_fill() {
    mkdir -p /mnt/balloon
    mount -t tmpfs -o size=$(($1 + 64))m tmpfs /mnt/balloon || return 1
    dd if=/dev/zero of=/mnt/balloon/fill bs=1M count="$1" 2>/tmp/check.err
    local written
    written=$(($(wc -c </mnt/balloon/fill) >> 20))
    rm -f /mnt/balloon/fill
    umount /mnt/balloon
    [ "$written" = "$1" ]
}

# Waits up to SECONDS for MemTotal to be at most (down) or at least (up)
# KB kB.
balloon_wait() {
    local left=$1 way=$2 want=$3 total
    while [ "$left" -gt 0 ]; do
        total=$(mem_total_kb)
        case $way in
            down) [ "$total" -le "$want" ] && return 0 ;;
            up) [ "$total" -ge "$want" ] && return 0 ;;
        esac
        sleep 2
        left=$((left - 2))
    done
    return 1
}

check_balloon() {
    local fill full inflated
    fill=$(cmdline_value tandem.balloon_fill_mib)
    full=$(mem_total_kb)
    if ! balloon_fill "$fill"; then
        check_result balloon-guest FAIL "could not fill $fill MiB of tmpfs ($(last_error))"
        return
    fi
    echo "BALLOON-FREED fill_mib=$fill mem_total_kb=$full"
    if ! balloon_wait 600 down $((full - 200 * 1024)); then
        check_result balloon-guest FAIL "MemTotal never fell by 200 MiB: $(mem_total_kb) kB of $full"
        return
    fi
    inflated=$(mem_total_kb)
    echo "BALLOON-INFLATED mem_total_kb=$inflated"
    if ! balloon_wait 600 up $((full - 8 * 1024)); then
        check_result balloon-guest FAIL "MemTotal never came back: $(mem_total_kb) kB of $full"
        return
    fi
    if balloon_fill "$fill"; then
        check_result balloon-guest PASS "MemTotal $full -> $inflated -> $(mem_total_kb) kB; $fill MiB filled and freed before and after"
    else
        check_result balloon-guest FAIL "could not fill $fill MiB after the deflate ($(last_error))"
    fi
}
check_wanted balloon && check_balloon
