#!/bin/sh
# shellcheck shell=dash
#! The hostile-guest scenario, run by busybox sh inside an emulated KVM
#! host (ci/emulated-host.sh --host-script; see ci/hostile-e2e.sh). Two
#! VMs, one vCPU each:
#!   neighbour  the test guest, disk (vda) and virtio-net on tap0, running
#!              guest check neighbour-io (ci/guest-checks.d/60-neighbour.sh):
#!              32 MiB written to its disk and 2 × 8 MiB fetched from this
#!              host, timed.
#!   attacker   the test guest in tandem.mode=hostile running tandem-hostile
#!              (hostile/), with a disk, virtio-net on tap1 (this host sends
#!              it 1442-byte frames all along) and virtio-rng; it repeats
#!              its attacks in rounds until killed.
#! 1. The neighbour alone. 2. The attacker, until its first round is done.
#! 3. The neighbour again, beside the attacker still attacking. 4. Then:
#!   hostile-attacks    every attack printed `HOSTILE <name> done`, none FAILED
#!   hostile-neighbour  the neighbour's disk and net throughput beside the
#!                      attacker is at least NEIGHBOUR_MIN_PERCENT of alone, and
#!                      its disk file holds what it wrote, in both runs
#!   hostile-rss        the attacker's tandem's own peak resident memory, VmHWM
#!                      minus the guest RAM resident (its smaps entries of
#!                      GUEST_MIB or more) before SIGTERM, is at most
#!                      VMM_PEAK_RSS_MIB; the rest sampled every 2 s is reported
#!   hostile-sigterm    SIGTERM to the attacker's tandem: gone within
#!                      SIGTERM_MAX_MS, exit status 143
#!   hostile-log        the attacker's tandem wrote at most LOG_MAX_LINES
#!                      lines on stderr over the whole run
#! The bounds and why they are what they are: docs/security.md ("A hostile
#! guest, end to end"). Shared helpers: ci/host-lib.sh at /host-lib.sh.
#! Exits 0 when every check passed.

# Bounds (docs/security.md says why).
SIGTERM_MAX_MS=1000
VMM_PEAK_RSS_MIB=32
LOG_MAX_LINES=200
NEIGHBOUR_MIN_PERCENT=15
# Every attack tandem-hostile runs (hostile/src/attacks/mod.rs; a unit
# test there checks this list).
HOSTILE_ATTACKS="queue-setup-flood rings-outside-ram activate-reset-cycles chain-loop
 chain-garbage buffers-outside-ram rings-overlap blk-indirect-huge blk-no-status
 blk-reset-during-io net-rx-amplify net-tx-oversized mmio-storm-unmapped
 mmio-storm-registers pio-storm uart-flood"

GUEST_MIB=256
RUN_TIMEOUT=300
ATTACK_TIMEOUT=400
# Stop waiting before the row's 900 s timeout, so the checks still print.
DEADLINE=780
ATTACKER_MAC=52:54:00:78:00:02
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=hostile-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

ATTACKER_PID="" PING_PID="" SAMPLER_PID="" ATTACKER_CPUS=""
FAILED=0
# The guests run again after a triple fault, for the checks' details.
RERUNS=""

check() {
    [ "$2" = PASS ] || FAILED=1
    check_result "$@"
}

# Centiseconds of host uptime.
uptime_cs() {
    local up
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'
}

# True while process PID exists and is not a zombie.
alive() {
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}

# CPU time process PID used so far, all its threads, in clock ticks of
# USER_HZ, 100 on Linux (utime + stime of /proc/PID/stat; fields counted
# after the name). The host's root has no getconf.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

# Field NAME (kB) of /proc/PID/status.
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }

# One neighbour run, OUT its output file; sets NB_DISK, NB_NET (kB/s) and
# NB_FILE_OK (the disk file holds what the guest wrote: 1).
neighbour_run_once() {
    local out=$1 guest file
    NB_DISK="" NB_NET="" NB_FILE_OK=0
    start_tandem "$out" run --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
        --cpus 1 --memory "${GUEST_MIB}M" --disk path=/tmp/neighbour.img \
        --net "tap=tap0,mac=$GUEST_MAC" \
        --cmdline "console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=neighbour-io"
    net_tap_up
    finish_tandem "$RUN_TIMEOUT"
    NB_DISK=$(sed -n 's/.*NEIGHBOUR-IO disk_kBps=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
    NB_NET=$(sed -n 's/.*NEIGHBOUR-IO .*net_kBps=\([0-9]*\).*/\1/p' "$out" | tail -n 1)
    guest=$(marker_sum "CHECK-SUM neighbour-vda" "$out")
    file=$(sha_range /tmp/neighbour.img 0 32)
    [ -z "$guest" ] || [ "$guest" != "$file" ] || NB_FILE_OK=1
    note "neighbour: exit $TANDEM_EXIT, disk ${NB_DISK:-?} kB/s, net ${NB_NET:-?} kB/s, file sha256 $file, guest wrote ${guest:-nothing}"
}

# A neighbour run, once more if its guest triple-faulted (host-lib.sh
# triple_faulted); the first run's output is kept as OUT.attempt1.
neighbour_run() {
    neighbour_run_once "$1"
    triple_faulted "$1" && [ "$(uptime_s)" -lt "$DEADLINE" ] || return 0
    RERUNS="$RERUNS neighbour"
    echo "hostile-host: [$(uptime_s) s] the neighbour's guest triple-faulted: once more"
    mv "$1" "$1.attempt1"
    neighbour_run_once "$1"
}

# The attacker's tandem in the background, stdout (the guest's console)
# and stderr (tandem's log) each to a file. A plain file, not a pipe through
# a filter: a filter would compete with tandem for this host's two CPUs and
# slow its exit, and the UART flood adds only 128 KiB a round.
start_attacker() {
    cat /guest/initramfs.cpio.gz /guest/hostile.cpio.gz >/tmp/hostile-initrd.gz
    dd if=/dev/zero of=/tmp/attacker.img bs=1M count=0 seek=32 2>/dev/null
    "$TANDEM" run --kernel /guest/vmlinuz --initrd /tmp/hostile-initrd.gz --cpus 1 \
        --memory "${GUEST_MIB}M" --disk path=/tmp/attacker.img \
        --net "tap=tap1,mac=$ATTACKER_MAC" --rng \
        --cmdline "console=ttyS0 quiet panic=-1 tandem.mode=hostile" \
        >/tmp/attacker.out 2>/tmp/attacker.err </dev/null &
    ATTACKER_PID=$!
    echo "hostile-host: attacker tandem pid $ATTACKER_PID"
    local left=60
    while [ ! -d /sys/class/net/tap1 ] && [ "$left" -gt 0 ] && alive "$ATTACKER_PID"; do
        sleep 1
        left=$((left - 1))
    done
    ip addr add 10.78.0.1/24 dev tap1 && ip link set tap1 up
    # Frames for the attacker's receive attacks: no ARP answer needed.
    arp -s 10.78.0.2 "$ATTACKER_MAC"
    ping -q -s 1400 -i 0.05 10.78.0.2 >/dev/null 2>&1 &
    PING_PID=$!
}

# Waits until the attacker finished its first round (0), or not (1).
wait_first_round() {
    local left=$ATTACK_TIMEOUT
    while ! grep -aq 'HOSTILE-ROUND 1 done' /tmp/attacker.out; do
        alive "$ATTACKER_PID" || return 1
        grep -aq 'HOSTILE-ERROR' /tmp/attacker.out && return 1
        left=$((left - 1))
        [ "$left" -gt 0 ] && [ "$(uptime_s)" -lt "$DEADLINE" ] || return 1
        sleep 1
    done
}

# The attacker until its first round is done, then the neighbour beside it.
# Not run when the attacker's guest triple-faulted first (it runs again).
attack_and_neighbour() {
    NB_DISK="" NB_NET="" NB_FILE_OK=0
    start_attacker
    sample_own_rss &
    SAMPLER_PID=$!
    if wait_first_round; then
        echo "hostile-host: [$(uptime_s) s] the attacker's first round is done; the neighbour again"
    elif triple_faulted /tmp/attacker.err; then
        return
    else
        echo "hostile-host: [$(uptime_s) s] the attacker never finished a round"
    fi
    local ticks0 cs0 ticks1
    ticks0=$(cpu_ticks "$ATTACKER_PID") cs0=$(uptime_cs)
    neighbour_run /tmp/beside.out
    # CPUs the attacker's tandem (vCPU and device threads) used meanwhile:
    # ticks and centiseconds are both hundredths of a second.
    ticks1=$(cpu_ticks "$ATTACKER_PID")
    [ -n "$ticks0" ] && [ -n "$ticks1" ] || return 0
    ATTACKER_CPUS=$(awk -v t="$((ticks1 - ticks0))" -v cs="$(($(uptime_cs) - cs0))" \
        'BEGIN { printf "%.2f", (cs > 0 ? t / cs : 0) }')
}

check_attacks() {
    local name missing="" failed rounds
    for name in $HOSTILE_ATTACKS; do
        grep -aq "HOSTILE $name done" /tmp/attacker.out || missing="$missing $name"
    done
    failed=$(grep -aE 'HOSTILE [a-z0-9-]+ FAILED|HOSTILE-ERROR|HOSTILE-EXITED' /tmp/attacker.out | head -n 3 | tr '\n' ';')
    rounds=$(grep -ac 'HOSTILE-ROUND [0-9]* done' /tmp/attacker.out)
    if [ -z "$missing" ] && [ -z "$failed" ] && [ "$rounds" -ge 1 ]; then
        check hostile-attacks PASS "all $(echo "$HOSTILE_ATTACKS" | wc -w | tr -d ' ') attacks done, $rounds rounds${RERUNS:+; run again after a triple fault:$RERUNS}"
    else
        check hostile-attacks FAIL "rounds $rounds; not done:${missing:- none}; ${failed:-no failures}"
    fi
}

check_neighbour() {
    local disk_pct=0 net_pct=0
    if [ -n "$ALONE_DISK" ] && [ -n "$BESIDE_DISK" ] && [ "$ALONE_DISK" -gt 0 ]; then
        disk_pct=$((BESIDE_DISK * 100 / ALONE_DISK))
    fi
    if [ -n "$ALONE_NET" ] && [ -n "$BESIDE_NET" ] && [ "$ALONE_NET" -gt 0 ]; then
        net_pct=$((BESIDE_NET * 100 / ALONE_NET))
    fi
    local detail="disk ${BESIDE_DISK:-?} kB/s beside the attacker, ${ALONE_DISK:-?} alone ($disk_pct %);"
    detail="$detail net ${BESIDE_NET:-?} kB/s, ${ALONE_NET:-?} alone ($net_pct %); at least $NEIGHBOUR_MIN_PERCENT % needed;"
    detail="$detail the attacker's tandem used ${ATTACKER_CPUS:-?} CPUs meanwhile;"
    detail="$detail disk file as written: alone $ALONE_FILE_OK, beside $BESIDE_FILE_OK${RERUNS:+; run again after a triple fault:$RERUNS}"
    if [ "$disk_pct" -ge "$NEIGHBOUR_MIN_PERCENT" ] && [ "$net_pct" -ge "$NEIGHBOUR_MIN_PERCENT" ] &&
        [ "$ALONE_FILE_OK" = 1 ] && [ "$BESIDE_FILE_OK" = 1 ]; then
        check hostile-neighbour PASS "$detail"
    else
        check hostile-neighbour FAIL "$detail"
    fi
}

# "GUEST OWN": resident kB of PID's guest RAM (its mappings of GUEST_MIB
# or more) and of the rest (tandem's own).
rss_split() {
    awk -v big=$((GUEST_MIB * 1024)) '/^Size:/ { size = $2 }
        /^Rss:/ { if (size >= big) g += $2; else o += $2 } END { print g + 0, o + 0 }' "/proc/$1/smaps" 2>/dev/null
}

# In the background while the attacker lives: the most tandem's own
# resident memory reached at a sample, every 2 s, in /tmp/own-rss.max.
sample_own_rss() {
    local max=0 guest own
    echo 0 >/tmp/own-rss.max
    while alive "$ATTACKER_PID"; do
        read -r guest own <<EOF2
$(rss_split "$ATTACKER_PID")
EOF2
        if [ "${own:-0}" -gt "$max" ]; then
            max=$own
            echo "$max" >/tmp/own-rss.max
        fi
        sleep 2
    done
}

# Before SIGTERM: tandem's own peak is at most VmHWM minus the guest RAM
# resident now (guest RAM never shrinks while the VM lives), as tandem's
# own --stats computes it.
check_rss() {
    local hwm guest own peak detail
    hwm=$(status_kb "$ATTACKER_PID" VmHWM)
    read -r guest own <<EOF2
$(rss_split "$ATTACKER_PID")
EOF2
    if [ -z "$hwm" ] || [ -z "$guest" ]; then
        check hostile-rss FAIL "the attacker's tandem is gone: no /proc/$ATTACKER_PID/status"
        return
    fi
    peak=$((hwm - guest))
    detail="tandem's own peak at most $peak kB (VmHWM $hwm kB - guest RAM resident $guest kB; bound $((VMM_PEAK_RSS_MIB * 1024)) kB); own now $own kB, sampled max $(cat /tmp/own-rss.max) kB"
    if [ "$peak" -le $((VMM_PEAK_RSS_MIB * 1024)) ]; then
        check hostile-rss PASS "$detail"
    else
        check hostile-rss FAIL "$detail"
    fi
}

# SIGTERM, then `wait` for the process, timed by this host's uptime. No
# polling loop: each fork in an emulated host costs milliseconds, and a
# loop of them once added hundreds to the measurement. A background job
# notes what tandem's threads are doing half a second in (for a slow
# exit), another SIGKILLs it 10 s in.
check_sigterm() {
    local t0 t1 ms code logged=no threads watchdog snapshot
    if ! alive "$ATTACKER_PID"; then
        wait "$ATTACKER_PID"
        check hostile-sigterm FAIL "the attacker's tandem had already exited with $?"
        return
    fi
    rm -f /tmp/threads-500ms
    t0=$(uptime_cs)
    kill -TERM "$ATTACKER_PID"
    (usleep 500000; thread_states "$ATTACKER_PID" >/tmp/threads-500ms) &
    snapshot=$!
    (sleep 10; kill -9 "$ATTACKER_PID" 2>/dev/null) &
    watchdog=$!
    wait "$ATTACKER_PID"
    code=$?
    t1=$(uptime_cs)
    kill "$watchdog" "$snapshot" 2>/dev/null
    ms=$(((t1 - t0) * 10))
    if [ "$code" = 137 ]; then
        check hostile-sigterm FAIL "still running 10 s after SIGTERM (SIGKILLed)"
        return
    fi
    grep -q 'stopped: signal' /tmp/attacker.err && logged=yes
    threads=$(cat /tmp/threads-500ms 2>/dev/null)
    local detail="exited $code after $ms ms (at most $SIGTERM_MAX_MS, status 143); its stop logged: $logged${threads:+; threads at 500 ms: $threads}"
    if [ "$ms" -le "$SIGTERM_MAX_MS" ] && [ "$code" = 143 ]; then
        check hostile-sigterm PASS "$detail"
    else
        check hostile-sigterm FAIL "$detail"
    fi
}

check_log() {
    local lines
    lines=$(wc -l </tmp/attacker.err | tr -d ' ')
    echo "hostile-host: the attacker's tandem log ($lines lines):"
    head -n 200 /tmp/attacker.err | sed 's/^/attacker-log| /'
    if [ "$lines" -le "$LOG_MAX_LINES" ]; then
        check hostile-log PASS "$lines stderr lines over the run (at most $LOG_MAX_LINES)"
    else
        check hostile-log FAIL "$lines stderr lines over the run (at most $LOG_MAX_LINES)"
    fi
}

TANDEM=${TANDEM:-/bin/tandem}
load_tun
dd if=/dev/zero of=/tmp/neighbour.img bs=1M count=0 seek=64 2>/dev/null
net_files

neighbour_run /tmp/alone.out
ALONE_DISK=$NB_DISK ALONE_NET=$NB_NET ALONE_FILE_OK=$NB_FILE_OK

attack_and_neighbour
if triple_faulted /tmp/attacker.err && [ "$(uptime_s)" -lt "$DEADLINE" ]; then
    RERUNS="$RERUNS attacker"
    echo "hostile-host: [$(uptime_s) s] the attacker's guest triple-faulted: its phase once more"
    wait "$ATTACKER_PID"
    kill "$PING_PID" "$SAMPLER_PID" 2>/dev/null
    mv /tmp/attacker.out /tmp/attacker.out.attempt1
    mv /tmp/attacker.err /tmp/attacker.err.attempt1
    attack_and_neighbour
fi
BESIDE_DISK=$NB_DISK BESIDE_NET=$NB_NET BESIDE_FILE_OK=$NB_FILE_OK
kill "$HTTPD_PID" 2>/dev/null

check_rss
check_sigterm
kill "$PING_PID" "$SAMPLER_PID" 2>/dev/null
echo "hostile-host: the attacker's console ($(wc -c </tmp/attacker.out | tr -d ' ') bytes), UART-flood filler left out:"
tr -d '\r' </tmp/attacker.out | grep -av '^U*$' | cut -c1-300 | sed 's/^/attacker| /'
check_attacks
check_neighbour
check_log
echo "hostile-host: failed=$FAILED"
exit "$FAILED"
