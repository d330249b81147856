#!/usr/bin/env bash
#! The end-to-end suite: boots Debian's kernel as a nested guest under tandem,
#! one row per case, each through ci/emulated-host.sh (inside an emulated KVM
#! host, or directly when this machine has hardware KVM for the row's arch).
#! Also the kvm-unit-tests sets (ci/kvm-unit-tests.sh), one row per host
#! flavour, so that they share the two lanes with the boots.
#! Prints one line per row and a summary (the failures again at its end);
#! logs go to target/e2e-logs/.
#! Two sets: `ci`, what CI runs, and `full`, which adds the extended rows
#! (the many-VM soaks, and repeats of checks whose code the ci set covers
#! another way; docs/testing.md, "Which rows CI runs").
#! Usage: ci/e2e.sh [options] [ci|full|x86_64|aarch64|ROW-NAME...]   (default: ci)
#!   x86_64, aarch64  the ci rows of that arch
#!   -j N          rows run N at a time (default 2)
#!   --list        print the rows and exit
#!   --host-only   only boot each row's emulated host and check KVM (no tandem)
#!   --emulated    use emulated hosts even where hardware KVM is present
#!   --no-build    use the existing target/<triple>/release/tandem
#! Exit status: 0 when no row failed. With CI=true a missing QEMU or asset
#! is a failure, otherwise that row is reported as SKIP.
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=e2e
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=ci/virtio-e2e.sh
. "$ROOT/ci/virtio-e2e.sh" # virtio_rows
# shellcheck source=ci/api-e2e.sh
. "$ROOT/ci/api-e2e.sh" # api_rows
# shellcheck source=ci/snapshot-e2e.sh
. "$ROOT/ci/snapshot-e2e.sh" # snapshot_rows
# shellcheck source=ci/hostile-e2e.sh
. "$ROOT/ci/hostile-e2e.sh" # hostile_rows, hostile_prepare
# shellcheck source=ci/vsock-e2e.sh
. "$ROOT/ci/vsock-e2e.sh" # vsock_rows, vsock_prepare
# shellcheck source=ci/balloon-e2e.sh
. "$ROOT/ci/balloon-e2e.sh" # balloon_rows
# shellcheck source=ci/many-e2e.sh
. "$ROOT/ci/many-e2e.sh" # many_rows
# shellcheck source=ci/crash-soak.sh
. "$ROOT/ci/crash-soak.sh" # crash_soak_rows

GUEST_CMDLINE="console=ttyS0 quiet panic=-1"
JOBS=2 HOST_ONLY=0 FORCE_EMULATED=0 BUILD=1
ROW_NAMES=() ROW_ARCHES=() ROW_FLAVOUR=() ROW_ARGS=() ROW_SET=()
# The set a row() registers into; see extended().
ROW_SET_NOW=ci
declare -A SELECTED=()

# Registers a row: ARCH NAME FLAVOUR [emulated-host.sh options...]. FLAVOUR
# "guest" rows run directly on hardware KVM of their arch when there is one;
# "host" rows are about a particular host, so they always run emulated.
#
# x86 emulated hosts run without transparent huge pages. With them, KVM
# maps tandem's 2 MiB-aligned guest RAM with 2 MiB nested pages, and nested
# SVM under TCG then resets write-heavy guests now and then (x86-many,
# x86-snapshot's RAM rewriter, benchmark guests of tandem and QEMU alike;
# docs/testing.md). These rows test function; the benchmarks keep THP.
row() {
    ROW_ARCHES+=("$1") ROW_NAMES+=("$2") ROW_FLAVOUR+=("$3") ROW_SET+=("$ROW_SET_NOW")
    local arch=$1
    shift 3
    [ "$arch" != x86_64 ] || set -- --host-thp never "$@"
    ROW_ARGS+=("$(printf '%q ' "$@")")
}

# Registers a row that runs a ci/ script of its own: ARCH NAME SCRIPT
# [ARGS...]. It passes when the script exits 0; its stdout and stderr go
# to target/e2e-logs/NAME.log, and its `KUT-EXPECT` lines show under the
# result.
script_row() {
    ROW_ARCHES+=("$1") ROW_NAMES+=("$2") ROW_FLAVOUR+=(script) ROW_SET+=("$ROW_SET_NOW")
    shift 2
    ROW_ARGS+=("$(printf '%q ' "$@")")
}

# Runs a row() or script_row() call that registers its row in the full
# set only: `extended row ARCH NAME ...`. CI's time limit keeps those out.
extended() {
    local ROW_SET_NOW=extended
    "$@"
}

# The kvm-unit-tests sets CI requires (ci/kvm-unit-tests.expected), one row
# per host flavour. On x86_64 only the tests expected to pass: in an
# emulated host the whole set with QEMU beside takes 20 minutes
# (docs/conformance.md), and on PVM the others hang until their timeout.
kvm_unit_tests_rows() {
    local kut=("$ROOT/ci/kvm-unit-tests.sh" --expect "$ROOT/ci/kvm-unit-tests.expected")
    local a64=(--arch aarch64 --tandem "$(default_tandem aarch64)") x86=(--tandem "$(default_tandem x86_64)")
    script_row x86_64 kut-x86-emulated "${kut[@]}" "${x86[@]}" --emulated --only-expected
    script_row aarch64 kut-a64-gicv3 "${kut[@]}" "${a64[@]}" --gic 3
    script_row aarch64 kut-a64-gicv2 "${kut[@]}" "${a64[@]}" --gic 2
    script_row x86_64 kut-x86-kvm "${kut[@]}" "${x86[@]}" --only-expected
}

# tandem's arguments for the test guest: KERNEL-FILE CPUS MEMORY [EXTRA-CMDLINE].
boot() {
    printf "run --kernel /guest/%s --initrd /guest/initramfs.cpio.gz --cpus %s --memory %s --cmdline '%s'" \
        "$1" "$2" "$3" "$GUEST_CMDLINE${4:+ $4}"
}

# Rows both arches share: reboot mode, and a corrupt kernel file (see
# main), which must fail with exactly one line on stderr (info logging off).
common_rows() {
    local arch=$1 p=$2
    row "$arch" "$p-reboot" guest --guest-cpus 1 --run "$(boot vmlinuz 1 512M tandem.mode=reboot)"
    row "$arch" "$p-corrupt-kernel" guest --add "$CORRUPT_KERNEL:/guest/corrupt-kernel" \
        --run "$(boot corrupt-kernel 1 512M)" \
        --expect-exit nonzero --no-guest-marker --expect-stderr-lines 1 --expect 'tandem: error: '
}

# Longest first, so that the two lanes end together: the short boot rows
# and the kvm-unit-tests fill the gaps at the end.
define_rows() {
    snapshot_rows
    many_rows aarch64
    hostile_rows
    balloon_rows
    virtio_rows
    api_rows
    vsock_rows
    crash_soak_rows
    row x86_64 x86-bzimage-1cpu guest --guest-cpus 1 --run "$(boot vmlinuz 1 512M)" \
        --expect-host 'Nested Paging enabled'
    row x86_64 x86-bzimage-2cpu guest --guest-cpus 2 --run "$(boot vmlinuz 2 512M)"
    row x86_64 x86-pvh-vmlinux guest --guest-cpus 1 --run "$(boot vmlinux 1 512M)"
    # 3.5 GiB reaches past the 32-bit PCI hole; the emulated host needs room too.
    row x86_64 x86-3584M guest --guest-cpus 2 --memory 6144 --timeout 600 \
        --run "$(boot vmlinux 2 3584M)" --expect 'TANDEM-GUEST-MEMORY kb=3[0-9]{6}'
    common_rows x86_64 x86

    row aarch64 a64-vhe-gicv3 guest --guest-cpus 2 --run "$(boot vmlinuz 2 512M)" \
        --expect-host 'VHE mode initialized' --expect 'in-kernel GICv3 with ITS' \
        --expect 'counter zeroed through KVM_REG_ARM_TIMER_CNT'
    row aarch64 a64-nvhe host --guest-cpus 1 --host-args kvm-arm.mode=nvhe \
        --run "$(boot vmlinuz 1 512M)" --expect-host 'kvm \[1\]: Hyp mode initialized'
    row aarch64 a64-protected host --guest-cpus 2 --host-args kvm-arm.mode=protected \
        --run "$(boot vmlinuz 2 512M)" --expect-host 'Protected nVHE mode initialized'
    row aarch64 a64-cortex-a72 host --guest-cpus 1 --cpu cortex-a72 \
        --run "$(boot vmlinuz 1 512M)" --expect-host 'IPA Size Limit: 44 bits'
    # With --pmu: a PMU node on a GICv2, whose PPIs carry a CPU mask.
    row aarch64 a64-gicv2 host --guest-cpus 2 --gic 2 \
        --run "$(boot vmlinuz 2 512M 'tandem.mode=checks tandem.checks=pmu') --pmu" \
        --expect-host 'GICv2m' --expect 'no in-kernel GICv3' --expect 'in-kernel GICv2' \
        --expect 'CHECK pmu PASS'
    row aarch64 a64-612-16k host --guest-cpus 2 --host-kernel-version 6.12-16k \
        --run "$(boot vmlinuz 2 512M)" --expect-host 'KernelPageSize: +16 kB'
    # 6.12 has KVM_ARM_SET_COUNTER_OFFSET; 6.1 hosts take the ONE_REG path.
    row aarch64 a64-612-4k host --guest-cpus 1 --host-kernel-version 6.12 \
        --run "$(boot vmlinuz 1 512M)" --expect-host 'KernelPageSize: +4 kB' \
        --expect 'counter zeroed with KVM_ARM_SET_COUNTER_OFFSET'
    common_rows aarch64 a64
    kvm_unit_tests_rows
    many_rows x86_64
}

parse_args() {
    local arg any=0
    while [ $# -gt 0 ]; do
        case $1 in
            -j) JOBS=$2; shift ;;
            --list) list_rows; exit 0 ;;
            --host-only) HOST_ONLY=1 BUILD=0 ;;
            --emulated) FORCE_EMULATED=1 ;;
            --no-build) BUILD=0 ;;
            -h|--help) usage; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) SELECTED[$1]=1; any=1 ;;
        esac
        shift
    done
    [ "$any" = 1 ] || SELECTED[ci]=1
    for arg in "${!SELECTED[@]}"; do
        case $arg in x86_64|aarch64|ci|full) ;; *) row_exists "$arg" || die "no row, set or arch '$arg' (--list)" ;; esac
    done
}

row_exists() { local n; for n in "${ROW_NAMES[@]}"; do [ "$n" != "$1" ] || return 0; done; return 1; }

list_rows() {
    local i arg words row_args
    for i in "${!ROW_NAMES[@]}"; do
        eval "row_args=(${ROW_ARGS[$i]})"
        set -- "${row_args[@]}"
        words=""
        for arg in "$@"; do [[ $arg == *[\ \[]* ]] && words+=" \"$arg\"" || words+=" $arg"; done
        printf '%-19s %-7s %-8s %-5s%s\n' "${ROW_NAMES[$i]}" "${ROW_ARCHES[$i]}" "${ROW_SET[$i]}" "${ROW_FLAVOUR[$i]}" "$words"
    done
}

# Row I is selected by its name, by `full`, or, in the ci set, by `ci`
# or its arch.
selected() {
    local i=$1
    [ -n "${SELECTED[full]:-}${SELECTED[${ROW_NAMES[$i]}]:-}" ] ||
        { [ "${ROW_SET[$i]}" = ci ] && [ -n "${SELECTED[ci]:-}${SELECTED[${ROW_ARCHES[$i]}]:-}" ]; }
}

direct_for() { [ "$FORCE_EMULATED" = 0 ] && [ "$HOST_ONLY" = 0 ] && hardware_kvm "$1"; }

build_tandem() {
    local arch=$1
    [ "$BUILD" = 1 ] || return 0
    log "building tandem for $arch"
    "$ROOT/ci/build-static.sh" "$arch" >/dev/null
    # The hostile rows' guest program (ci/hostile-e2e.sh).
    hostile_prepare "$arch"
    # The vsock rows' program (ci/vsock-e2e.sh).
    vsock_prepare "$arch"
}

# Runs row I (in a background job); its one-line result goes to file OUT.
run_row() {
    local i=$1 out=$2 mode_args=() start=$SECONDS status=0 line extra why
    local arch=${ROW_ARCHES[$i]} name=${ROW_NAMES[$i]}
    local log=$ROOT/target/e2e-logs/$name.log errors=$ROOT/target/e2e-logs/$name.stderr
    # Host-flavour rows need their particular (emulated) host everywhere.
    if [ "${ROW_FLAVOUR[$i]}" = guest ] && direct_for "$arch"; then mode_args=(--direct); fi
    [ "$HOST_ONLY" = 0 ] || mode_args=(--host-only)
    eval "set -- ${ROW_ARGS[$i]}"
    if [ "${ROW_FLAVOUR[$i]}" = script ]; then
        [ "$HOST_ONLY" = 0 ] || { echo "RESULT: SKIP $name (--host-only)" >"$out"; return; }
        "$@" >"$log" 2>&1 &
    else
        "$ROOT/ci/emulated-host.sh" "$arch" --name "$name" ${mode_args[@]+"${mode_args[@]}"} "$@" \
            >"$out.result" 2>"$errors" &
    fi
    echo $! >"$out.pid"
    wait "$(cat "$out.pid")" || status=$?
    rm -f "$out.pid"
    if [ "${ROW_FLAVOUR[$i]}" = script ]; then
        grep -a '^[a-z0-9-]*: ' "$log" >"$errors" || true
        [ "$status" != 0 ] || echo "RESULT: PASS $name" >"$out.result"
    fi
    line=$(grep '^RESULT: ' "$out.result" 2>/dev/null | tail -n 1 || true)
    why=$(tail -n 1 "$errors" | sed 's/^[a-z0-9-]*: //')
    if [ "$status" = "$SKIP_STATUS" ]; then line="RESULT: SKIP $name ($why)"; fi
    line=${line:-"RESULT: FAIL $name (${why:-emulated-host.sh printed no result})"}
    extra=$(grep -aoE 'TANDEM-GUEST-UP uptime=[0-9.]+' "$log" 2>/dev/null |
            tail -n 1 | sed 's/.*=/, guest uptime /') || true
    echo "$line  [$((SECONDS - start)) s${extra:+$extra s}]" >"$out"
    # Rows that run guest checks show one line per check under their result.
    grep -aE '^CHECK [a-z-]+ (PASS|FAIL)|^KUT-EXPECT ' "$log" 2>/dev/null | tr -d '\r' |
        sed "s/^/    $name: /" >>"$out" || true
    # A failing row shows what its log says about it (tandem's warnings and
    # errors, host-script notes, guest diagnostics) and how the log ends, so
    # a CI run explains itself. A log cut off mid-line still ends this row's
    # output with a newline, so that the next row's result starts a line.
    case $line in
        "RESULT: FAIL"*)
            { grep -aE 'tandem: (warn|error)|tandem-stats|virtio-host:|api-host:|hostile-host:|snapshot-host:|many-host:|^many: |crash-soak: |net-diag:|stall: ' "$log" | tail -n 40
              echo "... last lines:"
              tail -n 15 "$log" | awk 1; } 2>/dev/null | tr -d '\r' | sed "s/^/    | /" >>"$out" || true ;;
    esac
}

# Runs the selected rows JOBS at a time, printing each row's line as it ends.
run_rows() {
    local i results=$1 running=0 done_pid
    declare -A out_of=()
    for i in "${!ROW_NAMES[@]}"; do
        selected "$i" || continue
        if [ "$running" -ge "$JOBS" ]; then
            wait -n -p done_pid || true
            tee -a "$results" <"${out_of[$done_pid]}"
            running=$((running - 1))
        fi
        run_row "$i" "$WORK/row.$i" &
        out_of[$!]=$WORK/row.$i
        running=$((running + 1))
    done
    while [ "$running" -gt 0 ]; do
        wait -n -p done_pid || true
        tee -a "$results" <"${out_of[$done_pid]}"
        running=$((running - 1))
    done
}

prepare() {
    local arch i needed=()
    declare -A need=() kut_arches=()
    for i in "${!ROW_NAMES[@]}"; do
        selected "$i" || continue
        need[${ROW_ARCHES[$i]}]=1
        [[ ${ROW_NAMES[$i]} != kut-* ]] || kut_arches[${ROW_ARCHES[$i]}]=1
    done
    for arch in x86_64 aarch64; do [ -z "${need[$arch]:-}" ] || needed+=("$arch"); done
    for arch in ${needed[@]+"${needed[@]}"}; do build_tandem "$arch"; done
    # Fetch the shared assets and build the kvm-unit-tests suites once,
    # before rows race for them.
    for arch in ${needed[@]+"${needed[@]}"}; do
        "$ROOT/ci/guest-assets.sh" "$arch" >/dev/null || skip_or_fail "assets for $arch"
        [ -z "${kut_arches[$arch]:-}" ] || [ "$HOST_ONLY" = 1 ] ||
            "$ROOT/ci/kvm-unit-tests.sh" --arch "$arch" --build-only \
                >"$ROOT/target/e2e-logs/kut-build-$arch.log" 2>&1 ||
            skip_or_fail "kvm-unit-tests for $arch (target/e2e-logs/kut-build-$arch.log)"
    done
}

# Stops the rows still running (each stops its own QEMU) and removes WORK.
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local pid_file
    for pid_file in "$WORK"/row.*.pid; do
        if [ -f "$pid_file" ]; then kill "$(cat "$pid_file")" 2>/dev/null || true; fi
    done
    wait || true
    rm -rf "$WORK"
}

main() {
    mkdir -p "$ROOT/target/e2e-logs" "$ROOT/target/e2e-work"
    WORK=$(mktemp -d "$ROOT/target/e2e-work/suite.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    CORRUPT_KERNEL=$WORK/corrupt-kernel
    # Random bytes, but with an arm64 Image magic and an impossible
    # image_size in its header: aarch64 would run a header-less file as a
    # raw binary, as QEMU does; x86_64 finds no bzImage, ELF or multiboot.
    head -c 1M /dev/urandom >"$CORRUPT_KERNEL"
    printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$CORRUPT_KERNEL" bs=1 seek=16 conv=notrunc status=none
    printf 'ARM\x64' | dd of="$CORRUPT_KERNEL" bs=1 seek=56 conv=notrunc status=none
    define_rows
    parse_args "$@"
    prepare
    # Counted from this run's own file: a concurrent run may rewrite summary.log.
    local results=$WORK/results start=$SECONDS failed failures
    : >"$results"
    run_rows "$results"
    failed=$(grep -c '^RESULT: FAIL' "$results" || true)
    # The failures again, last, with their failed checks: a CI log shown
    # from its end names them even when the rows' own lines scrolled away.
    failures=$(grep -aE '^RESULT: FAIL|^    [a-z0-9-]+: (CHECK [a-z-]+ FAIL|KUT-EXPECT .* should pass)' "$results" |
               cut -c1-400) || true
    [ -z "$failures" ] || sed 's/^ */e2e: failed: /' <<<"$failures" | tee -a "$results"
    echo "e2e: $(grep -c '^RESULT: PASS' "$results" || true) passed, $failed failed," \
         "$(grep -c '^RESULT: SKIP' "$results" || true) skipped in $((SECONDS - start)) s" | tee -a "$results"
    cp "$results" "$ROOT/target/e2e-logs/summary.log"
    [ "$failed" = 0 ]
}

# On one line, so that bash has read all it will run before main starts: an
# edit to this file while it runs cannot make it run more.
main "$@"; exit
