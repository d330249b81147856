#!/bin/sh
# shellcheck shell=dash
#! The API scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/api-e2e.sh). One tandem,
#! started Firecracker-style (`tandem --api-sock /tmp/api.sock --id e2e`)
#! and driven only through `tandem api`:
#!   api-start     machine-config (2 vCPUs, 512 MiB), boot-source (the test
#!                 guest in tandem.mode=checks), PUT /drives/vda,
#!                 PUT /network-interfaces/eth0 (tap0), PUT /metrics,
#!                 InstanceStart all answered 2xx; GET / says Running, id e2e
#!   api-pause     once the guest ticks (API-TICK, ci/guest-checks.d/05-api-idle.sh):
#!                 PATCH /vm Paused; GET / says Paused; for 60 s the console
#!                 output does not grow by a byte and FlushMetrics lines
#!                 before and after show the same exits.total
#!   api-resume    PATCH /vm Resumed; GET / says Running, ticks come again,
#!                 exits.total grows; then TANDEM-API-GO at 90 MiB in vda.img
#!                 lets the guest go on: api-clock, blk, net, api-no-stall
#!   api-ctrl-alt-del           (x86_64) SendCtrlAltDel: tandem exits 0 within 60 s
#!   api-ctrl-alt-del-refused   (aarch64) 400 with a fault_message, VM still Running
#!   api-sigterm                (aarch64) SIGTERM: tandem exits 143
#! and, for both ends, the API socket is gone after tandem exits.
#! Serves the host end of the guest's net check (ci/host-lib.sh). Prints
#! CHECK <name> PASS|FAIL <detail>; exits 0 when none of its checks failed.
#! Options (environment): TANDEM (default /bin/tandem), API_KERNEL
#! (/guest/vmlinuz), API_INITRD (/guest/initramfs.cpio.gz), API_PAUSE_S (60),
#! API_BUDGET_S (780: after that many seconds of host uptime every wait gives
#! up, so the script still reports within the row's 900 s).

RUN_TIMEOUT=600
SOCK=/tmp/api.sock
OUT=/tmp/api.out
METRICS=/tmp/api.metrics
VDA=/tmp/vda.img
GO_MIB=90 # where the guest looks for TANDEM-API-GO (05-api-idle.sh)
FAILED=0
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=api-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

# The VM's state as GET / tells it ("" when the request failed).
vm_state() {
    api GET / && sed -n 's/.*"state": *"\([^"]*\)".*/\1/p' /tmp/api.answer
}

# FlushMetrics, then the exits.total of the line it wrote.
flushed_exits() {
    api PUT /actions '{"action_type": "FlushMetrics"}' || return
    tail -n 1 "$METRICS" | grep -o '"exits": *{[^}]*}' | grep -o '"total": *[0-9]*' | grep -o '[0-9]*$'
}

# The sum of the vCPUs' exit counts as KVM's own statistics give them in
# that line (exits the kernel handled too), or nothing.
kvm_exits() {
    tail -n 1 "$METRICS" | grep -o '"vcpu[0-9]*": *{[^}]*}' | grep -o '"exits": *[0-9]*' |
        awk -F: '{ n += $2 } END { if (NR) print n }'
}

# Bytes of console output so far.
out_size() { wc -c <"$OUT" | tr -d ' '; }
# The number of the last API-TICK line so far (0 before the first).
last_tick() {
    local n
    n=$(grep -a 'API-TICK ' "$OUT" | tail -n 1 | sed -n 's/.*API-TICK \([0-9]*\).*/\1/p')
    echo "${n:-0}"
}
# "tick N at <uptime>, tick N+1 at <uptime>": the guest's clock across the pause.
tick_uptimes() {
    grep -aE "API-TICK ($1|$(($1 + 1))) " "$OUT" | sed 's/.*API-TICK \([0-9]*\) uptime=\([0-9.]*\).*/tick \1 at \2 s/' |
        tr -d '\r' | paste -sd, - | sed 's/,/, /'
}
# shellcheck disable=SC2317 # run by wait_until
tick_after() { [ "$(last_tick)" -gt "$1" ]; }

configure_and_start() {
    local kernel=${API_KERNEL:-/guest/vmlinuz} initrd=${API_INITRD:-/guest/initramfs.cpio.gz}
    local args ok=0 state
    args="console=ttyS0 quiet panic=-1 tandem.mode=checks"
    args="$args tandem.checks=api-clock,blk,net,api-no-stall,api-hold tandem.vda_id=vda tandem.net_mac=$GUEST_MAC"
    api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 512}' &&
        api PUT /boot-source "{\"kernel_image_path\": \"$kernel\", \"initrd_path\": \"$initrd\", \"boot_args\": \"$args\"}" &&
        api PUT /drives/vda "{\"drive_id\": \"vda\", \"path_on_host\": \"$VDA\", \"is_root_device\": false, \"is_read_only\": false}" &&
        api PUT /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\", \"guest_mac\": \"$GUEST_MAC\"}" &&
        api PUT /metrics "{\"metrics_path\": \"$METRICS\"}" &&
        api PUT /actions '{"action_type": "InstanceStart"}' && ok=1
    if [ "$ok" = 0 ]; then
        check api-start FAIL "$(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
        return 1
    fi
    state=$(vm_state)
    if [ "$state" = Running ] && grep -q '"id": *"e2e"' /tmp/api.answer; then
        check api-start PASS "configured through the API, InstanceStart 204, GET /: $(cat /tmp/api.answer)"
    else
        check api-start FAIL "GET / after InstanceStart: $(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
        return 1
    fi
}

# Pauses for API_PAUSE_S seconds once the guest ticks, then resumes.
pause_and_resume() {
    local pause_s=${API_PAUSE_S:-60} tick state size0 size1 exits0 exits1 exits2 kvm0 kvm1 t0 t1 why=""
    if ! wait_until "$RUN_TIMEOUT" tick_after 2; then
        check api-pause FAIL "the guest never ticked (API-IDLE-READY, API-TICK)"
        return 1
    fi
    if ! api PATCH /vm '{"state": "Paused"}'; then
        check api-pause FAIL "PATCH /vm Paused: $(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
        return 1
    fi
    t0=$(uptime_s)
    tick=$(last_tick)
    state=$(vm_state)
    size0=$(out_size)
    exits0=$(flushed_exits)
    kvm0=$(kvm_exits)
    note "paused after tick $tick: console $size0 bytes, exits.total $exits0; waiting $pause_s s"
    sleep "$pause_s"
    size1=$(out_size)
    exits1=$(flushed_exits)
    kvm1=$(kvm_exits)
    t1=$(uptime_s)
    [ "$state" = Paused ] || why="GET / says '$state' after PATCH Paused"
    [ "$(vm_state)" = Paused ] || why="${why:+$why; }GET / says '$(cat /tmp/api.answer)' at the end of the pause"
    [ -n "$exits0" ] && [ "$exits0" = "$exits1" ] || why="${why:+$why; }exits.total went from '$exits0' to '$exits1' while paused"
    [ "$kvm0" = "$kvm1" ] || why="${why:+$why; }KVM's vCPU exit count went from '$kvm0' to '$kvm1' while paused"
    [ "$size0" = "$size1" ] || why="${why:+$why; }the console grew by $((size1 - size0)) bytes while paused: $(tail -c +$((size0 + 1)) "$OUT" | head -c 120 | tr -d '\r' | tr '\n' ' ')"
    if [ -z "$why" ]; then
        check api-pause PASS "$((t1 - t0)) s paused after API-TICK $tick: GET / Paused, console unchanged at $size0 bytes, exits.total $exits0 and KVM's vCPU exits ${kvm0:-(none)} before and after"
    else
        check api-pause FAIL "$why"
    fi

    if ! api PATCH /vm '{"state": "Resumed"}'; then
        check api-resume FAIL "PATCH /vm Resumed: $(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
        return 1
    fi
    state=$(vm_state)
    why=""
    [ "$state" = Running ] || why="GET / says '$state' after PATCH Resumed"
    # Three more ticks: the guest runs on, steadily.
    if [ -z "$why" ] && ! wait_until 60 tick_after $((tick + 2)); then
        why="not three API-TICKs after $tick within 60 s of the resume (last $(last_tick))"
    fi
    exits2=$(flushed_exits)
    [ -n "$why" ] || [ "${exits2:-0}" -gt "${exits1:-0}" ] ||
        why="exits.total '$exits2' after the resume, '$exits1' before"
    if [ -z "$why" ]; then
        check api-resume PASS "GET / Running, ticks again ($(tick_uptimes "$tick")), exits.total $exits1 -> $exits2"
    else
        check api-resume FAIL "$why"
    fi
    # Let the guest go on to its checks.
    printf TANDEM-API-GO | dd of="$VDA" bs=1M seek="$GO_MIB" conv=notrunc 2>/dev/null
    note "TANDEM-API-GO written at $GO_MIB MiB of $VDA"
}

# x86_64: Ctrl+Alt+Del through the i8042; the guest reboots at once
# (kernel.ctrl-alt-del=1), which ends tandem with 0.
ctrl_alt_del_reboots() {
    local t0 t1
    t0=$(uptime_s)
    if ! api PUT /actions '{"action_type": "SendCtrlAltDel"}'; then
        check api-ctrl-alt-del FAIL "SendCtrlAltDel: $(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
        finish_tandem 10
        return
    fi
    finish_tandem 60
    t1=$(uptime_s)
    if [ "$TANDEM_EXIT" = 0 ] && [ ! -e "$SOCK" ]; then
        check api-ctrl-alt-del PASS "tandem exited 0 $((t1 - t0)) s after SendCtrlAltDel, socket removed"
    else
        check api-ctrl-alt-del FAIL "tandem exited $TANDEM_EXIT $((t1 - t0)) s after SendCtrlAltDel$([ ! -e "$SOCK" ] || echo ', socket left behind')"
    fi
}

# aarch64: SendCtrlAltDel is refused (400, fault_message) and the VM runs
# on; SIGTERM ends tandem with 143.
ctrl_alt_del_refused() {
    local state t0 t1 fault
    if api PUT /actions '{"action_type": "SendCtrlAltDel"}'; then
        check api-ctrl-alt-del-refused FAIL "accepted: $(cat /tmp/api.answer)"
    elif grep -q 'HTTP 400' /tmp/api.err && grep -q '"fault_message"' /tmp/api.answer; then
        fault=$(cat /tmp/api.answer)
        state=$(vm_state)
        if [ "$state" = Running ]; then
            check api-ctrl-alt-del-refused PASS "HTTP 400 $fault, VM still Running"
        else
            check api-ctrl-alt-del-refused FAIL "refused, but GET / then says '$state'"
        fi
    else
        check api-ctrl-alt-del-refused FAIL "$(cat /tmp/api.answer /tmp/api.err | tr '\n' ' ')"
    fi
    t0=$(uptime_s)
    kill -TERM "$TANDEM_PID"
    finish_tandem 60
    t1=$(uptime_s)
    if [ "$TANDEM_EXIT" = 143 ] && [ ! -e "$SOCK" ]; then
        check api-sigterm PASS "tandem exited 143 $((t1 - t0)) s after SIGTERM, socket removed"
    else
        check api-sigterm FAIL "tandem exited $TANDEM_EXIT $((t1 - t0)) s after SIGTERM$([ ! -e "$SOCK" ] || echo ', socket left behind')"
    fi
}

main() {
    local started=0
    TANDEM=${TANDEM:-/bin/tandem} TANDEM_EXIT=""
    DEADLINE=${API_BUDGET_S:-780}
    load_tun
    dd if=/dev/zero of="$VDA" bs=1M count=0 seek=96 2>/dev/null
    net_files
    rm -f "$SOCK" "$METRICS"
    start_tandem "$OUT" --api-sock "$SOCK" --id e2e
    if ! wait_until 30 [ -S "$SOCK" ]; then
        check api-start FAIL "no socket $SOCK after 30 s"
    elif configure_and_start; then
        started=1
    fi
    if [ "$started" = 1 ] && net_tap_up && pause_and_resume; then
        net_fetch_up "$OUT"
        if wait_until "$RUN_TIMEOUT" grep -q API-HOLD "$OUT"; then
            case $(uname -m) in
                x86_64) ctrl_alt_del_reboots ;;
                *) ctrl_alt_del_refused ;;
            esac
        else
            check api-hold FAIL "the guest never printed API-HOLD"
        fi
    else
        FAILED=1
    fi
    # Whatever went wrong, end tandem (SIGKILL after 10 s) and show its notes.
    if [ -z "$TANDEM_EXIT" ]; then
        kill -TERM "$TANDEM_PID" 2>/dev/null
        finish_tandem 10
    fi
    kill "$HTTPD_PID"
    echo "api-host: done, $([ "$FAILED" = 0 ] && echo 'every check passed' || echo 'a check failed')"
    return "$FAILED"
}

main "$@"; exit
