#!/usr/bin/env bash
#! virtio I/O benchmark; results go to docs/benchmarks.md. Inside one
#! emulated KVM host (QEMU TCG: x86 with nested SVM, or arm64 with EL2),
#! the VMMs boot the same guest kernel and initramfs with the same disk file
#! (tmpfs) and the same persistent TAP (10.0.0.1/24 on the host side); each
#! boot runs one guest workload (ci/bench-io-guest.sh): virtio-blk
#! sequential write / read with O_DIRECT, bs=1M; TCP over virtio-net
#! guest→host and host→guest with busybox nc, and guest→host with 256 KiB
#! writes (net-tx-big, ci/initramfs/tcp-send.c, opt-in); idle (boot + 1 s)
#! as the baseline. The VMMs: tandem with virtio-mmio (`tandem`) and virtio-pci
#! (`tandem-pci`, MSI-X), and `tandem-async`: `tandem` with its disk on the
#! io_uring engine (`io_engine=async`, docs/devices.md); QEMU with KVM and
#! userspace virtio (no vhost),
#! default cache and aio: on x86, virtio-mmio on microvm (`qemu-microvm`)
#! and modern virtio-pci on microvm's PCIe host (`qemu-pci`); on arm64, the
#! same on virt (`qemu-virt`, `qemu-virt-pci`), run from the arm64 root
#! ci/arm64-qemu-root.sh builds; on x86 also Firecracker v1.16.1
#! (`firecracker`, virtio-mmio; ci/peer-firecracker.sh --static). Runs
#! interleave the VMMs; run 0 (idle only) is a warm-up. Reported per
#! workload: guest-timed throughput, the emulated host's KVM counters over
#! the workload (exits, userspace I/O and MMIO exits, interrupt injections)
#! and the interrupts the guest took, for every VMM; for tandem also its own
#! --stats (userspace exits, kicks, interrupts), minus the idle runs'
#! median, per second and per MB.
#! Usage: ci/bench-io.sh [options]
#!   --arch ARCH       x86_64 (default) or aarch64
#!   --gic 2|3         aarch64: the emulated host's GIC (default 3, with an
#!                     ITS; 2 is Raspberry Pi-like: MSIs through a GICv2m frame)
#!   --runs N          runs per workload and VMM (default 3)
#!   --blk-mb N        MiB written and read (default 256)
#!   --net-mb N        MiB sent each way (default 64)
#!   --workloads "W…"  subset of: idle blk-write blk-read net-tx net-rx, or
#!                     blk-write-4 blk-read-4 (four dd at once), net-tx-big,
#!                     info (default: all but those five)
#!   --vmms "V…"       x86: subset of tandem tandem-pci tandem-async
#!                     qemu-microvm qemu-pci firecracker (default: tandem
#!                     qemu-microvm); aarch64: of tandem tandem-pci
#!                     tandem-async qemu-virt qemu-virt-pci (default: tandem
#!                     tandem-pci)
#!   --suffix NAME     results in target/bench/io-ARCH-NAME.txt
#!   --summary FILE    only print the tables for the raw lines in FILE
#!   --wait-quiet MIN  wait up to MIN minutes for other QEMUs to end (default 10)
#!   --no-build        use the existing static tandem
#!   --baseline FILE   another static tandem (say, built from an older commit) run
#!                     as VMMs `base` (virtio-mmio) and `base-pci`, for A/B
#!                     comparisons of a change: tandem/base, tandem-pci/base-pci
#! Prints the raw lines and a summary; keeps both in target/bench/io-ARCH.txt.
set -euo pipefail
LOG_PREFIX=bench-io
. "$(dirname "$0")/lib.sh"
. "$ROOT/ci/bench-lib.sh"

RUNS=3 BLK_MB=256 NET_MB=64 WORKLOADS="idle blk-write blk-read net-tx net-rx" WAIT_QUIET=10 BUILD=1
ARCH=x86_64 GIC=3 VMMS="" SUFFIX="" SUMMARY_OF="" QEMU_ROOT="" BASELINE=""
CPUS=1 MEMORY=512M
GUEST_CMDLINE="console=ttyS0 quiet panic=-1 rdinit=/bench-init"
OUT_DIR=$ROOT/target/bench

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --arch) ARCH=$2; shift ;;
            --gic) GIC=$2; shift ;;
            --runs) RUNS=$2; shift ;;
            --blk-mb) BLK_MB=$2; shift ;;
            --net-mb) NET_MB=$2; shift ;;
            --workloads) WORKLOADS=$2; shift ;;
            --vmms) VMMS=$2; shift ;;
            --suffix) SUFFIX=-$2; shift ;;
            --summary) SUMMARY_OF=$2; shift ;;
            --wait-quiet) WAIT_QUIET=$2; shift ;;
            --no-build) BUILD=0 ;;
            --baseline) BASELINE=$2; shift ;;
            -h|--help) sed -n '2,$s/^#! \{0,1\}//p' "$0"; exit 0 ;;
            *) die "unknown argument $1 (--help)" ;;
        esac
        shift
    done
    check_arch "$ARCH"
    local vmm known="tandem tandem-pci tandem-async qemu-microvm qemu-pci firecracker"
    if [ "$ARCH" = aarch64 ]; then
        KERNEL=vmlinuz VMMS=${VMMS:-tandem tandem-pci} known="tandem tandem-pci tandem-async qemu-virt qemu-virt-pci"
    else
        KERNEL=vmlinux VMMS=${VMMS:-tandem qemu-microvm}
    fi
    [ -z "$BASELINE" ] || known="$known base base-pci"
    for vmm in $VMMS; do
        case " $known " in *" $vmm "*) ;; *) die "--arch $ARCH runs $known, not $vmm" ;; esac
    done
}

# The test guest's initramfs with /bench-init and /bin/tcp-send (net-tx-big's
# sender, built static for ARCH) added: a second gzip'd cpio appended, which
# the kernel unpacks over the first.
build_bench_initramfs() {
    local guest=$1 out=$2 stage=$OUT_DIR/io-overlay-$ARCH$SUFFIX cc=gcc
    [ "$ARCH" = x86_64 ] || cc=aarch64-linux-gnu-gcc
    command -v "$cc" >/dev/null || die "$cc not installed (ci/setup-host.sh)"
    rm -rf "$stage"
    mkdir -p "$stage/bin"
    cp "$ROOT/ci/bench-io-guest.sh" "$stage/bench-init"
    chmod 755 "$stage/bench-init"
    "$cc" -static -O2 -Wall -Werror -o "$stage/bin/tcp-send" "$ROOT/ci/initramfs/tcp-send.c" ||
        die "$cc could not build ci/initramfs/tcp-send.c (static libc: ci/setup-host.sh)"
    cp "$guest/initramfs.cpio.gz" "$out.tmp"
    # Not bin itself: it exists in the main archive.
    (cd "$stage" && printf '%s\n' bench-init bin/tcp-send | cpio --quiet -o -H newc --owner=0:0) |
        gzip -9 -n >>"$out.tmp"
    bench_padded_initramfs "$out.tmp" "$out"
    rm -f "$out.tmp"
}

write_io_host_script() {
    cat >"$1" <<EOF
. /bench/host-lib.sh
${QEMU_ROOT:+BENCH_QEMU_ROOT=/hostroot$QEMU_ROOT}
case "$VMMS" in *qemu*) bench_prepare_chroot || exit 1 ;; esac
bench_mount_debugfs
[ -c /dev/net/tun ] || insmod /lib/modules/extra/tun.ko || exit 1
tunctl -t bench0 >/dev/null && ip addr add 10.0.0.1/24 dev bench0 && ip link set bench0 up || exit 1
dd if=/dev/zero of=/tmp/disk.img bs=1M count=$BLK_MB 2>/dev/null || exit 1
mkfifo /tmp/hold /tmp/net.pipe
exec 3<>/tmp/hold

# The host end of a network workload, in the background, and a line every
# 30 s with the bytes through the TAP (to tell a stall from slowness).
listen() {
    nc_pid="" helper_pid="" progress_pid=""
    case \$1 in
        net-tx|net-tx-big)
            wc -c </tmp/net.pipe >/tmp/host-received & helper_pid=\$!
            nc -l -p 5001 <&3 >/tmp/net.pipe & nc_pid=\$! ;;
        net-rx)
            dd if=/dev/zero bs=1M count=$NET_MB 2>/dev/null >/tmp/net.pipe & helper_pid=\$!
            nc -l -p 5002 </tmp/net.pipe >/dev/null & nc_pid=\$! ;;
        *) return ;;
    esac
    (
        stats=/sys/class/net/bench0/statistics
        while sleep 30; do
            read -r rx <\$stats/rx_bytes; read -r tx <\$stats/tx_bytes
            echo "bench-host: bench0 rx_bytes=\$rx tx_bytes=\$tx"
        done
    ) & progress_pid=\$!
}

# Stops what listen started if the guest did not finish with it; says how
# much the host received (the count survives a stall).
unlisten() {
    [ -z "\$nc_pid" ] || kill \$nc_pid \$progress_pid 2>/dev/null
    case \$workload in net-rx) kill \$helper_pid 2>/dev/null ;; esac
    for pid in \$nc_pid \$helper_pid \$progress_pid; do wait \$pid 2>/dev/null; done
    if [ -s /tmp/host-received ]; then echo "bench-host: host received \$(cat /tmp/host-received) bytes"; fi
    rm -f /tmp/host-received
}

one() {
    vmm=\$1 workload=\$2 run=\$3 mb=$BLK_MB
    case \$workload in net-*) mb=$NET_MB ;; esac
    cmdline="$GUEST_CMDLINE tandem.bench=\$workload tandem.bench_mb=\$mb"
    label="bench=io vmm=\$vmm workload=\$workload run=\$run"
    listen \$workload
    case \$vmm in
        tandem|tandem-pci|tandem-async|base|base-pci)
            transport=mmio binary=/bin/tandem disk=path=/tmp/disk.img
            case \$vmm in *-pci) transport=pci ;; esac
            case \$vmm in *-async) disk=\$disk,io_engine=async ;; esac
            case \$vmm in base*) binary=/bin/tandem-base ;; esac
            bench_run "\$label" \$binary run --kernel /guest/$KERNEL \\
                --initrd /guest/bench-initramfs.cpio.gz --cpus $CPUS --memory $MEMORY \\
                --cmdline "\$cmdline" --transport \$transport --disk \$disk \\
                --net tap=bench0 --stats --log-level info ;;
        qemu-microvm) bench_run "\$label" bench_qemu_microvm vmlinux bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "\$cmdline" -global virtio-mmio.force-legacy=false \\
                    -drive id=disk0,file=/tmp/disk.img,format=raw,if=none \\
                    -device virtio-blk-device,drive=disk0 \\
                    -netdev tap,id=net0,ifname=bench0,script=no,downscript=no \\
                    -device virtio-net-device,netdev=net0 ;;
        qemu-pci) bench_run "\$label" bench_qemu_pci vmlinux bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "\$cmdline" \\
                    -drive id=disk0,file=/tmp/disk.img,format=raw,if=none \\
                    -device virtio-blk-pci,drive=disk0,disable-legacy=on \\
                    -netdev tap,id=net0,ifname=bench0,script=no,downscript=no \\
                    -device virtio-net-pci,netdev=net0,disable-legacy=on ;;
        # virt's own virtio-mmio slots, and its PCIe host bridge. No
        # option ROM for the NIC: the arm64 root has none, and nothing runs
        # one on a direct kernel boot.
        qemu-virt) bench_run "\$label" bench_qemu_virt_arm64 vmlinuz bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "\$cmdline" -global virtio-mmio.force-legacy=false \\
                    -drive id=disk0,file=/tmp/disk.img,format=raw,if=none \\
                    -device virtio-blk-device,drive=disk0 \\
                    -netdev tap,id=net0,ifname=bench0,script=no,downscript=no \\
                    -device virtio-net-device,netdev=net0 ;;
        qemu-virt-pci) bench_run "\$label" bench_qemu_virt_arm64 vmlinuz bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "\$cmdline" \\
                    -drive id=disk0,file=/tmp/disk.img,format=raw,if=none \\
                    -device virtio-blk-pci,drive=disk0,disable-legacy=on \\
                    -netdev tap,id=net0,ifname=bench0,script=no,downscript=no \\
                    -device virtio-net-pci,netdev=net0,disable-legacy=on,romfile= ;;
        firecracker) bench_run "\$label" bench_firecracker vmlinux bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "\$cmdline tandem.end=reboot" disk net ;;
    esac
    unlisten
}

for vmm in $VMMS; do one \$vmm idle 0; done
for run in \$(seq 1 $RUNS); do
    for workload in $WORKLOADS; do
        for vmm in $VMMS; do one \$vmm \$workload \$run; done
    done
done
EOF
}

run_emulated() {
    # Files named per run, so that runs side by side keep their own.
    local out=$1 guest script=$OUT_DIR/io-host-script-$ARCH$SUFFIX.sh name=bench-io-$ARCH$SUFFIX
    local initrd=$OUT_DIR/io-initramfs-$ARCH$SUFFIX.cpio.gz boots status=0 host_args=()
    [ "$ARCH" = x86_64 ] || host_args=(--gic "$GIC")
    command -v "$(qemu_binary "$ARCH")" >/dev/null || skip_or_fail "$(qemu_binary "$ARCH") not installed (ci/setup-host.sh)"
    guest=$("$ROOT/ci/guest-assets.sh" "$ARCH" | tail -n 1)
    build_bench_initramfs "$guest" "$initrd"
    case $VMMS in *qemu-virt*) QEMU_ROOT=$("$ROOT/ci/arm64-qemu-root.sh" | tail -n 1) ;; esac
    write_io_host_script "$script"
    case $VMMS in *qemu*) host_args+=(--share-root) ;; esac
    [ -z "$BASELINE" ] || host_args+=(--add "$BASELINE:/bin/tandem-base")
    case $VMMS in *firecracker*) host_args+=(--add "$("$ROOT/ci/peer-firecracker.sh" --static | tail -n 1):/bin/firecracker") ;; esac
    boots=$(($(wc -w <<<"$VMMS") * (1 + RUNS * $(wc -w <<<"$WORKLOADS"))))
    bench_wait_quiet "$WAIT_QUIET"
    bench_machine_line >>"$out"
    bench_load_start "$out" 1
    "$ROOT/ci/emulated-host.sh" "$ARCH" --name "$name" ${host_args[@]+"${host_args[@]}"} --memory 2560 \
        --host-script "$script" --add "$ROOT/ci/bench-host.sh:/bench/host-lib.sh" \
        --add "$initrd:/guest/bench-initramfs.cpio.gz" --timeout $((240 + 90 * boots)) >&2 || status=$?
    bench_load_stop
    tr -d '\r' <"$ROOT/target/e2e-logs/$name.log" | grep -a '^BENCH ' >>"$out" || true
    [ "$status" = 0 ] || die "the emulated host run failed (log target/e2e-logs/$name.log)"
}

# Median of KEY for VMM and WORKLOAD over the runs that succeeded.
med() { bench_median "$OUT" "vmm=$1 workload=$2 rc=0" "$3"; }

# Median of KEY for VMM and WORKLOAD minus its median over the idle runs.
over_idle() {
    awk -v a="$(med "$1" "$2" "$3")" -v b="$(med "$1" idle "$3")" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) print a - b; else print "n/a" }'
}

# The pairs compared, as A/B, of the VMMs measured.
ratio_pairs() {
    local pair
    for pair in tandem/qemu-microvm tandem/qemu-virt tandem/firecracker tandem-pci/qemu-pci \
        tandem-pci/qemu-virt-pci tandem-pci/tandem qemu-pci/qemu-microvm qemu-virt-pci/qemu-virt \
        tandem/base tandem-pci/base-pci tandem-async/tandem; do
        case " $VMMS " in *" ${pair%/*} "*) ;; *) continue ;; esac
        case " $VMMS " in *" ${pair#*/} "*) echo "$pair" ;; esac
    done
}

# The KVM counters the emulated host's KVM has (they differ per arch).
kvm_keys() {
    local key
    for key in kvm_exits kvm_io_exits kvm_mmio_exits kvm_mmio_exit_user kvm_mmio_exit_kernel \
        kvm_irq_injections; do
        grep -q " $key=[0-9]" "$OUT" && echo "$key"
    done
    echo guest_irqs
}

# One table row: "| A | B |" then each VMM's value of "COMMAND VMM", then
# each ratio pair's ratio when RATIO is 1.
row() {
    local head=$1 command=$2 ratios=$3 vmm pair line
    line="| $head |"
    declare -A value
    for vmm in $VMMS; do
        value[$vmm]=$($command "$vmm")
        line="$line ${value[$vmm]} |"
    done
    if [ "$ratios" = 1 ]; then
        for pair in $(ratio_pairs); do line="$line $(bench_ratio "${value[${pair%/*}]}" "${value[${pair#*/}]}") |"; done
    fi
    echo "$line"
}

summarise() {
    local w mb key dev vmm pair tandems="" header="" ratios=""
    for vmm in $VMMS; do
        header="$header $vmm |"
        case $vmm in tandem* | base*) tandems="$tandems $vmm" ;; esac
    done
    for pair in $(ratio_pairs); do ratios="$ratios $pair |"; done
    mbs() { bench_per "$mb" "$(med "$1" "$w" guest_s)" 1 1; }
    boot_s() { med "$1" "$w" "$key"; }
    per_mb() { bench_per "$(med "$1" "$w" "$key")" "$mb" 1 1; }
    stats_per_mb() { bench_per "$(over_idle "$1" "$w" "$key")" "$mb" 1 1; }

    echo "SUMMARY io: medians of $RUNS runs; throughput timed in the guest (MB/s); nested guest $CPUS vCPU, $MEMORY"
    echo "| workload (MB) |$header$ratios"
    echo "|---|$(for _ in $VMMS $(ratio_pairs); do printf -- '---|'; done)"
    for w in $WORKLOADS; do
        case $w in idle|info) continue ;; esac
        mb=$(bench_median "$OUT" "workload=$w rc=0" mb)
        row "$w ($mb)" mbs 1
    done
    case " $WORKLOADS " in *" idle "*)
        echo
        echo "The idle runs' boots, s from launch (the emulated host's clock) to the guest's marker:"
        echo "| |$header$ratios"
        echo "|---|$(for _ in $VMMS $(ratio_pairs); do printf -- '---|'; done)"
        w=idle key=marker_s
        row "launch → marker" boot_s 1
        key=guest_uptime_s
        row "guest uptime at the marker" boot_s 1 ;;
    esac
    echo
    echo "Per MB moved: the emulated host's KVM counters over each workload, and the interrupts the guest took:"
    echo "| workload | counter |$header$ratios"
    echo "|---|---|$(for _ in $VMMS $(ratio_pairs); do printf -- '---|'; done)"
    for w in $WORKLOADS; do
        case $w in idle|info) continue ;; esac
        mb=$(bench_median "$OUT" "workload=$w rc=0" mb)
        for key in $(kvm_keys); do row "$w | $key" per_mb 1; done
    done
    [ -n "$tandems" ] || return 0
    echo
    echo "tandem --stats over the whole run minus the idle runs' median, per MB:"
    echo "| workload | counter |$(for vmm in $tandems; do printf ' %s |' "$vmm"; done)"
    echo "|---|---|$(for _ in $tandems; do printf -- '---|'; done)"
    for w in $WORKLOADS; do
        case $w in idle|info) continue ;; esac
        mb=$(bench_median "$OUT" "workload=$w rc=0" mb)
        case $w in blk-*) dev=disk0 ;; *) dev=net0 ;; esac
        for key in exits pio mmio $dev.kicks $dev.interrupts $dev.suppressed; do
            VMMS=$tandems row "$w | $key" stats_per_mb 0
        done
    done
    echo
    echo "runs counted (rc=0): $(for w in $WORKLOADS; do
        printf '%s:' "$w"
        for vmm in $VMMS; do printf ' %s %s' "$vmm" "$(bench_count "$OUT" "vmm=$vmm workload=$w rc=0")"; done
        printf '; '; done)"
}

main() {
    parse_args "$@"
    if [ -n "$SUMMARY_OF" ]; then
        OUT=$SUMMARY_OF
        WORKLOADS=$(grep -o ' workload=[a-z0-9-]*' "$OUT" | cut -d= -f2 | awk '!seen[$0]++' | xargs)
        VMMS=$(grep -o ' vmm=[a-z-]*' "$OUT" | cut -d= -f2 | awk '!seen[$0]++' | xargs)
        summarise
        return
    fi
    mkdir -p "$OUT_DIR"
    if [ "$BUILD" = 1 ]; then "$ROOT/ci/build-static.sh" "$ARCH" >/dev/null; fi
    [ -x "$(default_tandem "$ARCH")" ] || die "no static tandem for $ARCH (ci/build-static.sh $ARCH)"
    OUT=$OUT_DIR/io-$ARCH$SUFFIX.txt
    : >"$OUT"
    run_emulated "$OUT"
    bench_append_summary "$OUT" summarise
    cat "$OUT"
}

main "$@"
