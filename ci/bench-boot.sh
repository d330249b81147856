#!/usr/bin/env bash
#! Boot benchmarks; results go to docs/benchmarks.md.
#!   local     tandem's own start-up cost on this machine: exec → first KVM_RUN
#!             and peak RSS beyond guest memory, with a tiny PVH payload that
#!             powers off at once through the ACPI sleep port (any KVM runs it,
#!             PVM included; no Linux needed).
#!   emulated  tandem vs QEMU (-M microvm -accel kvm) and, with --vmms, also
#!             Firecracker v1.16.1 (ci/peer-firecracker.sh --static; vmlinux
#!             only) booting the Debian test guest inside one emulated x86
#!             KVM host (QEMU TCG, nested SVM; the host runs this machine's
#!             QEMU over a 9p share): launch →
#!             TANDEM-GUEST-UP, the guest's own uptime there, launch → exit,
#!             peak RSS, interleaved runs, one warm-up each.
#!   The aarch64 variant (--arch aarch64) boots the arm64 guest in an
#!   emulated arm64 KVM host, under tandem and, with --vmms "tandem
#!   qemu-virt", also under QEMU (-M virt -accel kvm) run from the arm64
#!   root ci/arm64-qemu-root.sh builds, seen through the 9p share.
#! Usage: ci/bench-boot.sh [local|emulated|all] [options]     (default: all)
#!   --arch ARCH         emulated: x86_64 (default) or aarch64
#!   --runs N            measured runs per configuration (default 5)
#!   --cpus N            nested guest vCPUs (default 1)
#!   --memory SIZE       nested guest memory (default 512M)
#!   --kernels "K..."    emulated: vmlinux (PVH ELF) and/or vmlinuz (bzImage) (default both)
#!   --vmms "V..."       emulated x86: tandem, qemu-microvm, firecracker (default the first two);
#!                       aarch64: tandem, qemu-virt (default tandem)
#!   --guest-args "W..." emulated: words added to the guest's command line (both VMMs)
#!   --suffix NAME       emulated: results in boot-emulated-x86_64-NAME.txt
#!   --wait-quiet MIN    wait up to MIN minutes for other QEMUs to end (default 10)
#!   --no-build          use the existing static tandem
#! Prints the raw lines and a summary; keeps both in target/bench/boot-<part>.txt.
set -euo pipefail
LOG_PREFIX=bench-boot
. "$(dirname "$0")/lib.sh"
. "$ROOT/ci/bench-lib.sh"

PART=all RUNS=5 CPUS=1 MEMORY=512M KERNELS="" WAIT_QUIET=10 BUILD=1 SUFFIX="" ARCH=x86_64 VMMS=""
QEMU_ROOT=""
GUEST_CMDLINE="console=ttyS0 quiet panic=-1"
OUT_DIR=$ROOT/target/bench

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            local|emulated|all) PART=$1 ;;
            --runs) RUNS=$2; shift ;;
            --cpus) CPUS=$2; shift ;;
            --memory) MEMORY=$2; shift ;;
            --kernels) KERNELS=$2; shift ;;
            --arch) ARCH=$2; shift ;;
            --vmms) VMMS=$2; shift ;;
            --guest-args) GUEST_CMDLINE="$GUEST_CMDLINE $2"; shift ;;
            --suffix) SUFFIX=-$2; shift ;;
            --wait-quiet) WAIT_QUIET=$2; shift ;;
            --no-build) BUILD=0 ;;
            -h|--help) sed -n '2,$s/^#! \{0,1\}//p' "$0"; exit 0 ;;
            *) die "unknown argument $1 (--help)" ;;
        esac
        shift
    done
    check_arch "$ARCH"
    if [ "$ARCH" = aarch64 ]; then
        KERNELS=${KERNELS:-vmlinuz} VMMS=${VMMS:-tandem}
        for vmm in $VMMS; do
            case $vmm in tandem|qemu-virt) ;; *) die "--arch aarch64 runs tandem and qemu-virt, not $vmm" ;; esac
        done
        [ "$PART" != all ] || PART=emulated
        [ "$PART" = emulated ] || die "the local part runs on x86_64 only"
    else
        VMMS=${VMMS:-tandem qemu-microvm}
        case $VMMS in
            *firecracker*) KERNELS=${KERNELS:-vmlinux}
                           [ "$KERNELS" = vmlinux ] || die "Firecracker boots the ELF vmlinux only (--kernels vmlinux)" ;;
            *) KERNELS=${KERNELS:-vmlinux vmlinuz} ;;
        esac
    fi
}

# Little-endian bytes of VALUE, WIDTH bytes wide, as printf escapes.
le() {
    local value=$1 width=$2 i
    for ((i = 0; i < width; i++)); do printf '\\x%02x' $(((value >> (8 * i)) & 255)); done
}

# A minimal x86_64 ELF "kernel": one PT_LOAD at 16 MiB and a PVH entry note
# (Xen ELF note type 18) pointing at it. Its 32-bit code writes SLP_EN |
# SLP_TYP=5 (0x34) to the ACPI sleep control port 0x600, i.e. powers off:
#   mov $0x34,%al; mov $0x600,%dx; out %al,(%dx); 1: hlt; jmp 1b
write_tiny_kernel() {
    local load=$((0x1000000)) note_off=$((64 + 56 * 2)) note_len=20 code_len=10
    local code_off=$((note_off + note_len)) bytes
    bytes="\\x7fELF\\x02\\x01\\x01$(le 0 9)$(le 2 2)$(le 62 2)$(le 1 4)$(le "$load" 8)"
    bytes+="$(le 64 8)$(le 0 8)$(le 0 4)$(le 64 2)$(le 56 2)$(le 2 2)$(le 64 2)$(le 0 4)"
    # PT_LOAD (R+X) and PT_NOTE program headers.
    bytes+="$(le 1 4)$(le 5 4)$(le "$code_off" 8)$(le "$load" 8)$(le "$load" 8)"
    bytes+="$(le "$code_len" 8)$(le "$code_len" 8)$(le 4 8)"
    bytes+="$(le 4 4)$(le 4 4)$(le "$note_off" 8)$(le 0 8)$(le 0 8)"
    bytes+="$(le "$note_len" 8)$(le "$note_len" 8)$(le 4 8)"
    bytes+="$(le 4 4)$(le 4 4)$(le 18 4)Xen\\x00$(le "$load" 4)"
    bytes+="\\xb0\\x34\\x66\\xba\\x00\\x06\\xee\\xf4\\xeb\\xfd"
    printf "$bytes" >"$1"
}

# One local run: CONFIG-NAME RUN TANDEM-ARGS...; appends a BENCH line.
local_run() {
    local config=$1 run=$2 t0 t1 code=0 err=$OUT_DIR/local.stderr
    shift 2
    t0=$(date +%s%N)
    "$TANDEM" run "$@" --stats --log-level info </dev/null >/dev/null 2>"$err" || code=$?
    t1=$(date +%s%N)
    echo "BENCH bench=boot-local config=$config run=$run code=$code outside_ms=$(bench_per $((t1 - t0)) 1000000 1 2)$(
        awk '/^tandem-stats: device=/ { next }
             /^tandem-stats: / { for (i = 2; i <= NF; i++) printf " %s", $i }
             /first KVM_RUN/ { for (i = 1; i < NF; i++) if ($i == "KVM_RUN") printf " first_kvm_run_ms=%s", $(i + 1) }' "$err")"
    [ "$code" = 0 ] || { sed 's/^/  stderr: /' "$err" >&2; die "tandem exited $code ($config)"; }
}

run_local() {
    local out=$1 guest kernel=$OUT_DIR/tiny-pvh.elf disk=$OUT_DIR/local-disk.img run config
    guest=$("$ROOT/ci/guest-assets.sh" x86_64 | tail -n 1)
    write_tiny_kernel "$kernel"
    truncate -s 64M "$disk"
    [ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"
    bench_machine_line >>"$out"
    for run in $(seq 0 "$RUNS"); do
        local_run tiny "$run" --kernel "$kernel" --memory 128M >>"$out"
        local_run tiny+initrd "$run" --kernel "$kernel" --initrd "$guest/initramfs.cpio.gz" \
            --memory "$MEMORY" --cpus "$CPUS" >>"$out"
        local_run tiny+initrd+devices "$run" --kernel "$kernel" --initrd "$guest/initramfs.cpio.gz" \
            --memory "$MEMORY" --cpus "$CPUS" --disk "path=$disk" --rng >>"$out"
    done
    rm -f "$disk"
}

summarise_local() {
    local out=$1 config
    echo "SUMMARY boot-local: medians of $RUNS runs (after a warm-up) on this machine"
    echo "| payload | exec→first KVM_RUN, tandem's clock (ms) | exec→exit, outside (ms) | VMM peak RSS beyond guest memory (KiB) | guest RSS (KiB) |"
    echo "|---|---|---|---|---|"
    for config in tiny tiny+initrd tiny+initrd+devices; do
        echo "| $config | $(bench_median "$out" "config=$config" first_kvm_run_ms)" \
             "| $(bench_median "$out" "config=$config" outside_ms)" \
             "| $(bench_median "$out" "config=$config" vmm_peak_rss_kib)" \
             "| $(bench_median "$out" "config=$config" guest_rss_kib) |"
    done
}

# The host script: interleaved tandem and QEMU runs per kernel, run 0 a warm-up.
write_boot_host_script() {
    cat >"$1" <<EOF
. /bench/host-lib.sh
${QEMU_ROOT:+BENCH_QEMU_ROOT=/hostroot$QEMU_ROOT}
case "$VMMS" in *qemu*) bench_prepare_chroot || exit 1 ;; esac
status=0
for kernel in $KERNELS; do
    for run in \$(seq 0 $RUNS); do
        for vmm in $VMMS; do
            label="bench=boot arch=$ARCH vmm=\$vmm kernel=\$kernel run=\$run"
            case \$vmm in
                tandem) bench_run "\$label" /bin/tandem run --kernel /guest/\$kernel \\
                    --initrd /guest/bench-initramfs.cpio.gz --cpus $CPUS --memory $MEMORY \\
                    --cmdline "$GUEST_CMDLINE" --stats --log-level info ;;
                qemu-microvm) bench_run "\$label" bench_qemu_microvm \$kernel bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "$GUEST_CMDLINE" ;;
                qemu-virt) bench_run "\$label" bench_qemu_virt_arm64 \$kernel bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "$GUEST_CMDLINE" ;;
                firecracker) bench_run "\$label" bench_firecracker \$kernel bench-initramfs.cpio.gz \\
                    $CPUS $MEMORY "$GUEST_CMDLINE tandem.mode=reboot" ;;
            esac || status=1
        done
    done
done
exit \$status
EOF
}

run_emulated() {
    local name=bench-boot-$ARCH$SUFFIX script=$OUT_DIR/boot-host-script.sh
    local log=$ROOT/target/e2e-logs/bench-boot-$ARCH$SUFFIX.log share=()
    local runs_total status=0 guest initrd=$OUT_DIR/boot-initramfs-$ARCH.cpio.gz
    command -v "$(qemu_binary "$ARCH")" >/dev/null || skip_or_fail "$(qemu_binary "$ARCH") not installed (ci/setup-host.sh)"
    guest=$("$ROOT/ci/guest-assets.sh" "$ARCH" | tail -n 1)
    bench_padded_initramfs "$guest/initramfs.cpio.gz" "$initrd"
    case $VMMS in *qemu-virt*) QEMU_ROOT=$("$ROOT/ci/arm64-qemu-root.sh" | tail -n 1) ;; esac
    write_boot_host_script "$script"
    [ "$VMMS" = tandem ] || share=(--share-root)
    case $VMMS in *firecracker*) share+=(--add "$("$ROOT/ci/peer-firecracker.sh" --static | tail -n 1):/bin/firecracker") ;; esac
    runs_total=$(($(wc -w <<<"$KERNELS") * $(wc -w <<<"$VMMS") * (RUNS + 1)))
    bench_wait_quiet "$WAIT_QUIET"
    bench_machine_line >>"$out"
    bench_load_start "$out" 1
    "$ROOT/ci/emulated-host.sh" "$ARCH" --name "$name" ${share[@]+"${share[@]}"} \
        --host-script "$script" --add "$ROOT/ci/bench-host.sh:/bench/host-lib.sh" \
        --add "$initrd:/guest/bench-initramfs.cpio.gz" --memory 2048 --timeout $((240 + 60 * runs_total)) >&2 || status=$?
    bench_load_stop
    tr -d '\r' <"$log" | grep -a '^BENCH ' >>"$out" || true
    [ "$status" = 0 ] || die "the emulated host run failed (log $log)"
}

summarise_emulated() {
    local out=$1 kernel key vmm peer line peers
    declare -A value
    peers=$(for vmm in $VMMS; do [ "$vmm" = tandem ] || echo "$vmm"; done)
    echo "SUMMARY boot-emulated: medians of $RUNS runs (after a warm-up), nested guest $CPUS vCPU, $MEMORY, command line \"$GUEST_CMDLINE\""
    line="| kernel | measurement |"
    for vmm in $VMMS; do line="$line $vmm |"; done
    for peer in $peers; do line="$line tandem/$peer |"; done
    echo "$line"
    echo "|---|---|$(for _ in $VMMS $peers; do printf -- '---|'; done)"
    for kernel in $KERNELS; do
        for key in marker_s guest_uptime_s exit_s hwm_kib; do
            line="| $kernel | $key |"
            for vmm in $VMMS; do
                value[$vmm]=$(bench_median "$out" "vmm=$vmm kernel=$kernel code=0" "$key")
                line="$line ${value[$vmm]} |"
            done
            for peer in $peers; do line="$line $(bench_ratio "${value[tandem]}" "${value[$peer]}") |"; done
            echo "$line"
        done
        for key in first_kvm_run_ms vmm_peak_rss_kib exits; do
            echo "| $kernel | tandem $key | $(bench_median "$out" "vmm=tandem kernel=$kernel code=0" "$key") |"
        done
        line="| $kernel | runs counted |"
        for vmm in $VMMS; do line="$line $(bench_count "$out" "vmm=$vmm kernel=$kernel code=0") |"; done
        echo "$line"
    done
}

main() {
    parse_args "$@"
    mkdir -p "$OUT_DIR"
    TANDEM=$(default_tandem x86_64)
    if [ "$BUILD" = 1 ]; then "$ROOT/ci/build-static.sh" "$ARCH" >/dev/null; fi
    [ -x "$(default_tandem "$ARCH")" ] || die "no static tandem for $ARCH (ci/build-static.sh $ARCH)"
    local out
    if [ "$PART" = local ] || [ "$PART" = all ]; then
        out=$OUT_DIR/boot-local.txt
        : >"$out"
        run_local "$out"
        bench_append_summary "$out" summarise_local "$out"
        cat "$out"
    fi
    if [ "$PART" = emulated ] || [ "$PART" = all ]; then
        out=$OUT_DIR/boot-emulated-$ARCH$SUFFIX.txt
        : >"$out"
        run_emulated "$out"
        bench_append_summary "$out" summarise_emulated "$out"
        cat "$out"
    fi
}

main "$@"
