# shellcheck shell=bash
# Sourced by ci/kvm-unit-tests.sh: reading the suite's unittests.cfg (its
# entries, `check` conditions, memory sizes, the QEMU parameters tandem
# has no equivalent for) and a test log's one-line summary. memory_of
# falls back on the caller's DEFAULT_MEMORY_MIB.

# unittests.cfg as one line per test, fields split by \037 (tabs would
# merge empty fields in `read`): name file smp test_args qemu_params groups
# arch timeout check disabled_if kvmtool_params. Outer quotes are stripped.
parse_cfg() {
    awk '
        function flush() {
            if (name != "")
                printf "%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\n", name, v["file"],
                    v["smp"], v["test_args"], v["qemu_params"], v["groups"],
                    v["arch"], v["timeout"], v["check"], v["disabled_if"], v["kvmtool_params"]
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

# tandem's flag for the PIT QEMU's machine has unless qemu_params say
# `pit=off` (the suite's realmode test counts on one; tandem has none by
# default).
pit_flag() {
    case $1 in *pit=off*) ;; *) echo --legacy-pit ;; esac
}

# tandem's flags for what kvmtool_params ask of kvmtool: the PMU tests'
# `--pmu` is tandem's flag too (aarch64).
vmm_flags_of_kvmtool() {
    case " $1 " in *" --pmu "*) echo --pmu ;; esac
}

# What of qemu_params tandem cannot honour (the GIC version is the host's).
ignored_params() {
    sed -e 's/-m [0-9]*[kKmMgG]\{0,1\}//' -e 's/-enable-kvm//' -e 's/-machine gic-version=[0-9]//' \
        -e 's/-machine pit=off//' \
        -e 's/^ *//; s/ *$//; s/  */ /g' <<<"$1"
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
    [ -n "$line" ] || line=$(grep -a -v -e '^tandem: ' -e '^[[:space:]]*$' "$log" | tail -n 1 |
        sed 's/tandem: .*//' | tr -d '\r' || true)
    echo "${line:-no output}"
}
