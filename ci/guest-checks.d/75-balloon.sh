# shellcheck shell=dash
# balloon (ci/balloon-e2e.sh): the guest end of the balloon rows. Fills
# tandem.balloon_fill_mib MiB of a tmpfs, says BALLOON-FILLED and holds it
# tandem.balloon_hold_s seconds (the host reads the guest's statistics
# meanwhile), frees it (the host's pages behind them stay resident), says
# BALLOON-FREED, then follows MemTotal
# (virtio_balloon without DEFLATE_ON_OOM takes inflated pages out of it):
# down by at least 200 MiB once the host inflated, back within 8 MiB once
# it deflated. Then it fills the tmpfs again: the guest keeps working.
#
# balloon-oom (deflate_on_oom): says BALLOON-OOM-READY, waits until the
# host's inflate of tandem.balloon_oom_mib MiB shows in MemAvailable, then
# fills a tmpfs with BALLOON_OOM_OVER_MIB more than is available. The
# driver must give pages back instead of the OOM killer running: PASS when
# every MiB was written and dmesg has no OOM line. Says BALLOON-OOM-DONE
# and holds the fill BALLOON_OOM_HOLD_S seconds for the host to look.
BALLOON_OOM_OVER_MIB=48
BALLOON_OOM_HOLD_S=10
mem_total_kb() { sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
mem_available_kb() { sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo; }

# Fills and frees MIB MiB of tmpfs, holding it HOLD seconds (default 0)
# after BALLOON-FILLED; false if the writing failed.
balloon_fill() {
    mkdir -p /mnt/balloon
    mount -t tmpfs -o size=$(($1 + 64))m tmpfs /mnt/balloon || return 1
    dd if=/dev/zero of=/mnt/balloon/fill bs=1M count="$1" 2>/tmp/check.err
    local written
    written=$(($(wc -c </mnt/balloon/fill) >> 20))
    if [ "${2:-0}" -gt 0 ]; then
        echo "BALLOON-FILLED fill_mib=$written mem_available_kb=$(mem_available_kb)"
        sleep "$2"
    fi
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
    if ! balloon_fill "$fill" "$(cmdline_value tandem.balloon_hold_s)"; then
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
# Waits up to SECONDS for MemAvailable to be at most KB kB.
balloon_wait_available() {
    local left=$1
    while [ "$left" -gt 0 ]; do
        [ "$(mem_available_kb)" -le "$2" ] && return 0
        sleep 2
        left=$((left - 2))
    done
    return 1
}

check_balloon_oom() {
    local inflate before avail fill written ooms
    inflate=$(cmdline_value tandem.balloon_oom_mib)
    before=$(mem_available_kb)
    echo "BALLOON-OOM-READY mem_available_kb=$before"
    # Within 8 MiB of the whole inflate: the last chunks may still be on
    # their way; a few seconds more let them land.
    if ! balloon_wait_available 600 $((before - (inflate - 8) * 1024)); then
        check_result balloon-oom-guest FAIL "MemAvailable never fell by $inflate MiB: $(mem_available_kb) kB of $before"
        return
    fi
    sleep 5
    avail=$(mem_available_kb)
    fill=$((avail / 1024 + BALLOON_OOM_OVER_MIB))
    mkdir -p /mnt/oom
    mount -t tmpfs -o size=$((fill + 64))m tmpfs /mnt/oom
    dd if=/dev/zero of=/mnt/oom/fill bs=1M count="$fill" 2>/tmp/check.err
    written=$(($(wc -c </mnt/oom/fill) >> 20))
    ooms=$(dmesg | grep -cE 'Out of memory|oom-kill|invoked oom-killer')
    echo "BALLOON-OOM-DONE fill_mib=$fill written_mib=$written mem_available_kb=$avail oom_lines=$ooms"
    # The host reads the balloon's actual size now, before power-off.
    sleep "$BALLOON_OOM_HOLD_S"
    rm -f /mnt/oom/fill
    umount /mnt/oom
    if [ "$written" = "$fill" ] && [ "$ooms" = 0 ]; then
        check_result balloon-oom-guest PASS "MemAvailable $before -> $avail kB after the inflate; wrote $written MiB (${BALLOON_OOM_OVER_MIB} MiB past it), no OOM line in dmesg"
    else
        check_result balloon-oom-guest FAIL "wrote $written of $fill MiB; $ooms OOM lines in dmesg: $(dmesg | grep -m1 -E 'Out of memory|oom-kill') $(last_error)"
    fi
}

check_wanted balloon && check_balloon
check_wanted balloon-oom && check_balloon_oom
