#!/bin/sh
# shellcheck shell=dash
#! The vsock benchmark's emulated-host side (ci/bench-vsock.sh), run by
#! busybox sh inside one emulated KVM host. One tandem run: the test guest
#! (1 vCPU, 512 MiB) with --vsock cid=3,uds=/tmp/v.sock and --net
#! tap=bench0, its init ci/bench-vsock-guest.sh (listeners on vsock port
#! 7000 and TCP 10.0.0.2:7001). This host is 10.0.0.1/24 on bench0 (the
#! only addresses used, both inside the emulated host). For each run it
#! opens one connection per workload, in turn, with tandem-vsock-e2e:
#!   vsock-g2h  guest to host over vsock (`CONNECT 7000` on /tmp/v.sock)
#!   tcp-g2h    guest to host over TCP through virtio-net
#!   vsock-h2g, tcp-h2g   the other way
#! The same program, payload (MIB MiB, generated and checked on arrival)
#! and timing at both: the host end's time from the connection's first
#! byte to the receiver's end of it (the accepting end closes only once it
#! has read everything). One line per workload and run:
#!   BENCH workload=W run=N ok=yes|no mib=MIB ms=T
#! Run 0 is a warm-up. Settings from the kernel command line of the
#! emulated host (emulated-host.sh --host-args): tandem.bench_runs,
#! tandem.bench_mib. Shared helpers: ci/host-lib.sh at /host-lib.sh.

setting() { sed -n "s/.*tandem\.$1=\([0-9]*\).*/\1/p" /proc/cmdline; }
RUNS=$(setting bench_runs)
MIB=$(setting bench_mib)
RUNS=${RUNS:-3} MIB=${MIB:-64}
WORKLOADS="vsock-g2h tcp-g2h vsock-h2g tcp-h2g"
PROGRAM=/bin/tandem-vsock-e2e
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=bench-vsock
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"
# After host-lib.sh, which sets the defaults; used by its net_tap_up.
NET_TAP=bench0 HOST_IP=10.0.0.1

# One workload: BENCH line from the host end's VSOCK-CONN line.
one() {
    local workload=$1 run=$2 sizes out=/tmp/one.out line
    case $workload in
        *-g2h) sizes="0,${MIB}M" ;;
        *-h2g) sizes="${MIB}M,0" ;;
    esac
    case $workload in
        vsock-*) "$PROGRAM" connect-unix /tmp/v.sock 7000 1 "$sizes" >$out 2>&1 ;;
        tcp-*) "$PROGRAM" connect-tcp 10.0.0.2:7001 1 "$sizes" >$out 2>&1 ;;
    esac
    line=$(grep VSOCK-CONN $out)
    echo "BENCH workload=$workload run=$run ok=$(echo "$line" | sed -n 's/.*match=\([a-z]*\).*/\1/p')" \
        "mib=$MIB ms=$(echo "$line" | sed -n 's/.* ms=\([0-9]*\) .*/\1/p')"
    grep VSOCK-ERROR $out
}

TANDEM=${TANDEM:-/bin/tandem}
load_tun
rm -f /tmp/v.sock
start_tandem /tmp/run.out run --kernel /guest/vmlinuz --initrd /guest/bench-initramfs.cpio.gz \
    --cpus 1 --memory 512M --vsock cid=3,uds=/tmp/v.sock --net tap=$NET_TAP \
    --cmdline "console=ttyS0 quiet panic=-1 rdinit=/bench-init tandem.bench_conns=$((2 * (RUNS + 1)))"
net_tap_up || exit 1
if ! wait_until 300 grep -q BENCH-GUEST-READY /tmp/run.out; then
    note "the guest never said BENCH-GUEST-READY"
    finish_tandem 10
    exit 1
fi
for run in $(seq 0 "$RUNS"); do
    for workload in $WORKLOADS; do one "$workload" "$run"; done
done
finish_tandem 120
[ "$TANDEM_EXIT" = 0 ]
