#!/bin/sh
# shellcheck shell=dash
#! The virtio scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/virtio-e2e.sh). tandem's base
#! arguments (kernel, initrd, cpus, memory) are this script's arguments, else
#! those in /run.args (emulated-host.sh --run); $TANDEM is the binary
#! (default /bin/tandem). Two tandem runs against the guest's checks (ci/guest-checks.d):
#!   1. serial console; vda (96 MiB, read-write), vdb (16 MiB random,
#!      readonly=on), virtio-net on tap0, virtio-rng; guest checks blk, blk-ro,
#!      rng, net. This script serves the host end of net, then checks the
#!      disk files: blk-file, blk-ro-file.
#!   2. virtio console (hvc0) and vda; guest checks console, crash. On
#!      CRASH-READY it SIGKILLs tandem and checks every region the guest
#!      fsync'd (O_DIRECT, page cache, unaligned): crash.
#! With --transport pci in tandem's arguments, run 1 also checks pci (its
#! devices on PCI with MSI-X) and run 2 does with pci=nomsi (INTx); vda
#! then runs on io_engine=async (io_uring) in both runs, so the e2e rows
#! cover both disk engines, crash consistency included; check blk-engine
#! (host) sees tandem's ring.
#! Shared helpers: ci/host-lib.sh, at /host-lib.sh beside this script.
#! Prints CHECK <name> PASS|FAIL <detail> for its own checks; exits 0 when
#! run 1 ended with tandem exiting 0 and run 2 reached CRASH-READY.

RUN_TIMEOUT=300
VDA_ID=tandem-vda
GUEST_CMDLINE="quiet panic=-1 tandem.mode=checks"
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=virtio-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

# With `--transport pci` among tandem's arguments both runs also check PCI:
# run 1's four devices interrupt through MSI-X, run 2 boots with pci=nomsi
# and its two devices work through INTx (guest check pci).
PCI_RUN1="" PCI_RUN2="" VDA_ENGINE=sync
case " $* $(cat /run.args 2>/dev/null) " in
    *" --transport pci "*)
        PCI_RUN1=",pci tandem.pci_functions=4"
        PCI_RUN2=",pci tandem.pci_functions=2 pci=nomsi"
        VDA_ENGINE=async ;;
esac

# The host end of net: address tap0 once tandem created it, then fetch the
# guest's up.bin and publish the sum this side computed.
serve_net() {
    net_tap_up && net_fetch_up /tmp/run1.out
}

# Check blk-engine: the running tandem holds an io_uring ring (vda's
# engine), seen among its open files.
check_uring() {
    if wait_until 30 sh -c "ls -l /proc/$TANDEM_PID/fd 2>/dev/null | grep -q 'io_uring'"; then
        check_result blk-engine PASS "vda on io_engine=async: tandem holds an io_uring ring"
    else
        check_result blk-engine FAIL "vda on io_engine=async, but tandem (pid $TANDEM_PID) holds no io_uring ring"
    fi
}

run_devices() {
    local vdb_sum guest_vda file_vda
    dd if=/dev/zero of=/tmp/vda.img bs=1M count=0 seek=96 2>/dev/null
    dd if=/dev/urandom of=/tmp/vdb.img bs=1M count=16 2>/dev/null
    vdb_sum=$(sha_file /tmp/vdb.img)
    net_files

    start_tandem /tmp/run1.out "$@" --stats \
        --disk "path=/tmp/vda.img,id=$VDA_ID,io_engine=$VDA_ENGINE" --disk path=/tmp/vdb.img,readonly=on \
        --net "tap=tap0,mac=$GUEST_MAC" --rng \
        --cmdline "console=ttyS0 $GUEST_CMDLINE tandem.checks=blk,blk-ro,rng,net$PCI_RUN1 tandem.vda_id=$VDA_ID tandem.vdb_sum=$vdb_sum tandem.net_mac=$GUEST_MAC"
    [ "$VDA_ENGINE" = sync ] || check_uring
    serve_net
    finish_tandem "$RUN_TIMEOUT"
    RUN1_EXIT=$TANDEM_EXIT
    kill "$HTTPD_PID"

    guest_vda=$(marker_sum "CHECK-SUM vda" /tmp/run1.out)
    file_vda=$(sha_range /tmp/vda.img 0 64)
    if [ -n "$guest_vda" ] && [ "$guest_vda" = "$file_vda" ]; then
        check_result blk-file PASS "first 64 MiB of the disk file: sha256 $file_vda, as the guest wrote"
    else
        check_result blk-file FAIL "first 64 MiB of the disk file: sha256 $file_vda, guest wrote '${guest_vda:-nothing}'"
    fi
    if [ "$(sha_file /tmp/vdb.img)" = "$vdb_sum" ]; then
        check_result blk-ro-file PASS "read-only disk file unchanged, sha256 $vdb_sum"
    else
        check_result blk-ro-file FAIL "read-only disk file changed: sha256 $(sha_file /tmp/vdb.img), was $vdb_sum"
    fi
}

run_console_crash() {
    local ready=0
    start_tandem /tmp/run2.out "$@" --disk path=/tmp/vda.img,io_engine=$VDA_ENGINE --console virtio \
        --cmdline "console=hvc0 $GUEST_CMDLINE tandem.checks=console,crash$PCI_RUN2"
    if wait_until "$RUN_TIMEOUT" grep -q CRASH-READY /tmp/run2.out; then
        kill -9 "$TANDEM_PID"
        ready=1
        note "CRASH-READY seen: tandem SIGKILLed"
    fi
    finish_tandem 30
    RUN2_EXIT=$TANDEM_EXIT
    if [ "$ready" = 1 ] && crash_check_regions /tmp/run2.out /tmp/vda.img; then
        check_result crash PASS "after SIGKILL, $CRASH_REGIONS fsync'd regions $CRASH_DETAIL"
    else
        check_result crash FAIL "after tandem ended ($RUN2_EXIT, SIGKILLed: $ready): $CRASH_DETAIL"
    fi
    [ "$ready" = 1 ]
}

TANDEM=${TANDEM:-/bin/tandem}
[ $# -gt 0 ] || eval "set -- $(cat /run.args)"
load_tun
run_devices "$@"
run_console_crash "$@"
crash_ready=$?
echo "virtio-host: run 1 exit $RUN1_EXIT, run 2 exit $RUN2_EXIT (SIGKILLed: $((crash_ready == 0)))"
[ "$RUN1_EXIT" = 0 ] && [ "$crash_ready" = 0 ]
