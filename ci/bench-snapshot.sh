#!/usr/bin/env bash
#! Snapshot benchmark: tandem vs Firecracker v1.16.1 through the same API
#! client (ci/snapshot_bench.py): PUT /snapshot/create time of a paused VM,
#! state and memory file sizes, PUT /snapshot/load (resume_vm) time in a new
#! process and the time until the restored guest prints again; the payload
#! is ci/tiny-pvh.py --count, which runs on this machine's PVM KVM.
#! Usage: ci/bench-snapshot.sh [--runs N] [--mem MIB] [--vmm NAME[=PATH]]...
#!   --vmm firecracker | tandem | NAME=PATH   (default: both, Firecracker built
#!                                             by ci/peer-firecracker.sh)
#!   --runs N     measured runs per VMM (default 10); --mem MIB (default 512)
#!   --out FILE   keep the output there too (default target/bench/snapshot.txt)
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=bench-snapshot
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

RUNS=10 MEM=512 OUT=$ROOT/target/bench/snapshot.txt VMMS=()
while [ $# -gt 0 ]; do
    case $1 in
        --vmm) VMMS+=("$2"); shift ;;
        --runs) RUNS=$2; shift ;;
        --mem) MEM=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (--help)" ;;
    esac
    shift
done
[ ${#VMMS[@]} -gt 0 ] || VMMS=(firecracker tandem)
[ -c /dev/kvm ] || skip_or_fail "no /dev/kvm on this machine"
ARGS=()
for vmm in "${VMMS[@]}"; do
    case $vmm in
        firecracker) ARGS+=(--vmm "firecracker=$("$ROOT/ci/peer-firecracker.sh" | tail -n 1)") ;;
        tandem) ARGS+=(--vmm "tandem=$("$ROOT/ci/build-static.sh" x86_64 | tail -n 1)") ;;
        *=*) ARGS+=(--vmm "$vmm") ;;
        *) die "--vmm $vmm: want NAME=PATH (or firecracker, tandem)" ;;
    esac
done
mkdir -p "$(dirname "$OUT")"
timeout --kill-after=10 1800 python3 "$ROOT/ci/snapshot_bench.py" "${ARGS[@]}" \
    --runs "$RUNS" --mem "$MEM" | tee "$OUT"
