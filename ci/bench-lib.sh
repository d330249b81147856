#!/usr/bin/env bash
#! Helpers shared by ci/bench-boot.sh and ci/bench-io.sh on this machine;
#! sourced, never run. A benchmark writes `BENCH key=value …` lines (one per
#! run; run=0 is a warm-up) to a results file; these helpers summarise them
#! and record the conditions of the measurement.

# Median of KEY over the BENCH lines of FILE that carry every word of FILTER
# ("vmm=tandem kernel=vmlinux"), warm-up runs left out; "n/a" when none.
bench_median() {
    awk -v filter="$2" -v key="$3" '
        $1 != "BENCH" { next }
        {
            split("", have)
            for (i = 2; i <= NF; i++) have[$i] = 1
            if ("run=0" in have) next
            n = split(filter, want, " ")
            for (j = 1; j <= n; j++) if (!(want[j] in have)) next
            for (i = 2; i <= NF; i++)
                if (index($i, key "=") == 1) {
                    v = substr($i, length(key) + 2)
                    if (v ~ /^-?[0-9.]+$/) vals[++count] = v + 0
                }
        }
        END {
            if (!count) { print "n/a"; exit }
            for (i = 2; i <= count; i++)
                for (j = i; j > 1 && vals[j - 1] > vals[j]; j--) { t = vals[j]; vals[j] = vals[j - 1]; vals[j - 1] = t }
            m = count % 2 ? vals[(count + 1) / 2] : (vals[count / 2] + vals[count / 2 + 1]) / 2
            printf "%.6g\n", m
        }' "$1"
}

# How many runs matched FILTER (warm-ups left out).
bench_count() {
    awk -v filter="$2" '$1 == "BENCH" && !/ run=0( |$)/ {
        n = split(filter, want, " "); ok = 1
        for (j = 1; j <= n; j++) if (index(" " $0 " ", " " want[j] " ") == 0) ok = 0
        c += ok } END { print c + 0 }' "$1"
}

# A / B to two decimals, "n/a" unless both are numbers.
bench_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f\n", a / b; else print "n/a" }'
}

# X / Y scaled by SCALE, to NDIGITS digits ("n/a" unless numbers).
bench_per() {
    awk -v x="$1" -v y="$2" -v s="${3:-1}" -v d="${4:-1}" 'BEGIN {
        if (x ~ /^-?[0-9.]+$/ && y ~ /^[0-9.]+$/ && y + 0 > 0) printf "%.*f\n", d, x * s / y; else print "n/a" }'
}

# Number of QEMU system emulators running on this machine.
bench_qemu_count() { pgrep -c qemu-system || true; }

# Waits (up to TRIES minutes) until no QEMU runs here, so that other work on
# the same cores does not skew the numbers; says so when it gives up.
bench_wait_quiet() {
    local tries=$1 n
    while n=$(bench_qemu_count); [ "$n" -gt 0 ] && [ "$tries" -gt 0 ]; do
        log "$n other QEMU process(es) running; waiting a minute ($tries tries left)"
        sleep 60
        tries=$((tries - 1))
    done
    [ "$(bench_qemu_count)" -eq 0 ] || log "measuring under load: $(bench_qemu_count) other QEMU process(es)"
}

# Samples the machine's load while a benchmark runs: every 15 s, the 1-minute
# load average and the QEMU count minus OWN (the benchmark's own QEMUs).
# Stop it with bench_load_stop; it leaves a LOAD line in FILE.
bench_load_start() {
    local file=$1 own=$2
    (
        max_others=0 sum=0 samples=0
        trap 'echo "LOAD samples=$samples mean_load1=$(bench_per "$sum" "$samples" 1 2) max_other_qemu=$max_others" >>"$file"; exit 0' TERM
        while :; do
            others=$(($(bench_qemu_count) - own))
            [ "$others" -le "$max_others" ] || max_others=$others
            sum=$(awk -v s="$sum" '{ print s + $1 }' /proc/loadavg)
            samples=$((samples + 1))
            sleep 15 &
            wait $!
        done
    ) &
    LOAD_SAMPLER=$!
}

bench_load_stop() {
    [ -z "${LOAD_SAMPLER:-}" ] || { kill "$LOAD_SAMPLER" 2>/dev/null; wait "$LOAD_SAMPLER" 2>/dev/null || true; }
    LOAD_SAMPLER=""
}

# The MACHINE line: when and where the numbers were taken.
bench_machine_line() {
    echo "MACHINE date=$(date -u +%Y-%m-%dT%H:%MZ) kernel=$(uname -r) kvm=$(
        if [ -d /sys/module/kvm_pvm ]; then echo pvm; elif [ -d /sys/module/kvm_amd ]; then echo kvm_amd;
        elif [ -d /sys/module/kvm_intel ]; then echo kvm_intel; else echo none; fi) cpus=$(nproc)" \
        "cpu=\"$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)\"" \
        "mem_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)" \
        "qemu=\"$(qemu-system-x86_64 --version 2>/dev/null | head -n 1)\"" \
        "tandem_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(
            git -C "$ROOT" diff --quiet HEAD -- src arch devices 2>/dev/null || echo +dirty)"
}

# Copies an initramfs to DEST padded with zeros to a multiple of 4 KiB (the
# kernel skips the padding). QEMU microvm (acpi=on: SeaBIOS) loads a PVH
# guest's initrd so that it ends at the top of low RAM, where the firmware's
# ACPI tables are; unless the size is page-aligned, the initrd's last page
# overwrites the DSDT and the guest hangs after "ACPI: Core revision". Both
# VMMs get the same padded file.
bench_padded_initramfs() {
    local size
    cp "$1" "$2"
    size=$(stat -c %s "$2")
    truncate -s $(((size + 4095) / 4096 * 4096)) "$2"
}

# Appends what `CMD...` prints to FILE (a results file the command reads
# while it summarises, hence the temporary file).
bench_append_summary() {
    local file=$1
    shift
    "$@" >"$file.summary"
    cat "$file.summary" >>"$file" && rm -f "$file.summary"
}
