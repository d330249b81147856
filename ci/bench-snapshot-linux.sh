#!/usr/bin/env bash
#! Snapshot benchmark with a Linux guest: tandem beside Firecracker v1.16.1
#! in one emulated x86_64 KVM host (QEMU TCG, nested SVM), the same Debian
#! guest (2 vCPUs, 512 MiB, virtio-blk, the ELF vmlinux) and the same API
#! calls, runs interleaved: PUT /snapshot/create time of the paused guest,
#! state file size, memory file allocated, PUT /snapshot/load (resume_vm)
#! time in a new process, load → the guest's next tick, and whether that
#! tick is the saved one + 1. The emulated-host half is
#! ci/bench-snapshot-linux-host.sh. Results go to docs/snapshots.md.
#! Usage: ci/bench-snapshot-linux.sh [--runs N] [--summary FILE]
#!   --runs N        measured runs per VMM after a warm-up (default 3)
#!   --summary FILE  only print the table for the BENCH lines in FILE
#! Keeps the BENCH lines and the table in target/bench/snapshot-linux.txt.
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=bench-snapshot-linux
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=ci/bench-lib.sh
. "$ROOT/ci/bench-lib.sh"

RUNS=3 SUMMARY_OF="" OUT=$ROOT/target/bench/snapshot-linux.txt
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --summary) SUMMARY_OF=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done

# The table of medians (warm-up left out) for the BENCH lines in $1.
summary() {
    local metric fc td
    echo "| metric (median of $(bench_count "$1" "vmm=tandem") runs) | Firecracker v1.16.1 | tandem | tandem/Firecracker |"
    echo "|---|---|---|---|"
    for metric in create_ms load_ms load_to_tick_ms state_bytes mem_alloc_kib; do
        fc=$(bench_median "$1" "vmm=firecracker" "$metric")
        td=$(bench_median "$1" "vmm=tandem" "$metric")
        echo "| $metric | $fc | $td | $(awk -v a="$td" -v b="$fc" 'BEGIN { if (b > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else print "n/a" }') |"
    done
    echo "next tick = saved + 1: firecracker $(grep -c 'vmm=firecracker .*next_tick_ok=yes' "$1")/$(grep -c 'BENCH vmm=firecracker' "$1"), tandem $(grep -c 'vmm=tandem .*next_tick_ok=yes' "$1")/$(grep -c 'BENCH vmm=tandem' "$1") (warm-up included)"
}

if [ -n "$SUMMARY_OF" ]; then
    summary "$SUMMARY_OF"
    exit
fi
command -v "$(qemu_binary x86_64)" >/dev/null || skip_or_fail "no $(qemu_binary x86_64)"
tandem=$("$ROOT/ci/build-static.sh" x86_64 | tail -n 1)
firecracker=$("$ROOT/ci/peer-firecracker.sh" --static | tail -n 1)
mkdir -p "$(dirname "$OUT")"
runs_file=$(mktemp)
trap 'rm -f "$runs_file"' EXIT
echo "$RUNS" >"$runs_file"
log "$RUNS runs per VMM after a warm-up, $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/ci/emulated-host.sh" x86_64 --name bench-snapshot-linux --tandem "$tandem" \
    --host-script "$ROOT/ci/bench-snapshot-linux-host.sh" --no-guest-marker \
    --add "$ROOT/ci/host-lib.sh:/host-lib.sh" --add "$firecracker:/bin/firecracker" \
    --add "$runs_file:/bench-runs" --timeout $((600 + RUNS * 600)) || true
grep -a '^BENCH ' "$ROOT/target/e2e-logs/bench-snapshot-linux.log" | tr -d '\r' >"$OUT"
[ -s "$OUT" ] || die "no BENCH lines (target/e2e-logs/bench-snapshot-linux.log)"
cat "$OUT"
summary "$OUT" | tee -a "$OUT"
