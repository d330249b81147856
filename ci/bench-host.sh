#!/bin/busybox sh
#! Sourced inside an emulated KVM host (busybox sh) by the host scripts that
#! ci/bench-boot.sh and ci/bench-io.sh write; never run on this machine.
#! bench_run starts one VMM against the nested test guest, reads its console
#! through a pipe, timestamps the guest's TANDEM-GUEST-UP marker as it
#! arrives, and prints one line per run:
#!   BENCH <label words> code=N marker_s=S guest_uptime_s=S exit_s=S hwm_kib=K [more]
#! marker_s and exit_s count from the VMM's launch on the emulated host's
#! /proc/uptime (10 ms steps); hwm_kib is the VMM's VmHWM (guest memory it
#! touched included), sampled twice a second. [more] are tandem's --stats
#! and "first KVM_RUN" numbers as key=value words (device counters as
#! NAME.kicks=…), and the words of every `TANDEM-BENCH …` console line the
#! guest printed. When the guest prints TANDEM-BENCH-START before a workload
#! and TANDEM-BENCH … after it, the VMM's KVM counters (debugfs, as the
#! emulated host's KVM counts them, for any VMM) are read at both lines and
#! their differences added as kvm_<counter>=N words. Console lines are echoed
#! as `C| <label>| …`, the VMM's stderr as `E| <label>| …`.

# A run still going after this many seconds is killed (code=137).
BENCH_RUN_LIMIT=${BENCH_RUN_LIMIT:-600}

# The nested guest's files are /guest for tandem and, bind-mounted, $QEMU_GUEST
# inside the root where QEMU runs: /hostroot, this machine's root, for its
# x86 QEMU (emulated-host.sh --share-root); in an arm64 host, the arm64
# folder ci/arm64-qemu-root.sh builds, seen through the same share, which the
# host script names before it calls bench_prepare_chroot:
#   BENCH_QEMU_ROOT=/hostroot<the path ci/arm64-qemu-root.sh prints>
QEMU_GUEST=/mnt
BENCH_QEMU_ROOT=${BENCH_QEMU_ROOT:-/hostroot}
CR=$(printf '\r')

# Makes /guest and /tmp visible at the same places inside the chroot; gives
# an arm64 QEMU root its own proc, sys and dev (/dev/kvm).
bench_prepare_chroot() {
    if [ ! -d /hostroot/proc/1 ]; then
        echo "bench: /hostroot is not mounted (emulated-host.sh --share-root)"
        return 1
    fi
    if [ "$BENCH_QEMU_ROOT" != /hostroot ]; then
        if [ ! -d "$BENCH_QEMU_ROOT/proc" ]; then
            echo "bench: no QEMU root at $BENCH_QEMU_ROOT (ci/arm64-qemu-root.sh)"
            return 1
        fi
        mount -t proc proc "$BENCH_QEMU_ROOT/proc" && mount -t sysfs sysfs "$BENCH_QEMU_ROOT/sys" &&
            mount -t devtmpfs devtmpfs "$BENCH_QEMU_ROOT/dev" || return 1
    fi
    mount -o bind /guest "$BENCH_QEMU_ROOT$QEMU_GUEST" && mount -o bind /tmp "$BENCH_QEMU_ROOT/tmp"
}

# Per-VM KVM counters read around a guest workload (kvm_vcpu_stat names,
# which differ per arch: arm64 has no PIO and counts no injections).
case $(uname -m) in
    aarch64) KVM_COUNTERS="exits mmio_exit_user mmio_exit_kernel wfi_exit_stat" ;;
    *) KVM_COUNTERS="exits io_exits mmio_exits irq_injections halt_exits" ;;
esac

bench_mount_debugfs() {
    [ -d /sys/kernel/debug/kvm ] || mount -t debugfs debugfs /sys/kernel/debug
}

# Reads PID's KVM counters into kvm_<counter>_<SUFFIX> ("none" if unreadable).
bench_kvm_snapshot() {
    dir=""
    for candidate in /sys/kernel/debug/kvm/"$1"-*; do [ ! -d "$candidate" ] || dir=$candidate; done
    for counter in $KVM_COUNTERS; do
        value=none
        [ -z "$dir" ] || [ ! -r "$dir/$counter" ] || read -r value <"$dir/$counter"
        eval "kvm_${counter}_$2=\$value"
    done
}

# " kvm_<counter>=END-START" words for the last workload.
bench_kvm_words() {
    for counter in $KVM_COUNTERS; do
        eval "start=\$kvm_${counter}_start end=\$kvm_${counter}_end"
        case "$start$end" in *none*) printf ' kvm_%s=none' "$counter" ;;
            *) printf ' kvm_%s=%s' "$counter" $((end - start)) ;; esac
    done
}

# Writes PID's VmHWM (KiB) to /tmp/bench.hwm every half second while it runs.
bench_sample_hwm() {
    while [ -d "/proc/$1" ]; do
        while read -r key value _; do
            [ "$key" != VmHWM: ] || echo "$value" >/tmp/bench.hwm
        done <"/proc/$1/status"
        sleep 0.5
    done 2>/dev/null
}

# tandem's stderr as key=value words: the tandem-stats lines (device lines
# as NAME.key=value) and the first-KVM_RUN time.
bench_tandem_words() {
    awk '/^tandem-stats: device=/ { split($2, d, "=")
                                    for (i = 3; i <= NF; i++) printf " %s.%s", d[2], $i; next }
         /^tandem-stats: /        { for (i = 2; i <= NF; i++) printf " %s", $i }
         /first KVM_RUN/          { for (i = 1; i < NF; i++) if ($i == "KVM_RUN") printf " first_kvm_run_ms=%s", $(i + 1) }' "$1"
}

# bench_run "LABEL WORDS" COMMAND...: one VMM run, reported as above.
bench_run() {
    label=$1
    shift
    rm -f /tmp/bench.console /tmp/bench.hwm
    mkfifo /tmp/bench.console
    read -r t0 _ </proc/uptime
    "$@" </dev/null >/tmp/bench.console 2>/tmp/bench.stderr &
    pid=$!
    bench_sample_hwm "$pid" &
    sampler=$!
    (trap 'exit 0' TERM; sleep "$BENCH_RUN_LIMIT" & wait $!; echo "bench: run over ${BENCH_RUN_LIMIT}s, killed"; kill -9 "$pid") &
    watchdog=$!
    mark="" up="" extra=""
    while IFS= read -r line; do
        line=${line%"$CR"}
        case $line in
            *TANDEM-GUEST-UP\ uptime=*)
                read -r mark _ </proc/uptime
                up=${line#*uptime=}
                up=${up%% *} ;;
            TANDEM-BENCH-START) bench_kvm_snapshot "$pid" start ;;
            TANDEM-BENCH\ *)
                bench_kvm_snapshot "$pid" end
                extra="$extra ${line#TANDEM-BENCH }$(bench_kvm_words)" ;;
        esac
        echo "C| $label| $line"
    done </tmp/bench.console
    wait "$pid"
    code=$?
    read -r t1 _ </proc/uptime
    kill "$sampler" "$watchdog" 2>/dev/null
    wait "$sampler" "$watchdog" 2>/dev/null
    sed "s/^/E| $label| /" /tmp/bench.stderr
    echo "BENCH $label code=$code" \
        "marker_s=$(awk "BEGIN { if (\"$mark\" != \"\") print $mark - $t0; else print \"none\" }")" \
        "guest_uptime_s=${up:-none} exit_s=$(awk "BEGIN { print $t1 - $t0 }")" \
        "hwm_kib=$(cat /tmp/bench.hwm 2>/dev/null || echo none)$(bench_tandem_words /tmp/bench.stderr)$extra"
}

# QEMU's machine: microvm with the devices tandem has too (UART, IOAPIC,
# PIT, ACPI). No 8259 PIC: a PVH-entered guest never programs it (tandem
# masks its own). No CMOS RTC: with it (microvm's default) Debian's guest
# spent 6.8 s of its boot in rtc_cmos ("broken or not accessible").
BENCH_QEMU_MACHINE=${BENCH_QEMU_MACHINE:-microvm,pic=off,rtc=off}

# QEMU ($BENCH_QEMU_MACHINE) with KVM, the nested guest's kernel (a file in
# /guest), initramfs, vCPUs, memory, command line; more QEMU options may
# follow. For bench_run only: it execs, so that bench_run's PID is QEMU's.
bench_qemu_microvm() {
    kernel=$1 initrd=$2 cpus=$3 memory=$4 cmdline=$5
    shift 5
    exec chroot "$BENCH_QEMU_ROOT" qemu-system-x86_64 -M "$BENCH_QEMU_MACHINE" -accel kvm -cpu host \
        -smp "$cpus" -m "$memory" -nodefaults -no-user-config -display none \
        -serial stdio -monitor none -no-reboot \
        -kernel "$QEMU_GUEST/$kernel" -initrd "$QEMU_GUEST/$initrd" -append "$cmdline" "$@"
}

# QEMU's arm64 machine: virt with the host's GIC (as tandem takes the
# in-kernel VGIC the host has).
BENCH_QEMU_VIRT_MACHINE=${BENCH_QEMU_VIRT_MACHINE:-virt,gic-version=host}

# The arm64 peer of bench_qemu_microvm, same arguments: QEMU from the arm64
# root ($BENCH_QEMU_ROOT, prepared by bench_prepare_chroot) with KVM on
# $BENCH_QEMU_VIRT_MACHINE. Its UART is a PL011, so console=ttyS0 (tandem's
# 8250) in the command line becomes console=ttyAMA0. For bench_run only: it
# execs.
bench_qemu_virt_arm64() {
    kernel=$1 initrd=$2 cpus=$3 memory=$4 cmdline=
    for word in $5; do
        [ "$word" != console=ttyS0 ] || word=console=ttyAMA0
        cmdline="${cmdline:+$cmdline }$word"
    done
    shift 5
    exec chroot "$BENCH_QEMU_ROOT" /usr/bin/qemu-system-aarch64 -M "$BENCH_QEMU_VIRT_MACHINE" \
        -accel kvm -cpu host -smp "$cpus" -m "$memory" -nodefaults -no-user-config \
        -display none -serial stdio -monitor none -no-reboot \
        -kernel "$QEMU_GUEST/$kernel" -initrd "$QEMU_GUEST/$initrd" -append "$cmdline" "$@"
}

# Firecracker (/bin/firecracker, a static build of ci/peer-firecracker.sh)
# from a config file, without an API socket: the nested guest's kernel (a
# file in /guest; an ELF vmlinux), initramfs, vCPUs, memory (512M),
# command line, then `disk` and/or `net` for /tmp/disk.img and the TAP
# bench0. Its log goes to /tmp/firecracker.log, not among the console
# lines. Firecracker has no ACPI power-off: the guest ends it by
# rebooting, through the i8042 (reboot=k, as Firecracker's own default
# command line says; the ACPI reset Linux tries first hangs there). For
# bench_run only: it execs.
bench_firecracker() {
    kernel=$1 initrd=$2 cpus=$3 memory=$4 cmdline=$5
    shift 5
    drives="" nets=""
    for device in "$@"; do
        case $device in
            disk) drives='{"drive_id": "disk0", "path_on_host": "/tmp/disk.img", "is_root_device": false, "is_read_only": false}' ;;
            net) nets='{"iface_id": "net0", "host_dev_name": "bench0"}' ;;
        esac
    done
    cat >/tmp/firecracker.json <<JSON
{
  "boot-source": {"kernel_image_path": "/guest/$kernel", "initrd_path": "/guest/$initrd", "boot_args": "$cmdline reboot=k"},
  "machine-config": {"vcpu_count": $cpus, "mem_size_mib": ${memory%M}},
  "drives": [$drives],
  "network-interfaces": [$nets]
}
JSON
    : >/tmp/firecracker.log
    exec /bin/firecracker --no-api --config-file /tmp/firecracker.json --log-path /tmp/firecracker.log
}

# The same machine with its PCIe host bridge (ECAM in ACPI's MCFG), for
# virtio-pci devices. bench_run runs it in a subshell: nothing leaks.
bench_qemu_pci() {
    BENCH_QEMU_MACHINE=$BENCH_QEMU_MACHINE,pcie=on
    bench_qemu_microvm "$@"
}
