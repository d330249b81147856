# shellcheck shell=dash
# snapshot-ticks (ci/snapshot-host.sh): the guest's heartbeat across a
# snapshot and restores. Prints SNAP-TICK <n> uptime=<s> stalls=<k>
# io=<result> once a second, forever (the host ends tandem): n counts on
# in RAM, so a restored guest goes on from the snapshot's count and a
# rebooted one would start again at 1; uptime is the guest's clock; stalls
# counts RCU stall, soft lockup, hung task and clocksource-unstable lines
# in the kernel log. io: each tick also writes "tick <n>" into sector n of
# /dev/vda (O_DIRECT, fsync) if there is one, reads 16 bytes of
# /dev/hwrng if virtio-rng serves it, and fetches tick.txt from the host
# (10.77.0.1, port 8080) over eth0 (10.77.0.2) if there is one; io=ok when
# all of them worked, else the list of those that failed; io=none without
# any of those devices.
# With eth0, one TCP connection to the host's port 9000, opened at the
# start, carries "SNAP-TCP <n>" for the latest tick once a second: the
# host sees whether the connection outlives a snapshot and restore.
# With tandem.dirty_mib=M, a background job rewrites M MiB of RAM (a
# tmpfs file) with random bytes over and over, and after each pass reads
# it back: SNAP-DIRTY <pass> ok|BAD (BAD: what was read is not what was
# written — memory lost, say, in a migration).

# One tick's I/O (see above) for tick $1.
snapshot_tick_io() {
    local failed=""
    if [ -b /dev/vda ]; then
        printf 'tick %-506s\n' "$1" |
            dd of=/dev/vda bs=512 seek="$1" iflag=fullblock oflag=direct conv=notrunc,fsync 2>/dev/null ||
            failed="$failed,blk"
    fi
    if grep -qs virtio_rng /sys/class/misc/hw_random/rng_current; then
        [ "$(timeout 5 dd if=/dev/hwrng bs=16 count=1 iflag=fullblock 2>/dev/null | wc -c)" = 16 ] ||
            failed="$failed,rng"
    fi
    if [ -d /sys/class/net/eth0 ]; then
        timeout 5 wget -q -O /tmp/tick.txt "http://10.77.0.1:8080/tick.txt" 2>/dev/null ||
            failed="$failed,net"
    fi
    echo "${failed:-,ok}" | cut -c2-
}

# Sends the latest tick's line on one TCP connection, once a second, as
# long as the connection lasts (never reconnects). Connects once the host
# answers on port 8080.
snapshot_tcp() {
    local tries=0
    until wget -q -O /dev/null "http://10.77.0.1:8080/tick.txt" 2>/dev/null || [ "$tries" = 60 ]; do
        tries=$((tries + 1))
        sleep 1
    done
    while :; do
        cat /tmp/snap-tcp 2>/dev/null
        sleep 1
    done | nc 10.77.0.1 9000 >/dev/null 2>&1
}

# Rewrites $1 MiB of tmpfs with random bytes and reads it back, forever.
snapshot_dirty() {
    local pass=0 wrote
    while :; do
        pass=$((pass + 1))
        wrote=$(dd if=/dev/urandom bs=1M count="$1" 2>/dev/null | tee /tmp/snap-dirty | md5sum)
        if [ "$wrote" = "$(md5sum </tmp/snap-dirty)" ]; then
            echo "SNAP-DIRTY $pass ok"
        else
            echo "SNAP-DIRTY $pass BAD"
        fi
    done
}

check_snapshot_ticks() {
    local n=0 uptime stalls io=none dirty
    if [ -d /sys/class/net/eth0 ]; then
        ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up
        snapshot_tcp &
    fi
    dirty=$(cmdline_value tandem.dirty_mib)
    [ -z "$dirty" ] || snapshot_dirty "$dirty" &
    while :; do
        n=$((n + 1))
        echo "SNAP-TCP $n" >/tmp/snap-tcp
        read -r uptime _ </proc/uptime
        stalls=$(dmesg | grep -cE 'rcu.*(stall|detected)|soft lockup|hung task|clocksource.*unstable')
        [ -b /dev/vda ] || [ -c /dev/hwrng ] || [ -d /sys/class/net/eth0 ] &&
            io=$(snapshot_tick_io "$n")
        echo "SNAP-TICK $n uptime=$uptime stalls=$stalls io=$io"
        sleep 1
    done
}
check_wanted snapshot-ticks && check_snapshot_ticks
