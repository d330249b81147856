# shellcheck shell=dash
# net: eth0 gets 10.77.0.2/24; the emulated host is 10.77.0.1 on its TAP
# (these addresses exist only inside the emulated host; kernel arguments
# tandem.net_ip= and tandem.net_host= choose others, tandem.net_mib= the
# size each way, default 8). Down: wget the
# host's down.bin and compare with its down.sha256. Up: serve up.bin with
# httpd, print NET-UP-READY; the host fetches it and publishes the sha256 it
# computed as up-received.sha256, which must match ours.
# The host this guest fetches from; set here, not in check_net, because
# check neighbour-io (60-neighbour.sh) fetches through net_fetch too.
NET_HOST=$(cmdline_value tandem.net_host)
NET_HOST=${NET_HOST:-10.77.0.1}

# (timeout, not wget -T: busybox 1.35's wget segfaults with -T.)
net_fetch() { timeout 30 wget -q -O "$2" "http://$NET_HOST:8080/$1" 2>/tmp/check.err; }

# Retries net_fetch once a second for up to $3 seconds.
net_fetch_retry() {
    local tries=0
    until net_fetch "$1" "$2"; do
        tries=$((tries + 1))
        [ "$tries" -lt "$3" ] || return 1
        sleep 1
    done
}

# True when something listens on TCP port 8080 (IPv4 or IPv6).
net_listening() { grep -qs ':1F90 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6; }

# What the guest saw of eth0, for a failure's log.
net_diagnostics() {
    local stat
    for stat in rx_packets tx_packets rx_dropped tx_dropped tx_errors; do
        echo "net-diag: $stat $(cat /sys/class/net/eth0/statistics/$stat)"
    done
    grep -i virtio /proc/interrupts | sed 's/^/net-diag: /'
    dmesg | grep -iE 'virtio|eth0|timeout' | tail -n 5 | sed 's/^/net-diag: /'
}

check_net() {
    local mac want_mac down want_down up got_up httpd_pid tries=0 ip mib
    ip=$(cmdline_value tandem.net_ip)
    mib=$(cmdline_value tandem.net_mib)
    if [ ! -d /sys/class/net/eth0 ]; then check_result net FAIL "no eth0"; return; fi
    mac=$(cat /sys/class/net/eth0/address)
    want_mac=$(cmdline_value tandem.net_mac)
    if [ "$mac" != "$want_mac" ]; then check_result net FAIL "MAC $mac, expected $want_mac"; return; fi
    ip addr add "${ip:-10.77.0.2}/24" dev eth0 && ip link set eth0 up
    if ! net_fetch_retry down.sha256 /tmp/down.sha256 60; then
        check_result net FAIL "host $NET_HOST unreachable: $(last_error)"; return
    fi
    if ! net_fetch down.bin /tmp/down.bin; then check_result net FAIL "wget down.bin: $(last_error)"; return; fi
    down=$(sha_of_stdin </tmp/down.bin)
    want_down=$(cut -c1-64 /tmp/down.sha256)
    rm -f /tmp/down.bin
    if [ "$down" != "$want_down" ]; then
        check_result net FAIL "down: got sha256 $down, host sent $want_down"; return
    fi
    mkdir -p /tmp/www
    dd if=/dev/urandom of=/tmp/www/up.bin bs=1M count="${mib:-8}" 2>/dev/null
    up=$(sha_of_stdin </tmp/www/up.bin)
    httpd -f -p 8080 -h /tmp/www &
    httpd_pid=$!
    # Ready only once httpd listens (port 8080 = 1F90, state 0A): a host
    # that connects earlier is refused.
    until net_listening; do
        tries=$((tries + 1))
        [ "$tries" -lt 30 ] || break
        sleep 1
    done
    echo "NET-UP-READY $up"
    net_fetch_retry up-received.sha256 /tmp/up.sha256 360
    kill "$httpd_pid" 2>/dev/null
    rm -rf /tmp/www
    got_up=$(cut -c1-64 /tmp/up.sha256 2>/dev/null)
    if [ "$got_up" = "$up" ]; then
        check_result net PASS "${mib:-8} MiB each way, down sha256 $down, up sha256 $up, mac $mac"
    else
        net_diagnostics
        check_result net FAIL "up: host received sha256 '${got_up:-nothing}', sent $up"
    fi
}
check_wanted net && check_net
