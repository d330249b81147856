#!/bin/busybox sh
# shellcheck shell=dash
#! The nested guest's init for ci/bench-vsock.sh (/bench-init, started with
#! rdinit=/bench-init from an overlay on the test guest's initramfs, with
#! /bin/tandem-vsock-e2e appended too): the stock init's set-up, eth0 at
#! 10.0.0.2/24 (the emulated host is 10.0.0.1 on the other end of the TAP),
#! then tandem-vsock-e2e listening twice, AF_VSOCK port 7000 and TCP port
#! 7001, for tandem.bench_conns=N connections each (two per run); the host
#! (ci/bench-vsock-host.sh) opens them one at a time and says which way the
#! payload goes. Prints BENCH-GUEST-READY once both listen, the programs'
#! lines when all are served, then powers off.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
while read -r module; do
    insmod "/lib/modules/$module.ko" || echo "bench-init: insmod $module failed"
done </lib/modules/order

conns=1
# shellcheck disable=SC2013 # the command line is one line of words
for word in $(cat /proc/cmdline); do
    case $word in tandem.bench_conns=*) conns=${word#*=} ;; esac
done
read -r uptime _ </proc/uptime
echo "TANDEM-GUEST-UP uptime=$uptime cpus=$(nproc)"

ip link set lo up
ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up
/bin/tandem-vsock-e2e listen-vsock 7000 "$conns" >/tmp/vsock.out 2>&1 &
vsock_pid=$!
/bin/tandem-vsock-e2e listen-tcp 10.0.0.2:7001 "$conns" >/tmp/tcp.out 2>&1 &
tcp_pid=$!
left=30
while ! grep -q LISTENING /tmp/vsock.out || ! grep -q LISTENING /tmp/tcp.out; do
    [ "$left" -gt 0 ] || { echo "bench-init: the listeners did not start"; break; }
    sleep 1
    left=$((left - 1))
done
echo "BENCH-GUEST-READY"
wait "$vsock_pid" "$tcp_pid"
cat /tmp/vsock.out /tmp/tcp.out
poweroff -f
