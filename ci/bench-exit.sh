#!/usr/bin/env bash
#! Exit round trip on this machine's /dev/kvm: tandem's run loop against the
#! barest kvm-ioctls loop (arch/examples/bare_exit_loop.rs), same payload.
#! ci/tiny-pvh.py --exits N writes N times to the UART's scratch register
#! (pio: a claimed port, tandem's serial model stores the byte) or to a
#! virtio-mmio QueueSel register (mmio: tandem runs with --rng, whose
#! transport sits there), then powers off. Each run is timed from outside
#! (exec → exit); runs with 0 exits time everything else, so
#!   cost per exit = (median time with N exits − median with 0) / N.
#! VMMs and modes interleave; run 0 is a warm-up. Works on PVM (no Linux).
#! Usage: ci/bench-exit.sh [--runs N] [--exits N] [--tandem PATH]
#! Results: target/bench/exit.txt (BENCH lines and a summary table).
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=bench-exit
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=ci/bench-lib.sh
. "$ROOT/ci/bench-lib.sh"

RUNS=7 EXITS=100000 TANDEM=""
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift ;;
        --exits) EXITS=$2; shift ;;
        --tandem) TANDEM=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done
[ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"
[ "$(uname -m)" = x86_64 ] || die "the payload is x86_64 code"

log "building tandem and the bare loop (release)"
cargo build --release --locked --quiet -p tandem -p arch --bin tandem --example bare_exit_loop
TANDEM=${TANDEM:-$ROOT/target/release/tandem}
BARE=$ROOT/target/release/examples/bare_exit_loop
OUT_DIR=$ROOT/target/bench
OUT=$OUT_DIR/exit.txt
mkdir -p "$OUT_DIR"
for via in pio mmio; do
    python3 "$ROOT/ci/tiny-pvh.py" "$OUT_DIR/exit-$via-0.elf" --exits 0 --via "$via"
    python3 "$ROOT/ci/tiny-pvh.py" "$OUT_DIR/exit-$via-n.elf" --exits "$EXITS" --via "$via"
done

# One timed run: VMM VIA COUNT(0|n) RUN; appends a BENCH line.
one_run() {
    local vmm=$1 via=$2 count=$3 run=$4 kernel t0 t1 exits
    kernel=$OUT_DIR/exit-$via-$count.elf
    t0=$(date +%s%N)
    case $vmm in
        bare) "$BARE" "$kernel" >"$OUT_DIR/exit.stdout" ;;
        tandem) "$TANDEM" run --kernel "$kernel" --memory 128M --rng --stats --log-level warn \
                    </dev/null >/dev/null 2>"$OUT_DIR/exit.stdout" ;;
    esac
    t1=$(date +%s%N)
    # Both say how many exits they saw: the payload really ran.
    exits=$(grep -o 'exits=[0-9]*' "$OUT_DIR/exit.stdout" | head -n 1)
    echo "BENCH bench=exit vmm=$vmm via=$via count=$count run=$run ms=$(bench_per $((t1 - t0)) 1000000 1 3) $exits"
}

bench_machine_line >"$OUT"
echo "EXITS n=$EXITS" >>"$OUT"
for run in $(seq 0 "$RUNS"); do
    for via in pio mmio; do
        for vmm in bare tandem; do
            one_run "$vmm" "$via" 0 "$run" >>"$OUT"
            one_run "$vmm" "$via" n "$run" >>"$OUT"
        done
    done
done

summary() {
    echo "SUMMARY exit round trip: medians of $RUNS runs, $EXITS exits per payload"
    echo "| exit | bare kvm-ioctls loop (µs) | tandem (µs) | tandem/bare |"
    echo "|---|---|---|---|"
    local via per_bare per_tandem vmm zero full
    for via in pio mmio; do
        for vmm in bare tandem; do
            zero=$(bench_median "$OUT" "vmm=$vmm via=$via count=0" ms)
            full=$(bench_median "$OUT" "vmm=$vmm via=$via count=n" ms)
            printf -v "per_$vmm" '%s' "$(awk -v z="$zero" -v f="$full" -v n="$EXITS" \
                'BEGIN { printf "%.2f", (f - z) * 1000 / n }')"
        done
        echo "| $via write | $per_bare | $per_tandem | $(bench_ratio "$per_tandem" "$per_bare") |"
    done
}
bench_append_summary "$OUT" summary
grep -v '^BENCH' "$OUT"
log "raw lines in $OUT"
