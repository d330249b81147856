# shellcheck shell=dash
# neighbour-io (ci/hostile-e2e.sh): the well-behaved VM beside a hostile
# one measures its own disk and network throughput. Disk: 32 MiB of
# random data written to /dev/vda with O_DIRECT and fsync, timed
# (CHECK-SUM neighbour-vda lets the host compare the disk file). Network:
# the host's 8 MiB down.bin fetched twice over eth0 (10.77.0.2; the host
# is 10.77.0.1, as in check net), timed, sha256 compared. Prints
# NEIGHBOUR-IO disk_kBps=<n> net_kBps=<n>; the host compares the numbers
# of a run beside the attacker with those of a run alone.
NEIGHBOUR_DISK_MIB=32
NEIGHBOUR_NET_FETCHES=2

# The guest's uptime in centiseconds.
uptime_cs() {
    local up
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'
}

# kB per second for KIB kilobytes in CS centiseconds.
kbps() { echo $(($1 * 100 / ($2 > 0 ? $2 : 1))); }

check_neighbour() {
    local sum t0 t1 t2 t3 n=0 want got
    if [ ! -b /dev/vda ]; then check_result neighbour-io FAIL "no /dev/vda"; return; fi
    dd if=/dev/urandom of=/tmp/nb.bin bs=1M count=$NEIGHBOUR_DISK_MIB 2>/dev/null
    sum=$(sha_of_stdin </tmp/nb.bin)
    echo "CHECK-SUM neighbour-vda $sum"
    t0=$(uptime_cs)
    if ! dd if=/tmp/nb.bin of=/dev/vda bs=1M oflag=direct conv=fsync,notrunc 2>/tmp/check.err; then
        check_result neighbour-io FAIL "disk write: $(last_error)"; rm -f /tmp/nb.bin; return
    fi
    t1=$(uptime_cs)
    rm -f /tmp/nb.bin
    ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up
    if ! net_fetch_retry down.sha256 /tmp/down.sha256 60; then
        check_result neighbour-io FAIL "host 10.77.0.1 unreachable: $(last_error)"; return
    fi
    want=$(cut -c1-64 /tmp/down.sha256)
    t2=$(uptime_cs)
    while [ "$n" -lt "$NEIGHBOUR_NET_FETCHES" ]; do
        if ! net_fetch down.bin /tmp/down.bin; then
            check_result neighbour-io FAIL "wget down.bin: $(last_error)"; return
        fi
        got=$(sha_of_stdin </tmp/down.bin)
        rm -f /tmp/down.bin
        if [ "$got" != "$want" ]; then
            check_result neighbour-io FAIL "down.bin sha256 $got, host sent $want"; return
        fi
        n=$((n + 1))
    done
    t3=$(uptime_cs)
    echo "NEIGHBOUR-IO disk_kBps=$(kbps $((NEIGHBOUR_DISK_MIB * 1024)) $((t1 - t0)))" \
         "net_kBps=$(kbps $((NEIGHBOUR_NET_FETCHES * 8192)) $((t3 - t2)))" \
         "disk_cs=$((t1 - t0)) net_cs=$((t3 - t2))"
    check_result neighbour-io PASS "$NEIGHBOUR_DISK_MIB MiB written (sha256 $sum), $n × 8 MiB fetched intact"
}
check_wanted neighbour-io && check_neighbour
