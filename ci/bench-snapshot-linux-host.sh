#!/bin/sh
# shellcheck shell=dash
#! The snapshot benchmark's emulated-host half (ci/bench-snapshot-linux.sh
#! runs it with emulated-host.sh --host-script; never run on this machine).
#! For each run, for each VMM (/bin/firecracker, /bin/tandem), through the
#! same client (`tandem api`) and the same JSON: the Debian test guest (2
#! vCPUs, 512 MiB, serial console, virtio-blk on a disk file of its own,
#! the ELF vmlinux both VMMs boot) runs the snapshot-ticks check; after 5
#! ticks it is paused and saved (PUT /snapshot/create, timed), the VMM is
#! SIGKILLed, a new process of the same VMM loads it (PUT /snapshot/load
#! with resume_vm, timed) and the guest's next tick is timed too; it must be
#! the saved tick + 1. Prints one line per run and VMM:
#!   BENCH vmm=NAME run=N create_ms=… load_ms=… load_to_tick_ms=…
#!         state_bytes=… mem_alloc_kib=… next_tick_ok=yes|no io=…
#! (io: the restored guest's first tick's I/O, "ok" when its disk write
#! worked — the same devices under both VMMs).
#! Times come from the emulated host's /proc/uptime (10 ms steps).
#! Runs: /bench-runs holds the count (default 3); run 0, a warm-up, is
#! printed too and left out of the summary.

DISK_MIB=4
SOCK=/tmp/bench.sock
TANDEM=/bin/tandem
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=bench-snapshot
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

# The emulated host's uptime in ms (10 ms steps).
now_ms() {
    local up
    read -r up _ </proc/uptime
    # "1$frac - 100": a fraction like 08 is not read as octal.
    echo $((${up%.*} * 1000 + 10 * (1${up#*.} - 100)))
}

# The last SNAP-TICK number in FILE (0 before the first).
last_tick() {
    local n
    n=$(grep -a 'SNAP-TICK ' "$1" | tail -n 1 | sed -n 's/.*SNAP-TICK \([0-9]*\).*/\1/p')
    echo "${n:-0}"
}
# shellcheck disable=SC2317 # run by wait_until
tick_after() { [ "$(last_tick "$1")" -gt "$2" ]; }

# Starts VMM (firecracker or tandem) on $SOCK with its output in OUT.
start_vmm() {
    local vmm=$1 out=$2
    rm -f "$SOCK"
    : >"$out"
    case $vmm in
        firecracker) /bin/firecracker --api-sock "$SOCK" --id bench >"$out" 2>&1 </dev/null & ;;
        tandem) "$TANDEM" --api-sock "$SOCK" --id bench >"$out" 2>&1 </dev/null & ;;
    esac
    TANDEM_PID=$!
    wait_until 30 [ -S "$SOCK" ]
}

stop_vmm() {
    kill -9 "$TANDEM_PID" 2>/dev/null
    wait "$TANDEM_PID" 2>/dev/null
}

# One run of VMM: boot, tick, save, kill, load, tick; prints its BENCH line.
bench_one() {
    local vmm=$1 run=$2 args disk=/tmp/disk-$1.img out=/tmp/$1-first.out saved t0 t1 t2 t3 t4 next io ok=no
    args="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=snapshot-ticks"
    dd if=/dev/zero of="$disk" bs=1M count="$DISK_MIB" 2>/dev/null
    rm -f /tmp/bench.state /tmp/bench.mem
    if ! start_vmm "$vmm" "$out" ||
        ! api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 512}' ||
        ! api PUT /boot-source "{\"kernel_image_path\": \"/guest/vmlinux\", \"initrd_path\": \"/guest/initramfs.cpio.gz\", \"boot_args\": \"$args\"}" ||
        ! api PUT /drives/vda "{\"drive_id\": \"vda\", \"path_on_host\": \"$disk\", \"is_root_device\": false, \"is_read_only\": false}" ||
        ! api PUT /actions '{"action_type": "InstanceStart"}' ||
        ! wait_until 600 tick_after "$out" 4; then
        echo "BENCH vmm=$vmm run=$run failed=boot $(tr '\n' ' ' </tmp/api.answer) $(tail -n 3 "$out" | tr '\n' ' ')"
        stop_vmm
        return
    fi
    api PATCH /vm '{"state": "Paused"}'
    sleep 1 # the last tick line on its way to the output file
    saved=$(last_tick "$out")
    t0=$(now_ms)
    if ! api PUT /snapshot/create '{"snapshot_type": "Full", "snapshot_path": "/tmp/bench.state", "mem_file_path": "/tmp/bench.mem"}'; then
        echo "BENCH vmm=$vmm run=$run failed=create $(tr '\n' ' ' </tmp/api.answer)"
        stop_vmm
        return
    fi
    t1=$(now_ms)
    stop_vmm
    out=/tmp/$vmm-restored.out
    start_vmm "$vmm" "$out"
    t2=$(now_ms)
    if ! api PUT /snapshot/load '{"snapshot_path": "/tmp/bench.state", "mem_backend": {"backend_type": "File", "backend_path": "/tmp/bench.mem"}, "resume_vm": true}'; then
        echo "BENCH vmm=$vmm run=$run failed=load $(tr '\n' ' ' </tmp/api.answer)"
        stop_vmm
        return
    fi
    t3=$(now_ms)
    wait_until 60 grep -aq 'SNAP-TICK ' "$out"
    t4=$(now_ms)
    next=$(grep -a 'SNAP-TICK ' "$out" | head -n 1 | sed -n 's/.*SNAP-TICK \([0-9]*\).*/\1/p')
    # The disk worked before and after (io=ok: its write to /dev/vda).
    io=$(grep -a 'SNAP-TICK ' "$out" | head -n 1 | sed -n 's/.* io=\([a-z,]*\).*/\1/p')
    [ "$next" = $((saved + 1)) ] && ok=yes
    echo "BENCH vmm=$vmm run=$run create_ms=$((t1 - t0)) load_ms=$((t3 - t2)) load_to_tick_ms=$((t4 - t2)) state_bytes=$(wc -c </tmp/bench.state) mem_alloc_kib=$(du -k /tmp/bench.mem | cut -f1) saved_tick=$saved next_tick=${next:-none} next_tick_ok=$ok io=${io:-none}"
    stop_vmm
}

main() {
    local runs=3 run vmm
    [ ! -s /bench-runs ] || read -r runs </bench-runs
    for run in $(seq 0 "$runs"); do
        for vmm in firecracker tandem; do
            bench_one "$vmm" "$run"
        done
    done
    cat /tmp/notes 2>/dev/null | tail -n 20
    echo "bench-snapshot: done"
}

main "$@"
