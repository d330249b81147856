# shellcheck shell=dash
# api-no-stall (ci/api-e2e.sh): after the pause and the checks that ran
# since, the kernel log has no line about a stall, a lockup or an unstable
# clocksource. Prints STALL-LINES=<n> and each such line (stall: …).
# api-hold: prints API-HOLD and waits for the host to end the VM
# (SendCtrlAltDel on x86_64, SIGTERM on aarch64). Last in the order.
API_STALL_PATTERN='rcu.*stall|soft lockup|hung_task|watchdog: BUG|clocksource.*unstable'

check_api_no_stall() {
    local n
    dmesg | grep -E "$API_STALL_PATTERN" >/tmp/stall.lines
    n=$(wc -l </tmp/stall.lines | tr -d ' ')
    echo "STALL-LINES=$n"
    sed 's/^/stall: /' /tmp/stall.lines
    if [ "$n" = 0 ]; then
        check_result api-no-stall PASS "no kernel log line matches '$API_STALL_PATTERN'"
    else
        check_result api-no-stall FAIL "$n kernel log lines, first: $(head -n 1 /tmp/stall.lines)"
    fi
}

hold_for_host() {
    echo "API-HOLD ctrl-alt-del=$(cat /proc/sys/kernel/ctrl-alt-del)"
    sleep 900
    echo "API-HOLD-EXPIRED: nothing ended the VM in 900 s"
}
check_wanted api-no-stall && check_api_no_stall
check_wanted api-hold && hold_for_host
