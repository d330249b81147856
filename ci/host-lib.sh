#!/bin/sh
# shellcheck shell=dash disable=SC2034 # variables set here are the callers'
#! Helpers for the host scripts (ci/virtio-host.sh, ci/api-host.sh) that
#! busybox sh runs inside an emulated KVM host; sourced, never run. The rows
#! put this file beside the host script (emulated-host.sh --add
#! ci/host-lib.sh:/host-lib.sh). Callers set HOST_LOG_PREFIX and TANDEM.
#! The guest's net check (ci/guest-checks.d/40-net.sh) has its host end
#! here: net_files, net_tap_up, net_fetch_up. They use the NET_* settings
#! below, which a host script running several guests (ci/many-host.sh) sets
#! per guest in a subshell.

HOST_IP=10.77.0.1
GUEST_IP=10.77.0.2
GUEST_MAC=52:54:00:77:00:02
NET_TAP=tap0       # the guest's TAP
NET_WWW=/tmp/www   # what the host serves: down.bin, later up-received.sha256
NET_MIB=8          # size of down.bin
NET_BIND=""        # httpd's address (empty: every address)
NET_UP=/tmp/up.bin # where the guest's up.bin lands
TANDEM_PID="" TAIL_PID="" HTTPD_PID=""

# Notes wait in a file while tandem's output is being copied to the
# console: written in between, they would split the guest's lines.
note() {
    local uptime
    read -r uptime _ </proc/uptime
    echo "${HOST_LOG_PREFIX:-host}: [$uptime] $*" >>/tmp/notes
}
check_result() { echo "CHECK $1 $2 $3"; }
# A check's line decided while tandem's output is being copied to the
# console: kept, like the notes, and printed by finish_tandem.
check_later() { echo "CHECK $1 $2 $3" >>/tmp/checks.later; }
# A check's line, printed now or, while tandem's output is being copied
# to the console, kept for after it; a FAIL sets FAILED to 1.
check() {
    [ "$2" = PASS ] || FAILED=1
    if [ -z "$TANDEM_EXIT" ]; then check_later "$@"; else check_result "$@"; fi
}
# Sends one request to tandem's API socket $SOCK with `tandem api`; the
# answer's body is in /tmp/api.answer, the client's stderr in
# /tmp/api.err. Returns the client's status (0 on 2xx).
api() {
    local method=$1 path=$2 status=0
    "$TANDEM" api --sock "$SOCK" "$method" "$path" ${3:+"$3"} >/tmp/api.answer 2>/tmp/api.err || status=$?
    note "API $method $path ${3:-} -> $status $(cat /tmp/api.answer) $(cat /tmp/api.err)"
    return "$status"
}
sha_file() { sha256sum "$1" | cut -c1-64; }
# sha256 of COUNT MiB of FILE from SKIP MiB on.
sha_range() { dd if="$1" bs=1M skip="$2" count="$3" 2>/dev/null | sha256sum | cut -c1-64; }
# The last 64-hex-digit sum after MARKER in FILE.
marker_sum() { sed -n "s/.*$1 \([0-9a-f]\{64\}\).*/\1/p" "$2" | tail -n 1; }
# sha256 of LENGTH bytes of FILE from byte OFFSET on (4 KiB blocks when
# both are multiples of 4096).
sha_bytes() {
    local bs=4096
    [ $(($2 % bs)) = 0 ] && [ $(($3 % bs)) = 0 ] || bs=1
    dd if="$1" bs=$bs skip=$(($2 / bs)) count=$(($3 / bs)) 2>/dev/null | sha256sum | cut -c1-64
}

# The host end of the guest's crash check (ci/guest-checks.d/90-crash.sh):
# compares each CRASH-REGION the guest's output (file OUT) lists with the
# same bytes of disk file DISK. Sets CRASH_REGIONS (how many) and
# CRASH_DETAIL (each region, or what differs); fails when the guest listed
# fewer regions than its CRASH-READY line says, or a region differs.
crash_check_regions() {
    local out=$1 disk=$2 name offset length want got bad="" want_n
    CRASH_REGIONS=0 CRASH_DETAIL=""
    tr -d '\r' <"$out" | grep -o 'CRASH-REGION .*' >/tmp/crash.regions
    want_n=$(tr -d '\r' <"$out" | sed -n 's/.*CRASH-READY \([0-9]*\).*/\1/p' | tail -n 1)
    while read -r _ name offset length want; do
        CRASH_REGIONS=$((CRASH_REGIONS + 1))
        got=$(sha_bytes "$disk" "$offset" "$length")
        if [ "$got" = "$want" ]; then
            CRASH_DETAIL="$CRASH_DETAIL $name $length@$offset"
        else
            bad="$bad $name ($length bytes at $offset): file sha256 $got, guest fsync'd $want;"
        fi
    done </tmp/crash.regions
    if [ -n "$bad" ]; then
        CRASH_DETAIL="differs:$bad"
        return 1
    fi
    if [ -z "$want_n" ] || [ "$CRASH_REGIONS" != "$want_n" ]; then
        CRASH_DETAIL="the guest listed $CRASH_REGIONS regions, CRASH-READY says '${want_n:-nothing}'"
        return 1
    fi
    CRASH_DETAIL="all present:$CRASH_DETAIL"
}

# Whether tandem's output FILE says its guest triple-faulted. Nested SVM
# under TCG resets a guest now and then, QEMU's guests as well
# (docs/testing.md, "Many VMs at once"); the x86 host scripts run such a
# guest once more, and say so.
triple_faulted() { grep -aq 'guest triple fault (KVM_EXIT_SHUTDOWN)' "$1"; }

# The host's uptime in whole seconds.
uptime_s() {
    local uptime
    read -r uptime _ </proc/uptime
    echo "${uptime%.*}"
}

# What each of PID's threads is doing: comm:state:wchan:CPU ticks (user +
# system), one per thread on one line.
thread_states() {
    local task
    for task in /proc/"$1"/task/*; do
        echo "$(cat "$task/comm" 2>/dev/null):$(cut -d' ' -f3 "$task/stat" 2>/dev/null):$(cat "$task/wchan" 2>/dev/null):$(awk '{ print $14 + $15 }' "$task/stat" 2>/dev/null)"
    done | tr '\n' ' '
}

# A stuck tandem PID, in a note: its threads twice, 2 s apart (a vCPU
# spinning in the guest gains CPU ticks; one halted waiting for an
# interrupt sleeps in kvm_vcpu_block), and its VM's KVM counters
# (debugfs) at both times.
# shellcheck disable=SC2086 # $counters: one word per file
note_stuck() {
    local dir="" before after counters="exits halt_exits irq_injections irq_window_exits io_exits mmio_exits"
    [ -d /sys/kernel/debug/kvm ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
    for before in /sys/kernel/debug/kvm/"$1"-*; do [ ! -d "$before" ] || dir=$before; done
    before="$(thread_states "$1"); KVM $(cd "$dir" 2>/dev/null && cat $counters 2>/dev/null | tr '\n' ' ')"
    sleep 2
    after="$(thread_states "$1"); KVM $(cd "$dir" 2>/dev/null && cat $counters 2>/dev/null | tr '\n' ' ')"
    note "stuck: threads comm:state:wchan:ticks, KVM $counters: $before; 2 s later: $after"
}

# Loads tun unless /dev/net/tun exists (a module in Debian's kernels;
# emulated-host.sh puts it in /lib/modules/extra).
load_tun() {
    [ -c /dev/net/tun ] || insmod /lib/modules/extra/tun.ko ||
        echo "${HOST_LOG_PREFIX:-host}: no tun module: the net check will fail"
}

# Starts tandem in the background with its output (stdout and stderr) in
# OUT, copied live to the console.
start_tandem() {
    local out=$1
    shift
    : >/tmp/notes
    : >/tmp/checks.later
    note "tandem $*"
    spawn_tandem "$out" "$@"
    tail -n +1 -f "$out" &
    TAIL_PID=$!
}

# Starts tandem in the background with its output (stdout and stderr) in
# OUT, not copied anywhere; sets TANDEM_PID. OUT is emptied first, here:
# the background shell's own redirection may come after the caller's first
# look at OUT, which would then still see an earlier run's lines (the
# crash soak once SIGKILLed a tandem at the CRASH-READY of the run before).
spawn_tandem() {
    local out=$1
    shift
    : >"$out"
    "$TANDEM" "$@" >"$out" 2>&1 </dev/null &
    TANDEM_PID=$!
}

# Runs CMD once a second until it succeeds (0), SECONDS pass, tandem
# ends or the host's uptime reaches DEADLINE (seconds; unset: none) (1).
wait_until() {
    local left=$1
    shift
    while ! "$@"; do
        kill -0 "$TANDEM_PID" 2>/dev/null || return 1
        left=$((left - 1))
        [ "$left" -gt 0 ] || return 1
        if [ -n "${DEADLINE:-}" ] && [ "$(uptime_s)" -ge "$DEADLINE" ]; then
            note "giving up: the host script's deadline (uptime $DEADLINE s) has passed"
            return 1
        fi
        sleep 1
    done
}

# Waits up to SECONDS for tandem to end (SIGKILL after that), stops the
# copy to the console and prints the notes and the checks kept for later.
# Sets TANDEM_EXIT.
finish_tandem() {
    local left=$1
    while kill -0 "$TANDEM_PID" 2>/dev/null && [ "$left" -gt 0 ]; do
        sleep 1
        left=$((left - 1))
    done
    if kill -0 "$TANDEM_PID" 2>/dev/null; then
        note "tandem still running after the time limit: SIGKILL"
        kill -9 "$TANDEM_PID"
    fi
    wait "$TANDEM_PID"
    TANDEM_EXIT=$?
    sleep 2 # busybox tail -f polls once a second
    kill "$TAIL_PID"
    wait "$TAIL_PID" 2>/dev/null
    note "tandem exited with $TANDEM_EXIT"
    echo
    cat /tmp/notes /tmp/checks.later
}

# The host end of net, part 1: $NET_WWW with $NET_MIB MiB down.bin and its
# sha256, served by httpd on port 8080 of $NET_BIND (HTTPD_PID).
net_files() {
    mkdir -p "$NET_WWW"
    dd if=/dev/urandom of="$NET_WWW/down.bin" bs=1M count="$NET_MIB" 2>/dev/null
    sha_file "$NET_WWW/down.bin" >"$NET_WWW/down.sha256"
    httpd -f -p "${NET_BIND:+$NET_BIND:}8080" -h "$NET_WWW" &
    HTTPD_PID=$!
}

# Part 2: address $NET_TAP once tandem has created it. Fails if it never does.
net_tap_up() {
    if ! wait_until 60 [ -d "/sys/class/net/$NET_TAP" ]; then
        note "$NET_TAP never appeared"
        return 1
    fi
    ip addr add "$HOST_IP/24" dev "$NET_TAP" && ip link set "$NET_TAP" up && note "$NET_TAP up as $HOST_IP"
}

# wget of the guest's up.bin to $NET_UP; tried again (5 times at most)
# when refused at once, e.g. by a guest whose httpd is not listening yet.
net_wget_up() {
    local tries=0 start
    while :; do
        start=$(uptime_s)
        timeout 300 wget -q -O "$NET_UP" "http://$GUEST_IP:8080/up.bin" 2>>/tmp/notes && return 0
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] && [ $(($(uptime_s) - start)) -lt 10 ] || return 1
        sleep 2
    done
}

# Part 3: once the guest's output (file OUT) says NET-UP-READY, fetch its
# up.bin and publish the sum this side computed.
net_fetch_up() {
    if ! wait_until "${RUN_TIMEOUT:-300}" grep -q NET-UP-READY "$1"; then
        note "the guest never served up.bin"
        return
    fi
    note "the guest serves up.bin"
    if net_wget_up; then
        # Renamed into place: the guest polls for it and must not see it half written.
        sha_file "$NET_UP" >"$NET_UP.sha256"
        mv "$NET_UP.sha256" "$NET_WWW/up-received.sha256"
        note "fetched up.bin from the guest, sha256 $(cat "$NET_WWW/up-received.sha256")"
    else
        note "wget of the guest's up.bin failed after $({ wc -c <"$NET_UP"; } 2>/dev/null || echo 0) bytes;" \
             "$NET_TAP: $(grep "$NET_TAP:" /proc/net/dev | tr -s ' ')"
    fi
}
