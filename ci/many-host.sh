#!/bin/sh
# shellcheck shell=dash
#! Many VMs at once, run by busybox sh inside ONE emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/many-e2e.sh). Starts N test
#! guests together (kernel argument tandem.many=N, default 10), tandem's
#! base arguments (kernel, initrd, cpus, memory) from /run.args. Guest I
#! (0 to N-1) gets its own 16 MiB disk file /tmp/many/disk$I.img (serial
#! many-$I) and its own TAP many$I with its own /24: host 10.78.I.1, guest
#! 10.78.I.2, MAC 52:54:00:78:00:II (addresses only inside the emulated
#! host). Each guest runs the checks blk (8 MiB of fresh random data to
#! its disk, O_DIRECT + fsync, read back) and net (2 MiB each way with its
#! own httpd, which listens on its own host address only). A guest that
#! triple-faults, or whose VMM still runs ALONE_LIMIT s after all the
#! others ended (nested SVM under TCG, with ten guests at once, does both
#! to QEMU's guests too), runs once more, on its own. Then:
#!   many-exit  every tandem exited 0 (each guest powered off by itself)
#!   many-blk   each disk file's first 8 MiB is what its own guest wrote
#!              (and no other guest's data), the rest of it still zeros,
#!              the N guests' data all different, each guest's blk PASS
#!   many-net   each guest's net PASS, the file it received is its own
#!              host end's down.bin, the file its host end received is
#!              its own up.bin
#! Each prints `CHECK <name> PASS|FAIL <detail>`, a failure naming each
#! guest that failed and why; before them one `many: guest I ...` line per
#! guest and every guest's console output prefixed `gI| `.
#! A control run, never a row: tandem.many_vmm=qemu (x86_64, with
#! emulated-host.sh --share-root) runs the same guests under QEMU's microvm
#! from this machine's root instead, to tell tandem's faults from the
#! emulated host's (docs/testing.md, "Many VMs at once").
#! Shared helpers: ci/host-lib.sh, at /host-lib.sh beside this script.
#! Exits 0 when all three checks passed.

DIR=/tmp/many
DISK_MIB=16
BLK_MIB=8
# Ten guests boot in about 150 s on a quiet machine, but in up to 200 s
# when the machine emulates slowly (2026-12-02): the limits leave room.
RUN_TIMEOUT=1200
# Ten guests at once end within 200 s of each other, one alone takes
# 2-4 minutes (2026-12-02): one still running 300 s after all the others
# ended is stuck (its vCPU spinning or halted for good), and its second
# run can still end before the deadline.
ALONE_LIMIT=300
# The row's limit is 1500 s: give up at 1380 s of host uptime so that
# the checks are still printed.
DEADLINE=1380
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=many-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"
# After host-lib.sh, which sets the defaults; used by its net_files.
NET_MIB=2

# Guest I's settings: its TAP, addresses, MAC and files (host-lib's NET_*).
guest_settings() {
    NET_TAP=many$1
    HOST_IP=10.78.$1.1
    GUEST_IP=10.78.$1.2
    GUEST_MAC=52:54:00:78:00:$(printf %02x "$1")
    NET_WWW=$DIR/www$1
    NET_BIND=$HOST_IP
    NET_UP=$DIR/up$1.bin
    # shellcheck disable=SC2034
    HOST_LOG_PREFIX="many-host: guest $1"
}

# Starts guest I's VMM (TANDEM_PID), its output to OUT: tandem with
# tandem's base arguments, or, for a control run (tandem.many_vmm=qemu,
# x86_64 hosts with --share-root; never a row), QEMU's microvm from this
# machine's root with the same devices and guest.
spawn_guest() {
    local i=$1 out=$2 cmdline
    shift 2
    cmdline="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=blk,net tandem.vda_id=many-$i tandem.blk_mib=$BLK_MIB tandem.net_mib=$NET_MIB tandem.net_host=$HOST_IP tandem.net_ip=$GUEST_IP tandem.net_mac=$GUEST_MAC"
    if [ "$VMM" != qemu ]; then
        spawn_tandem "$out" "$@" --disk "path=$DIR/disk$i.img,id=many-$i" \
            --net "tap=$NET_TAP,mac=$GUEST_MAC" --cmdline "$cmdline"
        return
    fi
    chroot /hostroot qemu-system-x86_64 -M microvm,pic=off,rtc=off -accel kvm -cpu host \
        -smp 1 -m 160 -nodefaults -no-user-config -display none -serial stdio -monitor none \
        -no-reboot -kernel /mnt/vmlinuz -initrd /mnt/initramfs.cpio.gz -append "$cmdline" \
        -drive "file=$DIR/disk$i.img,format=raw,if=none,id=vda" \
        -device "virtio-blk-device,drive=vda,serial=many-$i" \
        -netdev "tap,id=net0,ifname=$NET_TAP,script=no,downscript=no" \
        -device "virtio-net-device,netdev=net0,mac=$GUEST_MAC" >"$out" 2>&1 </dev/null &
    TANDEM_PID=$!
}

# In the background, on a guest's first run: SIGKILLs guest I's VMM (PID)
# if it still runs ALONE_LIMIT seconds after every other guest's first
# run ended, noting what it was doing first and leaving $DIR/stuck$I. A
# rule relative to the others, not a clock: on a loaded machine all ten
# are slow together.
watch_run() {
    local i=$1 pid=$2 alone_since=""
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$alone_since" ] && [ "$(ls "$DIR"/exit* 2>/dev/null | wc -l)" -ge $((MANY - 1)) ]; then
            alone_since=$(uptime_s)
        fi
        if [ -n "$alone_since" ] && [ "$(uptime_s)" -ge $((alone_since + ALONE_LIMIT)) ]; then
            note_stuck "$pid"
            note "still running $ALONE_LIMIT s after every other guest ended: stuck, SIGKILL"
            : >"$DIR/stuck$i"
            kill -9 "$pid"
            return 0
        fi
        sleep 5
    done
}

# Guest I, in a subshell of its own: its VMM, the host end of its net
# check, then its exit status in $DIR/exit$I (SIGKILL at the deadline).
run_guest_once() {
    local i=$1
    shift
    spawn_guest "$i" "$DIR/out$i" "$@"
    note "$VMM started (pid $TANDEM_PID)"
    [ -f "$DIR/again$i" ] || watch_run "$i" "$TANDEM_PID" &
    if net_tap_up; then
        net_files
        net_fetch_up "$DIR/out$i"
    fi
    while kill -0 "$TANDEM_PID" 2>/dev/null && [ "$(uptime_s)" -lt "$DEADLINE" ]; do sleep 1; done
    if kill -0 "$TANDEM_PID" 2>/dev/null; then
        note_stuck "$TANDEM_PID"
        note "still running at the deadline (uptime $DEADLINE s): SIGKILL"
        kill -9 "$TANDEM_PID"
    fi
    wait "$TANDEM_PID"
    echo $? >"$DIR/exit$i"
    note "tandem exited with $(cat "$DIR/exit$i")"
    [ -z "$HTTPD_PID" ] || kill "$HTTPD_PID"
}

# Guest I, run once more if its nested guest triple-faulted or was stuck
# (its VMM still running ALONE_LIMIT s after all the others ended, the
# guest hung in its boot or in a transfer): with ten guests at once,
# nested SVM under TCG does that to QEMU's guests in these hosts as well
# (docs/testing.md, "Many VMs at once") - in place of the whole row's
# second attempt, which would boot all ten again. The first run's
# console is kept beside.
run_guest() {
    local i=$1 why
    shift
    guest_settings "$i"
    run_guest_once "$i" "$@"
    if [ -f "$DIR/stuck$i" ]; then
        why="was stuck"
    elif triple_faulted "$DIR/out$i"; then
        why="triple-faulted"
    else
        return 0
    fi
    [ "$(uptime_s)" -lt "$DEADLINE" ] || return 0
    echo "$why" >"$DIR/again$i"
    note "the nested guest $why: once more, on the same disk file"
    mv "$DIR/out$i" "$DIR/out$i.attempt1"
    rm -rf "$NET_WWW" "$NET_UP"
    run_guest_once "$i" "$@"
}

# The guest whose blk sum is SUM, or nothing.
owner_of() {
    local j=0
    while [ "$j" -lt "$MANY" ]; do
        [ "$(marker_sum "CHECK-SUM vda" "$DIR/out$j")" != "$1" ] || { echo "$j"; return; }
        j=$((j + 1))
    done
}

# Appends guest I's disk problems to BLK_BAD; VERDICT: ok or FAIL.
judge_blk() {
    local i=$1 want got owner rest line
    want=$(marker_sum "CHECK-SUM vda" "$DIR/out$i")
    got=$(sha_range "$DIR/disk$i.img" 0 "$BLK_MIB")
    rest=$(sha_range "$DIR/disk$i.img" "$BLK_MIB" $((DISK_MIB - BLK_MIB)))
    if [ -z "$want" ]; then
        BLK_BAD="$BLK_BAD guest $i: printed no CHECK-SUM;"
    elif [ "$got" != "$want" ]; then
        owner=$(owner_of "$got")
        if [ -n "$owner" ]; then
            BLK_BAD="$BLK_BAD guest $i: its disk file holds guest $owner's data;"
        else
            BLK_BAD="$BLK_BAD guest $i: disk file sha256 $got, the guest wrote $want;"
        fi
    elif [ "$rest" != "$ZERO_SUM" ]; then
        BLK_BAD="$BLK_BAD guest $i: its disk file changed past $BLK_MIB MiB (sha256 $rest);"
    elif ! grep -aq 'CHECK blk PASS' "$DIR/out$i"; then
        line=$(grep -ao 'CHECK blk FAIL.*' "$DIR/out$i" | tr -d '\r' | tail -n 1)
        BLK_BAD="$BLK_BAD guest $i: ${line:-no blk result};"
    else
        echo "$got" >>"$DIR/blk-sums"
        VERDICT=ok
        return
    fi
    VERDICT=FAIL
}

# Appends guest I's net problems to NET_BAD; VERDICT: ok or FAIL.
judge_net() {
    local i=$1 line down up
    guest_settings "$i"
    line=$(grep -ao 'CHECK net [A-Z]* .*' "$DIR/out$i" | tr -d '\r' | tail -n 1)
    down=$(echo "$line" | sed -n 's/.*down sha256 \([0-9a-f]*\).*/\1/p')
    up=$(sed -n 's/.*NET-UP-READY \([0-9a-f]\{64\}\).*/\1/p' "$DIR/out$i" | tail -n 1)
    case $line in
        "CHECK net PASS"*) ;;
        *) NET_BAD="$NET_BAD guest $i: ${line:-no net result};"; VERDICT=FAIL; return ;;
    esac
    if [ "$down" != "$(cut -c1-64 "$NET_WWW/down.sha256")" ]; then
        NET_BAD="$NET_BAD guest $i: received down.bin sha256 $down, not its host end's;"
    elif [ ! -f "$NET_UP" ]; then
        NET_BAD="$NET_BAD guest $i: its host end has no up.bin;"
    elif [ "$(sha_file "$NET_UP")" != "$up" ]; then
        NET_BAD="$NET_BAD guest $i: its host end holds up.bin sha256 $(sha_file "$NET_UP"), the guest sent $up;"
    else
        VERDICT=ok
        return
    fi
    VERDICT=FAIL
}

TANDEM=${TANDEM:-/bin/tandem}
MANY=$(sed -n 's/.*tandem\.many=\([0-9]*\).*/\1/p' /proc/cmdline)
MANY=${MANY:-10}
eval "set -- $(cat /run.args)"
VMM=$(sed -n 's/.*tandem\.many_vmm=\([a-z]*\).*/\1/p' /proc/cmdline)
VMM=${VMM:-tandem}
load_tun
mkdir -p "$DIR"
if [ "$VMM" = qemu ]; then
    mount -o bind /guest /hostroot/mnt && mount -o bind /tmp /hostroot/tmp
fi
: >/tmp/notes
: >"$DIR/blk-sums"
ZERO_SUM=$(dd if=/dev/zero bs=1M count=$((DISK_MIB - BLK_MIB)) 2>/dev/null | sha256sum | cut -c1-64)
i=0 pids=""
while [ "$i" -lt "$MANY" ]; do
    dd if=/dev/zero of="$DIR/disk$i.img" bs=1M count=0 seek="$DISK_MIB" 2>/dev/null
    run_guest "$i" "$@" &
    pids="$pids $!"
    i=$((i + 1))
done
note "$MANY guests started: tandem $*"
for pid in $pids; do wait "$pid"; done
note "all $MANY tandems ended"

EXIT_BAD="" BLK_BAD="" NET_BAD="" RERUNS=0 i=0
while [ "$i" -lt "$MANY" ]; do
    [ ! -f "$DIR/out$i.attempt1" ] || tr -d '\r' <"$DIR/out$i.attempt1" | sed "s/^/g$i first run| /"
    tr -d '\r' <"$DIR/out$i" | sed "s/^/g$i| /"
    i=$((i + 1))
done
cat /tmp/notes
i=0
while [ "$i" -lt "$MANY" ]; do
    code=$(cat "$DIR/exit$i" 2>/dev/null)
    [ "$code" = 0 ] || EXIT_BAD="$EXIT_BAD guest $i: tandem exited ${code:-?};"
    judge_blk "$i"
    blk=$VERDICT
    judge_net "$i"
    net=$VERDICT
    up=$(grep -ao 'TANDEM-GUEST-UP uptime=[0-9.]*' "$DIR/out$i" | tail -n 1)
    again=""
    if [ -f "$DIR/again$i" ]; then
        again=" (its second run: the first $(cat "$DIR/again$i"))"
        RERUNS=$((RERUNS + 1))
    fi
    echo "many: guest $i exit=${code:-?} blk=$blk net=$net ${up:-no TANDEM-GUEST-UP}$again"
    i=$((i + 1))
done
distinct=$(sort -u "$DIR/blk-sums" | wc -l)
[ "$distinct" = "$(wc -l <"$DIR/blk-sums")" ] || BLK_BAD="$BLK_BAD only $distinct distinct data sums;"
if [ -z "$EXIT_BAD" ]; then
    check_result many-exit PASS "$MANY/$MANY tandem processes exited 0 ($RERUNS run twice: a nested guest triple-faulted or was stuck)"
else
    check_result many-exit FAIL "${EXIT_BAD# }"
fi
if [ -z "$BLK_BAD" ]; then
    check_result many-blk PASS "$MANY/$MANY disk files hold exactly their own guest's $BLK_MIB MiB ($distinct distinct sha256) and zeros after it"
else
    check_result many-blk FAIL "${BLK_BAD# }"
fi
if [ -z "$NET_BAD" ]; then
    check_result many-net PASS "$MANY/$MANY guests moved $NET_MIB MiB each way with their own host end"
else
    check_result many-net FAIL "${NET_BAD# }"
fi
[ -z "$EXIT_BAD$BLK_BAD$NET_BAD" ]
