#!/usr/bin/env bash
#! Control-plane benchmark: tandem vs Firecracker over Firecracker's HTTP API
#! (ci/api_bench.py, Python standard library only). Each VMM is started as
#! `BIN --api-sock SOCK --id ID` and, per run: exec → API socket answers `GET /`
#! (ms), InstanceStart sent → the tiny PVH payload's serial byte on the VMM's
#! stdout (ms), 1,000 PATCH /vm Paused/Resumed round trips (µs, median and
#! p99), SIGTERM → exit (ms). Runs interleave the VMMs; run 0 is a warm-up.
#! Works on PVM /dev/kvm (the payload is ci/tiny-pvh.py's, not Linux).
#! Usage: ci/bench-api.sh --vmm NAME[=PATH] [--vmm NAME[=PATH]] [options]
#!   --vmm firecracker          Firecracker v1.16.1 built by ci/peer-firecracker.sh
#!   --vmm firecracker=PATH     a Firecracker binary
#!   --vmm tandem[=PATH]        tandem (default PATH: ci/build-static.sh's x86_64 binary)
#!   --extra NAME=ARGS          more arguments for that VMM, e.g. firecracker=--no-seccomp
#!   --runs N                   measured runs per VMM (default 5)
#!   --cycles N                 pause/resume cycles per run (default 1000)
#!   --halt                     the payload halts after its byte instead of spinning
#!   --out FILE                 keep the output there too (default target/bench/api.txt)
#! Prints `bench-api: vmm=… metric=… median=… p99=…` lines and a table with the
#! tandem/firecracker ratio when both are given. Bounded: every wait inside
#! times out after 10 s, and the whole run after 15 minutes.
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=bench-api
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

RUNS=5 CYCLES=1000 OUT=$ROOT/target/bench/api.txt
VMM_ARGS=() EXTRA_ARGS=() HALT=()

while [ $# -gt 0 ]; do
    case $1 in
        --vmm)
            case $2 in
                firecracker) VMM_ARGS+=(--vmm "firecracker=$("$ROOT/ci/peer-firecracker.sh" | tail -n 1)") ;;
                tandem) VMM_ARGS+=(--vmm "tandem=$(default_tandem x86_64)") ;;
                *=*) VMM_ARGS+=(--vmm "$2") ;;
                *) die "--vmm $2: want NAME=PATH (or firecracker, tandem)" ;;
            esac
            shift ;;
        --extra) EXTRA_ARGS+=(--extra "$2"); shift ;;
        --runs) RUNS=$2; shift ;;
        --cycles) CYCLES=$2; shift ;;
        --halt) HALT=(--halt) ;;
        --out) OUT=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done
[ ${#VMM_ARGS[@]} -gt 0 ] || die "give at least one --vmm (--help)"
[ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"
command -v python3 >/dev/null || die "python3 not found"

mkdir -p "$(dirname "$OUT")"
# api_bench.py kills and reaps the VMMs it starts, also on SIGTERM/SIGINT.
# timeout bounds the whole run and leads its own process group: the trap
# passes a signal to this script on to it.
BENCH_PID="" TAIL_PID=""
trap '[ -z "$BENCH_PID" ] || kill -TERM -- "-$BENCH_PID" 2>/dev/null || true
      [ -z "$TAIL_PID" ] || kill "$TAIL_PID" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
: >"$OUT"
timeout --kill-after=10 900 python3 "$ROOT/ci/api_bench.py" "${VMM_ARGS[@]}" \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} ${HALT[@]+"${HALT[@]}"} --runs "$RUNS" --cycles "$CYCLES" >"$OUT" &
BENCH_PID=$!
# Both in the background, so that a signal to this script runs its trap at once.
tail -n +1 --pid="$BENCH_PID" -f "$OUT" &
TAIL_PID=$!
status=0
wait "$BENCH_PID" || status=$?
BENCH_PID=""
wait "$TAIL_PID" || true
TAIL_PID=""
log "output kept in $OUT"
exit "$status"
