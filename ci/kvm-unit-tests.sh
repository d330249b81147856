#!/usr/bin/env bash
#! Runs kvm-unit-tests under tandem, one result line per test:
#!   KUT <test> PASS|FAIL|SKIP <detail>
#! then a "KUT total" line. The suite is built once from the pinned source
#! (../shared/peers/kvm-unit-tests-1da1819e.tar.xz; CI has it too) into a
#! cache outside the repo (niced, under a minute): x86_64 natively
#! (`./configure --arch=x86_64`), arm64 with Debian's cross compiler
#! (`--arch=arm64 --cross-prefix=aarch64-linux-gnu- --target=qemu`).
#! Tests come from the suite's <arch>/unittests.cfg: `file`, `smp` (--cpus
#! and NR_CPUS; $MAX_SMP is this machine's CPU count, 4 in an emulated host), `test_args` (the command
#! line; x86 tests skip the first word as argv[0], so the file name goes
#! first there), `-m` in `qemu_params` (--memory; 128 MiB otherwise, QEMU's
#! default), `gic-version=N` in it (aarch64: the test runs only on a GICv<N>
#! host), `arch`, `check`, `groups` (nodefault tests only when their group
#! is asked for; the migration group needs the suite's migration harness,
#! which this runner does not have), `timeout` and `--pmu` in
#! `kvmtool_params` (aarch64: tandem's --pmu, kvmtool's flag). The rest of `qemu_params`
#! (-cpu models, -device, -machine options) has no tandem equivalent: it
#! is named in the result's detail. Each test gets its environment
#! (NR_CPUS, MEMSIZE; x86 also TEST_DEVICE=0: no fw_cfg, no pc-testdev;
#! aarch64 also the ERRATA_<commit>=y of errata.txt the host kernel has, as
#! the suite's runner sets them) as the initrd.
#!   x86_64: booted as multiboot with --debug-exit (the status written
#!     there is the test's), on this machine's /dev/kvm, or with --emulated
#!     inside one emulated x86_64 KVM host (nested SVM).
#!   aarch64: inside one emulated KVM host (GICv3 with ITS, or GICv2), each
#!     .flat booted as a raw binary; the test's status is its
#!     `EXIT: STATUS=N` line (it then powers off through PSCI).
#!   An emulated host (ci/emulated-host.sh) runs the whole plan with
#!   ci/kvm-unit-tests-host.sh; with --with-qemu it runs every test under
#!   QEMU too, with KVM, as the suite's own <arch>/run does, printed as
#!   `QEMU <test> …` lines beside tandem's: x86_64, this machine's QEMU over
#!   the 9p share (pc-testdev, isa-debug-exit, pci-testdev and the cfg's
#!   qemu_params); aarch64, the arm64 QEMU of ci/arm64-qemu-root.sh over
#!   the same share (virt with the host's GIC, -cpu host, chr-testdev,
#!   pci-testdev and the cfg's qemu_params), judged by the same EXIT line.
#! Status 1 is a pass, 77 a skip (the suite writes 38), anything else (or
#! none) a fail.
#! Logs: target/kvm-unit-tests/logs/<flavour>/<test>[.qemu].log; an
#! emulated host's whole log is target/e2e-logs/kut-<flavour>.log.
#! Usage: ci/kvm-unit-tests.sh [--arch A] [--gic N] [--tandem PATH] [--suite DIR]
#!                             [--group G] [--timeout S] [TEST...]
#!   --arch A       x86_64 (default) or aarch64
#!   --gic N        aarch64: the emulated host's GIC, 3 (default, with ITS) or 2
#!   --emulated     x86_64: in an emulated host rather than on this machine
#!   --with-qemu    in an emulated host, QEMU beside tandem
#!   --host-smp N   an emulated host's CPUs (default 2; 1 leaves a core free)
#!   --tandem PATH  the binary (x86_64: default target/release/tandem, else
#!                  target/debug/tandem; aarch64: ci/build-static.sh's, built)
#!   --suite DIR    an already built kvm-unit-tests tree for A (skips the build)
#!   --build-only   build the suite into the cache, print its path, run nothing
#!   --group G      only tests in group G (nodefault ones included)
#!   --timeout S    cap every test's timeout at S seconds (default: the cfg's,
#!                  90 s if none; in an emulated host at least 60 s, it
#!                  being slow)
#!   --min-timeout S  raise every test's timeout to at least S seconds
#!                  (default 60 in an emulated host; the nodefault
#!                  micro-bench wants several minutes there)
#!   --expect FILE  afterwards, fail (exit 1) unless every test FILE lists for
#!                  this host flavour (x86_64, x86_64-emulated,
#!                  aarch64-gicv3, aarch64-gicv2)
#!                  passed; FILE lines are `<flavour> <test>` (CI:
#!                  ci/kvm-unit-tests.expected)
#!   --only-expected  run just the tests FILE lists for this flavour
#!   TEST...        only these tests (names from unittests.cfg)
#! Environment:
#!   TANDEM_PEERS_CACHE  cache folder (default /var/cache/tandem-peers)
#!   TANDEM_PEERS_DIR    peers' folder (default <repo>/../shared/peers)
#! Exit status: 0 when every test ran (whatever its result, but see
#! --expect), 1 on a harness error, 77 when it cannot run here (no /dev/kvm, no emulator; a failure
#! when CI=true).
set -euo pipefail
# shellcheck disable=SC2034 # used by lib.sh
LOG_PREFIX=kvm-unit-tests
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=ci/kvm-unit-tests-cfg.sh
. "$ROOT/ci/kvm-unit-tests-cfg.sh"

SOURCE=kvm-unit-tests-1da1819e
PEERS=${TANDEM_PEERS_DIR:-$ROOT/../shared/peers}
CACHE=${TANDEM_PEERS_CACHE:-/var/cache/tandem-peers}
DEFAULT_MEMORY_MIB=128
DEFAULT_TIMEOUT=90
# The emulated aarch64 host runs nested guests far slower than hardware.
EMULATED_MIN_TIMEOUT=60
# A test that skipped everything writes 77 >> 1 (lib/report.c), so that
# the status (38 << 1) | 1 is 77, the usual "skipped".
SKIP_EXIT_STATUS=77
ARCH=x86_64 GIC=3 TANDEM="" SUITE="" GROUP="" TIMEOUT_CAP="" BUILD_ONLY=0 ONLY=()
EXPECT_FILE="" ONLY_EXPECTED=0 EMULATED=0 WITH_QEMU=0 HOST_SMP=2 MIN_TIMEOUT=""
# $MAX_SMP in the cfg: this machine's CPUs when run here; 4 in an emulated
# host (2 CPUs, but vCPU threads may outnumber them, and the arm64 ITS
# tests want 4).
MAX_SMP=$(nproc)

while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift ;;
        --gic) GIC=$2; shift ;;
        --tandem) TANDEM=$2; shift ;;
        --suite) SUITE=$2; shift ;;
        --build-only) BUILD_ONLY=1 ;;
        --group) GROUP=$2; shift ;;
        --timeout) TIMEOUT_CAP=$2; shift ;;
        --min-timeout) MIN_TIMEOUT=$2; shift ;;
        --expect) EXPECT_FILE=$2; shift ;;
        --only-expected) ONLY_EXPECTED=1 ;;
        --emulated) EMULATED=1 ;;
        --with-qemu) WITH_QEMU=1 EMULATED=1 ;;
        --host-smp) HOST_SMP=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (--help)" ;;
        *) ONLY+=("$1") ;;
    esac
    shift
done
check_arch "$ARCH"
case $GIC in 2|3) ;; *) die "--gic takes 2 or 3" ;; esac
case $ARCH in
    x86_64) TESTDIR=x86 CFG_ARCH=x86_64 CONFIGURE=(--arch=x86_64) FLAVOUR=x86_64 ;;
    aarch64) TESTDIR=arm CFG_ARCH=arm64 EMULATED=1 FLAVOUR=aarch64-gicv$GIC
             CONFIGURE=(--arch=arm64 --cross-prefix=aarch64-linux-gnu- --target=qemu) ;;
esac
if [ "$EMULATED" = 1 ]; then
    # shellcheck disable=SC2034 # read by the cfg's smp expressions (eval)
    MAX_SMP=4
    [ "$ARCH" = aarch64 ] || FLAVOUR=x86_64-emulated
    MIN_TIMEOUT=${MIN_TIMEOUT:-$EMULATED_MIN_TIMEOUT}
fi
OUT=$ROOT/target/kvm-unit-tests
LOGS=$OUT/logs/$FLAVOUR
if [ -n "$EXPECT_FILE" ]; then
    [ -f "$EXPECT_FILE" ] || die "--expect: no file $EXPECT_FILE"
    mapfile -t EXPECTED < <(awk -v f="$FLAVOUR" '$1 == f { print $2 }' "$EXPECT_FILE")
    [ "$ONLY_EXPECTED" = 0 ] || ONLY+=("${EXPECTED[@]}")
fi
[ "$ONLY_EXPECTED" = 0 ] || [ -n "$EXPECT_FILE" ] || die "--only-expected needs --expect FILE"

# Builds the suite for ARCH into the cache once; prints the tree's path.
build_suite() {
    local dir=$CACHE/$SOURCE-$ARCH tarball=$PEERS/$SOURCE.tar.xz
    if [ -f "$dir/.built" ]; then
        echo "$dir"
        return
    fi
    [ -f "$tarball" ] || die "missing $tarball"
    log "building $SOURCE for $ARCH in $dir (niced, under a minute)"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    tar -xJf "$tarball" -C "$dir.tmp" --strip-components=1
    (cd "$dir.tmp" && ./configure "${CONFIGURE[@]}" >&2 && nice make -j2 >&2) ||
        die "building kvm-unit-tests failed"
    touch "$dir.tmp/.built"
    mv "$dir.tmp" "$dir"
    echo "$dir"
}

# Prints why test NAME is not run here (a SKIP line's detail), or nothing.
not_run_because() {
    local name=$1 params=$2 groups=$3 arch=$4 check=$5 disabled_if=$6 unmet want
    if [ ${#ONLY[@]} -gt 0 ] && ! [[ " ${ONLY[*]} " == *" $name "* ]]; then echo -; return; fi
    if [ -n "$GROUP" ] && ! [[ " $groups " == *" $GROUP "* ]]; then echo -; return; fi
    if [ -z "$GROUP" ] && [ ${#ONLY[@]} -eq 0 ] && [[ " $groups " == *" nodefault "* ]]; then
        echo "nodefault (run with --group or by name)"; return
    fi
    if [ -n "$arch" ] && [ "$arch" != "$CFG_ARCH" ]; then echo "$arch only"; return; fi
    if [[ " $groups " == *" migration "* ]]; then
        echo "needs the suite's migration harness (QEMU's), which this runner lacks"; return
    fi
    if [ -n "$disabled_if" ] && TARGET=qemu eval "$disabled_if"; then
        echo "disabled here ($disabled_if)"; return
    fi
    want=$(sed -n 's/.*gic-version=\([0-9]\).*/\1/p' <<<"$params")
    if [ "$ARCH" = aarch64 ] && [ -n "$want" ] && [ "$want" != "$GIC" ]; then
        echo "needs a GICv$want host (--gic $want)"; return
    fi
    # In an emulated host its own /sys decides (ci/kvm-unit-tests-host.sh).
    [ "$EMULATED" = 1 ] || unmet_check "$check"
}

# The result line (PREFIX: KUT for tandem, QEMU for QEMU) of a test from how
# it ended: TIMED_OUT (1 or 0), CODE (the status the test reported, empty
# when it reported none), WHY_NONE (what to say then) and LOG.
judge() {
    local prefix=$1 name=$2 timed_out=$3 code=$4 why_none=$5 log=$6 params=$7 timeout=$8
    local detail extra first_fail
    detail=$(summary_of "$log")
    # QEMU takes the cfg's parameters; tandem has no equivalent for some.
    extra=$([ "$prefix" = QEMU ] || ignored_params "$params")
    [ -z "$extra" ] || detail+=" [ignored: $extra]"
    if [ "$timed_out" = 1 ]; then
        echo "$prefix $name FAIL timeout after ${timeout}s; $detail"
    elif [ -z "$code" ]; then
        echo "$prefix $name FAIL $why_none"
    elif [ "$code" -eq 1 ]; then
        echo "$prefix $name PASS $detail"
    elif [ "$code" -eq "$SKIP_EXIT_STATUS" ]; then
        echo "$prefix $name SKIP $detail"
    else
        first_fail=$(grep -a -m1 '^FAIL:' "$log" || true)
        echo "$prefix $name FAIL status $code; $detail${first_fail:+; first $first_fail}"
    fi
}

# STATUS when tandem's LOG says the guest's debug-exit write made it (not
# an error or a crash that happens to exit the same), else nothing.
debug_exit_code() {
    if grep -aq "to the debug-exit port: exit status $1[[:space:]]*$" "$2"; then echo "$1"; fi
}

# x86_64 here: runs one test on this machine's KVM and judges it.
run_local() {
    local name=$1 file=$2 smp=$3 memory=$4 timeout=$5 args=$6 params=$7
    local env=$OUT/env/$name log=$LOGS/$name.log status=0 code="" why
    printf 'NR_CPUS=%s\nMEMSIZE=%s\nTEST_DEVICE=0\n' "$smp" "$(mib_of "$memory")" >"$env"
    # pit_flag prints one flag or none.
    # shellcheck disable=SC2046
    timeout -k 5 "$timeout" "$TANDEM" run --kernel "$SUITE/$TESTDIR/$file" --initrd "$env" \
        --debug-exit $(pit_flag "$params") --cpus "$smp" --memory "$memory" --cmdline "$file${args:+ $args}" \
        </dev/null >"$log" 2>&1 || status=$?
    code=$(debug_exit_code "$status" "$log")
    why=$(grep -a '^tandem: error' "$log" | head -n 1 || true)
    judge KUT "$name" "$([ "$status" -eq 124 ] || [ "$status" -eq 137 ] && echo 1 || echo 0)" "$code" \
        "tandem exited $status without a debug-exit write: ${why:-see $log}" "$log" "$params" "$timeout"
}

# A planned run's status and result code from its part of the emulated
# host's log (HOST_LOG) into LOG; sets STATUS (tandem's or QEMU's exit
# status, empty if it never ran), CODE (the test's reported status, empty
# if none) and WHY_NONE.
read_planned_run() {
    local vmm=$1 name=$2 log=$3
    awk -v b="KUT-BEGIN $vmm $name" -v e="KUT-END $vmm $name " '
        { gsub(/\r/, "") } $0 == b { on = 1; next } index($0, e) == 1 { on = 0 } on' "$HOST_LOG" >"$log"
    STATUS=$(sed -n "s/^KUT-END $vmm $name status=\([0-9]*\).*/\1/p" "$HOST_LOG" | tail -n 1)
    CODE="" WHY_NONE="never ran: the emulated host stopped first (see $HOST_LOG)"
    [ -n "$STATUS" ] || return 0
    if grep -aq '^KUT-UNMET ' "$log"; then
        CODE=$SKIP_EXIT_STATUS
        return 0
    fi
    case $ARCH/$vmm in
        # QEMU prints the line on its PL011 before chr-testdev ends it.
        aarch64/*) CODE=$(sed -n 's/^EXIT: STATUS=\([0-9]*\).*/\1/p' "$log" | tail -n 1)
                   WHY_NONE="$([ "$vmm" = qemu ] && echo QEMU || echo tandem) exited $STATUS without an EXIT: STATUS line" ;;
        x86_64/tandem)
            CODE=$(debug_exit_code "$STATUS" "$log")
            WHY_NONE="tandem exited $STATUS without a debug-exit write" ;;
        # QEMU's status is (v << 1) | 1 after a debug-exit write, so odd.
        x86_64/qemu) [ $((STATUS % 2)) = 0 ] || CODE=$STATUS
                     WHY_NONE="QEMU exited $STATUS without a debug-exit write" ;;
    esac
    local error
    error=$(grep -a -m1 '^tandem: error\|^qemu-system' "$log" || true)
    WHY_NONE+=": ${error:-see $log}"
}

# Every planned test in one emulated host (under tandem, and under QEMU
# with --with-qemu), then each judged from its part of the host's log.
run_emulated_plan() {
    local plan=$1 adds=() host_args=() file total=0 vmm name timeout params
    while IFS='|' read -r _ _ file _ _ timeout _; do
        total=$((total + timeout + 5))
        adds+=(--add "$SUITE/$TESTDIR/$file:/kut/$file")
    done <"$plan"
    [ "$total" -gt 0 ] || return 0
    adds+=(--add "$plan:/kut/plan" --add "$SUITE/errata.txt:/kut/errata.txt")
    case $ARCH in
        aarch64) host_args=(--gic "$GIC") ;;
        # Room for the tests that ask for 4 GiB.
        x86_64) host_args=(--memory 6144) ;;
    esac
    if [ "$WITH_QEMU" = 1 ]; then
        host_args+=(--share-root)
        # The arm64 host runs QEMU from this folder, seen through the share.
        if [ "$ARCH" = aarch64 ]; then
            "$ROOT/ci/arm64-qemu-root.sh" | tail -n 1 >"$plan.qemu-root" ||
                die "ci/arm64-qemu-root.sh could not build the arm64 QEMU"
            adds+=(--add "$plan.qemu-root:/kut/qemu-root")
        fi
    fi
    "$ROOT/ci/emulated-host.sh" "$ARCH" --name "kut-$FLAVOUR" --smp "$HOST_SMP" "${host_args[@]}" \
        --tandem "$TANDEM" --host-script "$ROOT/ci/kvm-unit-tests-host.sh" \
        --timeout $((total + 120)) --no-guest-marker --expect KUT-PLAN-DONE \
        "${adds[@]}" >&2 || log "the emulated host's run failed; judging what it printed"
    HOST_LOG=$ROOT/target/e2e-logs/kut-$FLAVOUR.log
    while IFS='|' read -r vmm name _ _ _ timeout _; do
        local log=$LOGS/$name.log prefix=KUT
        [ "$vmm" = tandem ] || log=$LOGS/$name.$vmm.log prefix=QEMU
        read_planned_run "$vmm" "$name" "$log"
        params=$(grep -a -m1 "^$name|" "$plan.params" | cut -d'|' -f2-)
        judge "$prefix" "$name" "$([ "$STATUS" = 124 ] && echo 1 || echo 0)" "$CODE" "$WHY_NONE" \
            "$log" "$params" "$timeout"
    done <"$plan"
}

# Decides what to do with one cfg entry: a SKIP line, a run here (x86_64),
# or lines of the emulated host's plan: `vmm|name|file|cpus|memory|timeout|
# check|environment|VMM arguments|command line` (ci/kvm-unit-tests-host.sh).
take_test() {
    local name=$1 file=$2 smp=$3 args=$4 params=$5 groups=$6 arch=$7 timeout=$8 check=$9 disabled_if=${10}
    local kvmtool=${11} why memory
    why=$(not_run_because "$name" "$params" "$groups" "$arch" "$check" "$disabled_if")
    case $why in
        -) return ;;
        ?*) echo "KUT $name SKIP $why"; return ;;
    esac
    [ -f "$SUITE/$TESTDIR/$file" ] || { echo "KUT $name FAIL $file was not built"; return; }
    smp=$(eval "echo ${smp:-1}")
    timeout=${timeout%s}
    timeout=${timeout:-$DEFAULT_TIMEOUT}
    if [ -n "$MIN_TIMEOUT" ] && [ "$timeout" -lt "$MIN_TIMEOUT" ]; then timeout=$MIN_TIMEOUT; fi
    if [ -n "$TIMEOUT_CAP" ] && [ "$timeout" -gt "$TIMEOUT_CAP" ]; then timeout=$TIMEOUT_CAP; fi
    memory=$(memory_of "$params")
    # Evaluated as run_tests.sh does (one test's args hold `date +%s`).
    args=$(eval "echo $args")
    if [ "$EMULATED" = 0 ]; then
        run_local "$name" "$file" "$smp" "$memory" "$timeout" "$args" "$params"
        return
    fi
    echo "$name|$params" >>"$PLAN.params"
    local env run="$name|$file|$smp|$memory|$timeout|$check"
    env="NR_CPUS=$smp MEMSIZE=$(mib_of "$memory")"
    case $ARCH in
        aarch64) echo "tandem|$run|$env|$(vmm_flags_of_kvmtool "$kvmtool")|$args" >>"$PLAN"
                 [ "$WITH_QEMU" = 0 ] ||
                     echo "qemu|$run|$env|$(tr '|' ' ' <<<"$params")|$args" >>"$PLAN" ;;
        x86_64)
            # The suite's x86 tests skip argv[0]: QEMU's multiboot puts the
            # file name first, tandem is given it.
            echo "tandem|$run|$env TEST_DEVICE=0|--debug-exit $(pit_flag "$params")|$file${args:+ $args}" >>"$PLAN"
            [ "$WITH_QEMU" = 0 ] ||
                echo "qemu|$run|$env|$(tr '|' ' ' <<<"$params")|$args" >>"$PLAN" ;;
    esac
}

if [ "$BUILD_ONLY" = 1 ]; then
    build_suite
    exit 0
fi
if [ "$EMULATED" = 0 ]; then
    [ "$(uname -m)" = x86_64 ] || die "x86_64 tests run on an x86_64 machine (got $(uname -m))"
    if ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then skip_or_fail "no usable /dev/kvm"; fi
    if [ -z "$TANDEM" ]; then
        for candidate in "$ROOT/target/release/tandem" "$ROOT/target/debug/tandem"; do
            if [ -x "$candidate" ]; then TANDEM=$candidate; break; fi
        done
        [ -n "$TANDEM" ] || die "no tandem binary: cargo build, or --tandem PATH"
    fi
else
    command -v "$(qemu_binary "$ARCH")" >/dev/null ||
        skip_or_fail "$(qemu_binary "$ARCH") not installed (ci/setup-host.sh)"
    if [ -z "$TANDEM" ]; then
        "$ROOT/ci/build-static.sh" "$ARCH" >/dev/null
        TANDEM=$(default_tandem "$ARCH")
    fi
fi
[ -n "$SUITE" ] || SUITE=$(build_suite | tail -n 1)
[ -f "$SUITE/$TESTDIR/unittests.cfg" ] || die "$SUITE has no $TESTDIR/unittests.cfg"
mkdir -p "$LOGS" "$OUT/env"
PLAN=$OUT/plan-$FLAVOUR
: >"$PLAN"
: >"$PLAN.params"
log "tandem $TANDEM, suite $SUITE, host flavour $FLAVOUR$([ "$WITH_QEMU" = 0 ] || echo ", QEMU beside")"

RESULTS=$OUT/results-$FLAVOUR.txt
{
    parse_cfg "$SUITE/$TESTDIR/unittests.cfg" |
        while IFS=$'\037' read -r name file smp args params groups arch timeout check disabled_if kvmtool; do
            take_test "$name" "$file" "$smp" "$args" "$params" "$groups" "$arch" "$timeout" "$check" "$disabled_if" "$kvmtool"
        done
    [ "$EMULATED" = 0 ] || run_emulated_plan "$PLAN"
} | tee "$RESULTS"
for prefix in KUT $([ "$WITH_QEMU" = 0 ] || echo QEMU); do
    for result in PASS FAIL SKIP; do
        printf ' %s=%s' "$result" "$(grep -c "^$prefix [^ ]* $result" "$RESULTS" || true)"
    done | sed "s/^/$prefix total/"
    echo
done
[ -n "$EXPECT_FILE" ] || exit 0
unmet=0
for name in "${EXPECTED[@]}"; do
    grep -q "^KUT $name PASS" "$RESULTS" && continue
    echo "KUT-EXPECT $name should pass on $FLAVOUR ($EXPECT_FILE): $(grep "^KUT $name " "$RESULTS" || echo not run)"
    unmet=$((unmet + 1))
done
echo "KUT-EXPECT ${#EXPECTED[@]} tests expected to pass on $FLAVOUR, $unmet did not"
[ "$unmet" = 0 ]
