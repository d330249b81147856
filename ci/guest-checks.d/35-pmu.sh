# shellcheck shell=dash
# pmu: the guest's perf driver found the PMUv3 tandem gives with --pmu
# (aarch64): the device tree's arm,armv8-pmuv3 node and its PPI, probed
# into an event source with counters on every CPU.
check_pmu() {
    local dev="" found counters
    for found in /sys/bus/event_source/devices/armv8*; do
        [ -d "$found" ] && dev=$found
    done
    if [ -z "$dev" ]; then
        check_result pmu FAIL "no armv8 PMU event source ($(ls /sys/bus/event_source/devices | tr '\n' ' '))"
        return
    fi
    counters=$(dmesg | sed -n 's/.*hw perfevents: enabled with .* PMU driver, \([0-9]*\) counters.*/\1/p' | head -n 1)
    if [ -z "$counters" ]; then
        check_result pmu FAIL "$(basename "$dev") without counters: $(dmesg | grep -i -m1 'perf\|pmu')"
    else
        check_result pmu PASS "$(basename "$dev") on CPUs $(cat "$dev/cpus" 2>/dev/null), $counters counters"
    fi
}
check_wanted pmu && check_pmu
