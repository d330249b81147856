#!/usr/bin/env bash
#! Runs kvm-unit-tests' x86_64 tests under tandem, one result line per test:
#!   KUT <test> PASS|FAIL|SKIP <detail>
#! then a "KUT total" line. The suite is built once from the pinned source
#! (../shared/peers/kvm-unit-tests-1da1819e.tar.xz; CI has it too) into a
#! cache outside the repo (`./configure --arch=x86_64 && make -j2`, niced,
#! about 40 s). Tests come from the suite's x86/unittests.cfg: `file`, `smp`
#! (--cpus and NR_CPUS), `test_args` (the command line, after the file name
#! the tests skip as argv[0]), `-m` in `qemu_params` (--memory; 128 MiB
#! otherwise, QEMU's default), `arch`, `check`, `groups` (nodefault tests
#! only when their group is asked for) and `timeout`. The rest of
#! `qemu_params` (-cpu models, -device, -machine) has no tandem equivalent:
#! it is named in the result's detail. Each test boots as multiboot with
#! its environment (NR_CPUS, MEMSIZE, TEST_DEVICE=0: no fw_cfg, no
#! pc-testdev) as the initrd and --debug-exit; status 1 is a pass, 77 a
#! skip (the suite writes 38), anything else (or no debug-exit write) a fail.
#! Logs: target/kvm-unit-tests/logs/<test>.log.
#! Usage: ci/kvm-unit-tests.sh [--tandem PATH] [--suite DIR] [--group G]
#!                             [--timeout S] [TEST...]
#!   --tandem PATH  the binary (default target/release/tandem, else target/debug/tandem)
#!   --suite DIR    an already built x86_64 kvm-unit-tests tree (skips the build)
#!   --build-only   build the suite into the cache, print its path, run nothing
#!   --group G      only tests in group G (nodefault ones included)
#!   --timeout S    cap every test's timeout at S seconds (default: the cfg's, 90 s if none)
#!   TEST...        only these tests (names from unittests.cfg)
#! Environment:
#!   TANDEM_PEERS_CACHE  cache folder (default /var/cache/tandem-peers)
#!   TANDEM_PEERS_DIR    peers' folder (default <repo>/../shared/peers)
#! Exit status: 0 when every test ran (whatever its result), 1 on a harness
#! error, 77 when it cannot run here (no /dev/kvm; a failure when CI=true).
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=kvm-unit-tests
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

SOURCE=kvm-unit-tests-1da1819e
PEERS=${TANDEM_PEERS_DIR:-$ROOT/../shared/peers}
CACHE=${TANDEM_PEERS_CACHE:-/var/cache/tandem-peers}
OUT=$ROOT/target/kvm-unit-tests
DEFAULT_MEMORY_MIB=128
DEFAULT_TIMEOUT=90
# A test that skipped everything writes 77 >> 1 (lib/report.c), so that
# the status (38 << 1) | 1 is 77, the usual "skipped".
SKIP_EXIT_STATUS=77
TANDEM="" SUITE="" GROUP="" TIMEOUT_CAP="" BUILD_ONLY=0 ONLY=()

while [ $# -gt 0 ]; do
    case $1 in
        --tandem) TANDEM=$2; shift ;;
        --suite) SUITE=$2; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        --group) GROUP=$2; shift ;;
        --timeout) TIMEOUT_CAP=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (--help)" ;;
        *) ONLY+=("$1") ;;
    esac
    shift
done

[ "$(uname -m)" = x86_64 ] || die "x86_64 only for now (got $(uname -m))"

# Builds the suite into the cache once; prints the tree's path.
build_suite() {
    local dir=$CACHE/$SOURCE-x86_64 tarball=$PEERS/$SOURCE.tar.xz
    if [ -f "$dir/.built" ]; then
        echo "$dir"
        return
    fi
    [ -f "$tarball" ] || die "missing $tarball"
    log "building $SOURCE for x86_64 in $dir (niced, about 40 s)"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    tar -xJf "$tarball" -C "$dir.tmp" --strip-components=1
    (cd "$dir.tmp" && ./configure --arch=x86_64 >&2 && nice make -j2 >&2) ||
        die "building kvm-unit-tests failed"
    touch "$dir.tmp/.built"
    mv "$dir.tmp" "$dir"
    echo "$dir"
}

# unittests.cfg as one line per test, fields split by \037 (tabs would
# merge empty fields in `read`): name file smp test_args qemu_params groups
# arch timeout check. Outer quotes are stripped.
parse_cfg() {
    awk '
        function flush() {
            if (name != "")
                printf "%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\n", name, v["file"],
                    v["smp"], v["test_args"], v["qemu_params"], v["groups"],
                    v["arch"], v["timeout"], v["check"]
            delete v
        }
        /^[ \t]*#/ || /^[ \t]*$/ { next }
        /^\[.*\]$/ { flush(); name = substr($0, 2, length($0) - 2); next }
        {
            key = $0; sub(/[ \t]*=.*/, "", key)
            val = $0; sub(/^[^=]*=[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
            if (val ~ /^".*"$/ || val ~ /^\x27.*\x27$/) val = substr(val, 2, length(val) - 2)
            v[key] = val
        }
        END { flush() }
    ' "$1"
}

# Prints why a test's `check` conditions do not hold here, if one does not.
unmet_check() {
    local cond path want
    for cond in $1; do
        path=${cond%%=*} want=${cond#*=}
        if [ "$(cat "$path" 2>/dev/null)" != "$want" ]; then
            echo "needs $cond"
            return
        fi
    done
}

# `-m SIZE` in qemu_params as a tandem --memory value (QEMU's are MiB by
# default, with k/M/G suffixes).
memory_of() {
    local size
    size=$(sed -n 's/.*-m \([0-9]*[kKmMgG]\{0,1\}\).*/\1/p' <<<"$1")
    echo "${size:-$DEFAULT_MEMORY_MIB}" | tr 'kmg' 'KMG'
}

# What of qemu_params tandem cannot honour.
ignored_params() {
    sed -e 's/-m [0-9]*[kKmMgG]\{0,1\}//' -e 's/-enable-kvm//' -e 's/^ *//; s/ *$//; s/  */ /g' <<<"$1"
}

# The mebibytes in a --memory value, for MEMSIZE.
mib_of() {
    local size=$1
    case $size in
        *K) echo $((${size%K} / 1024)) ;;
        *G) echo $((${size%G} * 1024)) ;;
        *M) echo "${size%M}" ;;
        *) echo "$size" ;;
    esac
}

# One line of the run's detail: the SUMMARY, else the last result line.
summary_of() {
    local log=$1 line
    line=$(grep -a -m1 '^SUMMARY:' "$log" || true)
    [ -n "$line" ] || line=$(grep -a -E '^(PASS|FAIL|SKIP):' "$log" | tail -n 1 || true)
    # Benchmarks (vmexit) print numbers, not results: their last line.
    [ -n "$line" ] || line=$(grep -a -v '^tandem: ' "$log" | tail -n 1 | sed 's/tandem: .*//' | tr -d '\r' || true)
    echo "${line:-no output}"
}

run_test() {
    local name=$1 file=$2 smp=${3:-1} args=$4 params=$5 groups=$6 arch=$7 timeout=$8 check=$9
    local memory env log status extra detail unmet first_fail
    if [ ${#ONLY[@]} -gt 0 ] && ! [[ " ${ONLY[*]} " == *" $name "* ]]; then return; fi
    if [ -n "$GROUP" ] && ! [[ " $groups " == *" $GROUP "* ]]; then return; fi
    if [ -z "$GROUP" ] && [ ${#ONLY[@]} -eq 0 ] && [[ " $groups " == *" nodefault "* ]]; then
        echo "KUT $name SKIP nodefault (run with --group or by name)"
        return
    fi
    if [ -n "$arch" ] && [ "$arch" != x86_64 ]; then
        echo "KUT $name SKIP $arch only"
        return
    fi
    unmet=$(unmet_check "$check")
    if [ -n "$unmet" ]; then
        echo "KUT $name SKIP $unmet"
        return
    fi
    [ -f "$SUITE/x86/$file" ] || { echo "KUT $name FAIL $file was not built"; return; }
    timeout=${timeout%s}
    timeout=${timeout:-$DEFAULT_TIMEOUT}
    if [ -n "$TIMEOUT_CAP" ] && [ "$timeout" -gt "$TIMEOUT_CAP" ]; then timeout=$TIMEOUT_CAP; fi
    memory=$(memory_of "$params")
    env=$OUT/env/$name
    printf 'NR_CPUS=%s\nMEMSIZE=%s\nTEST_DEVICE=0\n' "$smp" "$(mib_of "$memory")" >"$env"
    # Evaluated as run_tests.sh does (one test's args hold `date +%s`).
    args=$(eval "echo $args")
    log=$OUT/logs/$name.log
    status=0
    timeout -k 5 "$timeout" "$TANDEM" run --kernel "$SUITE/x86/$file" --initrd "$env" \
        --debug-exit --cpus "$smp" --memory "$memory" --cmdline "$file${args:+ $args}" \
        </dev/null >"$log" 2>&1 || status=$?
    detail=$(summary_of "$log")
    extra=$(ignored_params "$params")
    [ -z "$extra" ] || detail+=" [ignored: $extra]"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "KUT $name FAIL timeout after ${timeout}s; $detail"
    elif ! grep -aq "to the debug-exit port: exit status ${status}[[:space:]]*$" "$log"; then
        detail=$(grep -a '^tandem: error' "$log" | head -n 1 || true)
        echo "KUT $name FAIL tandem exited $status without a debug-exit write: ${detail:-see $log}"
    elif [ "$status" -eq 1 ]; then
        echo "KUT $name PASS $detail"
    elif [ "$status" -eq "$SKIP_EXIT_STATUS" ]; then
        echo "KUT $name SKIP $detail"
    else
        first_fail=$(grep -a -m1 '^FAIL:' "$log" || true)
        echo "KUT $name FAIL status $status; $detail${first_fail:+; first $first_fail}"
    fi
}

if [ "$BUILD_ONLY" = 1 ]; then
    build_suite
    exit 0
fi
if ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then skip_or_fail "no usable /dev/kvm"; fi
if [ -z "$TANDEM" ]; then
    for candidate in "$ROOT/target/release/tandem" "$ROOT/target/debug/tandem"; do
        if [ -x "$candidate" ]; then TANDEM=$candidate; break; fi
    done
    [ -n "$TANDEM" ] || die "no tandem binary: cargo build, or --tandem PATH"
fi
[ -n "$SUITE" ] || SUITE=$(build_suite | tail -n 1)
[ -f "$SUITE/x86/unittests.cfg" ] || die "$SUITE has no x86/unittests.cfg"
mkdir -p "$OUT/logs" "$OUT/env"
log "tandem $TANDEM, suite $SUITE"

parse_cfg "$SUITE/x86/unittests.cfg" |
    while IFS=$'\037' read -r name file smp args params groups arch timeout check; do
        run_test "$name" "$file" "$smp" "$args" "$params" "$groups" "$arch" "$timeout" "$check"
    done | tee "$OUT/results.txt"
for result in PASS FAIL SKIP; do
    printf ' %s=%s' "$result" "$(grep -c "^KUT [^ ]* $result" "$OUT/results.txt" || true)"
done | sed 's/^/KUT total/'
echo
