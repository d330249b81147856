# shellcheck shell=dash
# api-clock (ci/api-e2e.sh): the guest's heartbeat around the host's pause.
# First sets kernel.ctrl-alt-del to 1, so that a Ctrl+Alt+Del (the API's
# SendCtrlAltDel) reboots at once instead of signalling PID 1, which this
# busybox script ignores. Then prints API-IDLE-READY and API-TICK <n>
# uptime=<s> once a second until the host writes TANDEM-API-GO at 90 MiB
# into /dev/vda (the host pauses the VM for 60 s in between, then resumes
# it). Passes when no two consecutive ticks are more than 15 s of guest
# time apart: tandem holds guest time still while paused, so the pause
# must not show. The host checks that no tick appeared during the pause.
API_GO_BLOCK=23040 # 90 MiB in 4 KiB blocks
API_MAX_GAP=15

api_go_seen() {
    [ "$(dd if=/dev/vda bs=4096 skip=$API_GO_BLOCK count=1 iflag=direct 2>/dev/null | head -c 13)" = TANDEM-API-GO ]
}

check_api_clock() {
    local n=0 uptime gap
    echo 1 >/proc/sys/kernel/ctrl-alt-del
    if [ ! -b /dev/vda ]; then check_result api-clock FAIL "no /dev/vda to wait on"; return; fi
    : >/tmp/ticks
    echo "API-IDLE-READY ctrl-alt-del=$(cat /proc/sys/kernel/ctrl-alt-del)"
    while ! api_go_seen; do
        n=$((n + 1))
        if [ "$n" -gt 1200 ]; then check_result api-clock FAIL "no go from the host after $n ticks"; return; fi
        read -r uptime _ </proc/uptime
        echo "$uptime" >>/tmp/ticks
        echo "API-TICK $n uptime=$uptime"
        sleep 1
    done
    gap=$(awk 'NR > 1 && $1 - p > m { m = $1 - p } { p = $1 } END { printf "%.2f", m }' /tmp/ticks)
    if [ "$n" -lt 2 ]; then
        check_result api-clock FAIL "only $n ticks before the go"
    elif awk -v g="$gap" -v max="$API_MAX_GAP" 'BEGIN { exit !(g <= max) }'; then
        check_result api-clock PASS "$n ticks, largest gap ${gap} s of guest time (at most $API_MAX_GAP)"
    else
        check_result api-clock FAIL "$n ticks, a gap of ${gap} s of guest time: the pause showed"
    fi
}
check_wanted api-clock && check_api_clock
