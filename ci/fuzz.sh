#!/usr/bin/env bash
#! Builds tandem's cargo-fuzz targets (fuzz/) and runs each for a while,
#! one libFuzzer process at a time (one job, one worker), niced.
#! Prints one line per target: executions, exec/s, new corpus entries,
#! corpus size, crashes (inputs saved: libFuzzer stops at the first) and
#! the result; exits 1 if any target crashed, leaked,
#! timed out or ran out of memory (the input is kept in
#! fuzz/artifacts/TARGET/).
#!
#! Usage: ci/fuzz.sh [--seconds N | --runs N | --smoke] [--build-only] [TARGET...]
#!   --seconds N   run each target N seconds (default 60)
#!   --runs N      run each target for N executions instead
#!   --smoke       CI mode: 20 s per target (all 12: about 4 minutes plus
#!                 the build)
#!   --seed N      libFuzzer's seed (default: a random one); a fixed seed
#!                 makes a run repeat the same inputs (CI uses 1)
#!   --build-only  build the targets, run none
#!   --log-dir D   keep each target's libFuzzer log as D/TARGET.log
#!                 (default: a temporary directory, removed at the end)
#!   TARGET...     default: every target (`cargo fuzz list`)
#!
#! cargo-fuzz needs nightly-only flags (-Zsanitizer=address); on a stable
#! toolchain RUSTC_BOOTSTRAP=1 lets rustc accept them, which is what this
#! script does (FUZZ_TOOLCHAIN=nightly uses `cargo +nightly` instead).
#! cargo-fuzz is installed from crates.io if missing. New corpus entries
#! go to fuzz/corpus/TARGET/ next to the committed seeds (seed-*), which
#! git ignores; see docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n 's/^#!\( \|$\)//p' "$0" | sed -n '2,$p'; }
die() { echo "fuzz: error: $*" >&2; exit 2; }

seconds=60 runs="" seed="" log_dir="" build_only=false targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=${2:?}; runs=""; shift 2 ;;
        --runs) runs=${2:?}; shift 2 ;;
        --seed) seed=${2:?}; shift 2 ;;
        --smoke) seconds=20; runs=""; shift ;;
        --build-only) build_only=true; shift ;;
        --log-dir) log_dir=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    cargo_fuzz=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
else
    cargo_fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${cargo_fuzz[@]}" list)
triple="$(uname -m)-unknown-linux-gnu"
echo "fuzz: building the targets for $triple" >&2
nice -n 10 "${cargo_fuzz[@]}" build -O --target "$triple" >&2
$build_only && exit 0

bin_dir="fuzz/target/$triple/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
printf '%-18s %12s %7s %9s %6s %8s %8s  %s\n' target executions time exec/s new corpus crashes result
for target in "${targets[@]}"; do
    bin="$bin_dir/$target"
    [ -x "$bin" ] || die "no fuzz target $target (cargo fuzz list)"
    corpus="fuzz/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    limit=(-max_total_time="$seconds")
    [ -z "$runs" ] || limit=(-runs="$runs")
    extra=()
    [ -z "$seed" ] || extra+=(-seed="$seed")
    # Kernel images need room: up to 64 KiB (the seeds are a few KiB).
    [ "$target" != kernel_loader ] || extra+=(-max_len=65536)
    log="$work/$target.log"
    if [ -n "$log_dir" ]; then
        mkdir -p "$log_dir"
        log="$(cd "$log_dir" && pwd)/$target.log"
    fi
    found_before=$(find "$artifacts" -type f ! -name '*.log' | wc -l)
    status=0
    started=$(date +%s)
    (cd "$work" && nice -n 10 "$ROOT/$bin" "${limit[@]}" "${extra[@]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$ROOT/$artifacts/" "$ROOT/$corpus") >"$log" 2>&1 || status=$?
    elapsed="$(($(date +%s) - started))s"
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    new=$(stat new_units_added)
    size=$(find "$corpus" -type f | wc -l)
    crashes=$(($(find "$artifacts" -type f ! -name '*.log' | wc -l) - found_before))
    result=ok
    if [ "$status" -ne 0 ]; then
        failed=1
        kind=$(grep -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z-]+|deadly signal|ALARM|out-of-memory|panicked at' "$log" | head -1 || true)
        unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        result="FAIL (${kind:-exit $status}) ${unit#"$ROOT/"}"
        cp "$log" "$ROOT/$artifacts/last-failure.log"
    fi
    printf '%-18s %12s %7s %9s %6s %8s %8s  %s\n' "$target" "${execs:-?}" "$elapsed" "${rate:-?}" "${new:-?}" "$size" "$crashes" "$result"
done
exit "$failed"
