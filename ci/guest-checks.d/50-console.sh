# shellcheck shell=dash
# console: the kernel's only console is hvc0 (virtio-console), so this
# line and the boot marker before it went out through virtio.
check_console() {
    local active
    active=$(cat /sys/class/tty/console/active 2>/dev/null)
    if [ ! -c /dev/hvc0 ]; then
        check_result console FAIL "no /dev/hvc0 (active consoles: '$active')"
    elif [ "$active" != hvc0 ]; then
        check_result console FAIL "active consoles '$active', expected only hvc0"
    else
        check_result console PASS "active console hvc0"
    fi
}
check_wanted console && check_console
