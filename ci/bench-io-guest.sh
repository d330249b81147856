#!/bin/busybox sh
#! The nested guest's init for ci/bench-io.sh (/bench-init, started with
#! rdinit=/bench-init from an overlay on the test guest's initramfs): the
#! stock init's set-up and marker, then one workload, then power-off.
#! Kernel arguments: tandem.bench=idle|info|blk-write|blk-read|blk-write-4|
#! blk-read-4|net-tx|net-rx|net-tx-big (info: what the guest sees of its CPU
#! and paravirtual features; blk-*-4: four dd at once, each over a quarter
#! of the N MiB, so four requests are in flight; net-tx-big: net-tx with
#! 256 KiB writes, /bin/tcp-send),
#! tandem.bench_mb=N (MiB moved). The disk is /dev/vda; the network is eth0
#! at 10.0.0.2/24 with the emulated host at 10.0.0.1, listening on 5001
#! (takes what the guest sends) and 5002 (sends N MiB). Prints
#!   TANDEM-BENCH-START
#!   TANDEM-BENCH workload=W rc=N mb=N guest_s=S guest_irqs=N [bytes=N] [net…]
#! guest_s on the guest's /proc/uptime (10 ms steps); guest_irqs counts the
#! virtio interrupts the guest took meanwhile (/proc/interrupts); net
#! workloads add the guest's own counts: eth0 packets each way, TCP segments
#! sent and retransmitted.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
while read -r module; do
    insmod "/lib/modules/$module.ko" || echo "bench-init: insmod $module failed"
done </lib/modules/order

bench=idle mb=256
for word in $(cat /proc/cmdline); do
    case $word in
        tandem.bench=*) bench=${word#*=} ;;
        tandem.bench_mb=*) mb=${word#*=} ;;
    esac
done

read -r uptime _ </proc/uptime
echo "TANDEM-GUEST-UP uptime=$uptime cpus=$(nproc)"
for device in /sys/bus/virtio/devices/*; do
    [ -e "$device/features" ] &&
        echo "bench-init: $(basename "$device") id=$(cat "$device/device") features=$(cat "$device/features")"
done

virtio_irqs() {
    awk '/virtio/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) sum += $i } END { print sum + 0 }' /proc/interrupts
}

# "name=value" words for the guest's network counters.
net_counters() {
    stats=/sys/class/net/eth0/statistics
    echo "tx_packets=$(cat $stats/tx_packets) rx_packets=$(cat $stats/rx_packets)" \
         "$(awk '/^Tcp:/ { if (!n++) { for (i = 1; i <= NF; i++) name[i] = $i; next }
                          for (i = 1; i <= NF; i++) if (name[i] == "OutSegs" || name[i] == "RetransSegs")
                              printf "%s=%s ", name[i], $i }' /proc/net/snmp)"
}

# " name=after-before" words.
counter_deltas() {
    for pair in $2; do
        name=${pair%%=*}
        before=$(echo " $1 " | sed -n "s/.* $name=\([0-9]*\) .*/\1/p")
        printf ' %s=%s' "$name" $((${pair#*=} - before))
    done
}

extra=""
case $bench in
    net-*)
        ip link set lo up
        ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up
        # Resolves the host's address before the clock starts.
        ping -c 1 -W 5 10.0.0.1 >/dev/null || echo "bench-init: 10.0.0.1 does not answer" ;;
esac

net_before=""
case $bench in net-*) net_before=$(net_counters) ;; esac
echo "TANDEM-BENCH-START"
irqs_before=$(virtio_irqs)
read -r start _ </proc/uptime
case $bench in
    idle) sleep 1 ;;
    info)
        grep -m1 '^flags' /proc/cpuinfo | sed 's/^/bench-init: cpu /'
        dmesg | grep -iE 'kvm|paravirt|clocksource|tsc|apic|io.delay' | sed 's/^/bench-init: dmesg /'
        grep -r . /sys/devices/system/cpu/vulnerabilities/ | sed 's|.*/|bench-init: vuln |'
        echo "bench-init: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" ;;
    blk-write) dd if=/dev/zero of=/dev/vda bs=1M count="$mb" oflag=direct 2>/tmp/dd.err ;;
    blk-read) dd if=/dev/vda of=/dev/null bs=1M count="$mb" iflag=direct 2>/tmp/dd.err ;;
    # Four requests in flight: four dd, each over its own quarter.
    blk-write-4|blk-read-4)
        quarter=$((mb / 4)) pids=""
        for i in 0 1 2 3; do
            if [ "$bench" = blk-write-4 ]; then
                dd if=/dev/zero of=/dev/vda bs=1M count=$quarter seek=$((i * quarter)) oflag=direct 2>>/tmp/dd.err &
            else
                dd if=/dev/vda of=/dev/null bs=1M count=$quarter skip=$((i * quarter)) iflag=direct 2>>/tmp/dd.err &
            fi
            pids="$pids $!"
        done
        rc=0
        for pid in $pids; do wait "$pid" || rc=1; done
        [ "$rc" = 0 ] ;;
    net-tx) dd if=/dev/zero bs=1M count="$mb" 2>/dev/null | nc 10.0.0.1 5001 ;;
    # nc writes what each read of its stdin gives; tcp-send writes 256 KiB.
    net-tx-big) tcp-send 10.0.0.1 5001 "$mb" ;;
    net-rx)
        # nc must not see EOF on its stdin (it would half-close the
        # connection and the host would stop sending): a FIFO held open.
        mkfifo /tmp/hold
        nc 10.0.0.1 5002 0<>/tmp/hold | wc -c >/tmp/received ;;
    *) echo "bench-init: unknown workload $bench"; false ;;
esac
rc=$?
read -r end _ </proc/uptime
irqs_after=$(virtio_irqs)
[ ! -s /tmp/received ] || extra=" bytes=$(cat /tmp/received)"
[ -z "$net_before" ] || extra="$extra$(counter_deltas "$net_before" "$(net_counters)")"
[ ! -s /tmp/dd.err ] || [ "$rc" = 0 ] || sed 's/^/bench-init: dd: /' /tmp/dd.err
echo "TANDEM-BENCH workload=$bench rc=$rc mb=$mb guest_s=$(awk "BEGIN { print $end - $start }")" \
     "guest_irqs=$((irqs_after - irqs_before))$extra"
# Firecracker has no ACPI power-off: its guests end it with a reset.
case " $(cat /proc/cmdline) " in *" tandem.end=reboot "*) reboot -f ;; esac
poweroff -f
