#!/bin/sh
# shellcheck shell=dash
#! The snapshot scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; rows in ci/snapshot-e2e.sh). The test
#! guest (2 vCPUs, 512 MiB, serial console; virtio-blk on a disk file,
#! virtio-net on tap0, virtio-rng) runs the snapshot-ticks check
#! (ci/guest-checks.d/07-snapshot-ticks.sh): a SNAP-TICK line a second,
#! its count kept in guest RAM, each tick writing its number to the disk,
#! reading the rng and fetching a file from this host. Driven only
#! through `tandem api`; a restored VM is loaded paused, tap0 (recreated
#! by the new tandem) is given its address again, then it is resumed:
#!   snap-create    after 5 ticks: PATCH /vm Paused, PUT /snapshot/create
#!                  answered 204, both files there, the memory file 512 MiB long
#!   snap-restore   tandem SIGKILLed; a new tandem: PUT /snapshot/load
#!                  (resume_vm) answered 204, GET / Running, and the guest's
#!                  next tick is the snapshot's last + 1 (it went on, it did
#!                  not boot again: no TANDEM-GUEST-UP line) and 3 more follow
#!   snap-clock     the guest's uptime never went backwards across the restore
#!   snap-no-stall  no RCU stall, soft lockup, hung task or unstable
#!                  clocksource in the guest's log after the restore
#!   snap-devices   every tick after the first one after the restore did
#!                  its disk write, rng read and network fetch (io=ok)
#!   snap-tcp       the TCP connection the guest opened to this host (port
#!                  9000, one accepted, never reopened) before the snapshot
#!                  carries the restored guest's ticks
#!   snap-disk      the disk file holds every tick's number, before the
#!                  snapshot and after the restore, in its sector
#!   snap-restore-again  the same snapshot restored SNAP_RESTORES more times
#!                  (default 4), each going on from the same tick
#!   snap-diff      a fresh VM with track_dirty_pages, rewriting 16 MiB of
#!                  RAM: full snapshot, runs on, Diff and a second full
#!                  snapshot at one pause; the diff rebased onto the first
#!                  equals the second byte for byte and goes on from the
#!                  diff's last tick; that restored VM's own diff, checked
#!                  the same way, equals a full snapshot too
#!   snap-migrate   a fresh VM (virtio-blk, virtio-rng) rewriting 32 MiB of
#!                  its RAM over and over (tandem.dirty_mib) is migrated to
#!                  a second tandem (--migrate-listen, PUT /migrate; over
#!                  TCP on x86_64, a Unix socket on aarch64) and goes on
#!                  there from its next tick, io=ok, every rewrite read
#!                  back intact on both sides; the source exits 0
#! Prints CHECK <name> PASS|FAIL <detail>; exits 0 when none failed.
#! Environment: TANDEM (/bin/tandem), SNAP_RESTORES (4).

SOCK=/tmp/snap.sock
STATE=/tmp/vm.state
MEMORY=/tmp/vm.mem
DIFF_STATE=/tmp/vm.diff.state
DIFF_MEMORY=/tmp/vm.diff.mem
DISK=/tmp/vda.img
# The host's end of tap0 keeps one MAC across tandem processes (a new TAP
# gets a random one), so the restored guest's ARP entry stays right.
TAP_MAC=52:54:00:77:00:01
# The diff VM's RAM: half the other VMs', as every byte of its four memory
# files is read and compared, and a slow emulated host takes minutes for
# each GiB it reads. (The migration VM at 256 MiB, rewriting 32 MiB with
# random bytes, did not finish 2 passes in 300 s on such a host; at 512
# it does.)
DIFF_MIB=256
FAILED=0
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=snapshot-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"

answer() { cat /tmp/api.answer /tmp/api.err | tr '\n' ' '; }

# The last SNAP-TICK number in FILE (0 before the first).
last_tick() {
    local n
    n=$(grep -a 'SNAP-TICK ' "$1" | tail -n 1 | sed -n 's/.*SNAP-TICK \([0-9]*\).*/\1/p')
    echo "${n:-0}"
}
# shellcheck disable=SC2317 # run by wait_until
tick_after() { [ "$(last_tick "$1")" -gt "$2" ]; }
# The first SNAP-TICK line of FILE, as "n uptime stalls".
first_tick() { grep -a 'SNAP-TICK ' "$1" | head -n 1 | sed -n 's/.*SNAP-TICK \([0-9]*\) uptime=\([0-9.]*\) stalls=\([0-9]*\).*/\1 \2 \3/p'; }
tick_fields() { grep -a 'SNAP-TICK ' "$1" | sed -n 's/.*SNAP-TICK \([0-9]*\) uptime=\([0-9.]*\) stalls=\([0-9]*\).*/\1 \2 \3/p'; }

start_api_tandem() {
    rm -f "$SOCK"
    TANDEM_EXIT=""
    start_tandem "$1" --api-sock "$SOCK" --id snap
    wait_until 30 [ -S "$SOCK" ]
}

# Addresses tap0 once the tandem just started has created it.
tap_up() {
    wait_until 60 [ -d /sys/class/net/tap0 ] &&
        ip link set tap0 address "$TAP_MAC" &&
        ip addr add "$HOST_IP/24" dev tap0 && ip link set tap0 up
}

# The ticks of FILE after tick N whose I/O did not all work, as "n:io".
bad_io_after() {
    grep -a 'SNAP-TICK ' "$1" | sed -n 's/.*SNAP-TICK \([0-9]*\) .* io=\([a-z,]*\).*/\1:\2/p' |
        awk -F: -v n="$2" '$1 > n && $2 != "ok" { printf "%s ", $0 }'
}

# The ticks 1..N whose sector of the disk file does not hold "tick <n>".
missing_ticks() {
    local n=1
    while [ "$n" -le "$1" ]; do
        [ "$(dd if="$DISK" bs=512 skip="$n" count=1 2>/dev/null | head -n 1 | tr -s ' ' | cut -d' ' -f1-2)" = "tick $n" ] ||
            printf '%s ' "$n"
        n=$((n + 1))
    done
}

# Ends the running tandem the hard way, as a crash would.
kill_tandem() {
    kill -9 "$TANDEM_PID" 2>/dev/null
    finish_tandem 10
}

boot_and_snapshot() {
    local args t0 t1
    args="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=snapshot-ticks"
    if ! start_api_tandem /tmp/first.out ||
        ! api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 512}' ||
        ! api PUT /boot-source "{\"kernel_image_path\": \"/guest/vmlinuz\", \"initrd_path\": \"/guest/initramfs.cpio.gz\", \"boot_args\": \"$args\"}" ||
        ! api PUT /drives/vda "{\"drive_id\": \"vda\", \"path_on_host\": \"$DISK\", \"is_root_device\": false, \"is_read_only\": false}" ||
        ! api PUT /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\", \"guest_mac\": \"$GUEST_MAC\"}" ||
        ! api PUT /entropy '{}' ||
        ! api PUT /actions '{"action_type": "InstanceStart"}' || ! tap_up; then
        check snap-create FAIL "the first VM did not start: $(answer)"
        return 1
    fi
    if ! wait_until 600 tick_after /tmp/first.out 4; then
        check snap-create FAIL "the guest never ticked 5 times"
        return 1
    fi
    api PATCH /vm '{"state": "Paused"}' || { check snap-create FAIL "pause: $(answer)"; return 1; }
    SAVED_TICK=$(last_tick /tmp/first.out)
    t0=$(date +%s)
    if ! api PUT /snapshot/create "{\"snapshot_path\": \"$STATE\", \"mem_file_path\": \"$MEMORY\"}"; then
        check snap-create FAIL "PUT /snapshot/create: $(answer)"
        return 1
    fi
    t1=$(date +%s)
    if [ "$(stat -c %s "$MEMORY")" = $((512 << 20)) ] && [ -s "$STATE" ]; then
        check snap-create PASS "paused after SNAP-TICK $SAVED_TICK, snapshot in $((t1 - t0)) s: state $(wc -c <"$STATE") bytes, memory 512 MiB ($(du -k "$MEMORY" | cut -f1) KiB allocated)"
    else
        check snap-create FAIL "files: state $(wc -c <"$STATE" 2>&1), memory $(stat -c %s "$MEMORY" 2>&1) bytes"
        return 1
    fi
    kill_tandem
}

# Loads a snapshot into a new tandem whose output goes to OUT; true when
# the guest then ticks 4 times, going on from its last tick. The snapshot
# is STATE (default $STATE, with $MEMORY) and its last tick FROM (default
# SAVED_TICK); EXTRA is added to the load's JSON body. Sets WHY.
restore_into() {
    local out=$1 state=${2:-$STATE} from=${3:-$SAVED_TICK} extra=${4:-} first
    WHY=""
    if ! start_api_tandem "$out"; then WHY="no API socket"; return 1; fi
    if ! api PUT /snapshot/load "{\"snapshot_path\": \"$state\", \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": \"$MEMORY\"}, \"resume_vm\": false$extra}"; then
        WHY="PUT /snapshot/load: $(answer)"
        return 1
    fi
    if ! tap_up; then WHY="tap0: no address"; return 1; fi
    if ! api PATCH /vm '{"state": "Resumed"}'; then WHY="resume: $(answer)"; return 1; fi
    if ! api GET / || ! grep -q '"state": *"Running"' /tmp/api.answer; then
        WHY="GET /: $(answer)"
        return 1
    fi
    if ! wait_until 120 tick_after "$out" $((from + 3)); then
        WHY="ticks after the restore: last $(last_tick "$out"), wanted $((from + 4))"
        return 1
    fi
    first=$(first_tick "$out")
    if [ "${first%% *}" != $((from + 1)) ]; then
        WHY="the first tick after the restore is '${first%% *}', the snapshot's last was $from"
        return 1
    fi
    if grep -aq TANDEM-GUEST-UP "$out"; then WHY="the guest booted again"; return 1; fi
    BAD_IO=$(bad_io_after "$out" $((from + 1)))
    if [ -n "$BAD_IO" ]; then WHY="ticks whose I/O failed after the restore: $BAD_IO"; return 1; fi
}

# A diff on top of a full snapshot, checked against the truth: a fresh VM
# (dirty-page tracking on, rewriting 16 MiB of RAM over and over) gets a
# full snapshot, runs on, and is paused again for a Diff and, at the same
# pause, a second full snapshot. `tandem rebase-memory` applies the diff to
# a copy of the first full snapshot's memory file, which must then equal
# the second's byte for byte; the diff's state with it goes on from the
# diff's last tick, loaded with tracking, and its own diff (after 2 more
# ticks) rebased onto the same file again equals a full snapshot taken at
# that pause.
diff_snapshot() {
    local args data full_tick diff_tick first differ again_tick again_data
    args="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=snapshot-ticks tandem.dirty_mib=16"
    dd if=/dev/zero of=/tmp/vdd.img bs=1M count=4 2>/dev/null
    rm -f /tmp/d-full.mem /tmp/d-later.mem "$DIFF_MEMORY"
    if ! start_api_tandem /tmp/diff-first.out ||
        ! api PUT /machine-config "{\"vcpu_count\": 2, \"mem_size_mib\": $DIFF_MIB, \"track_dirty_pages\": true}" ||
        ! api PUT /boot-source "{\"kernel_image_path\": \"/guest/vmlinuz\", \"initrd_path\": \"/guest/initramfs.cpio.gz\", \"boot_args\": \"$args\"}" ||
        ! api PUT /drives/vda '{"drive_id": "vda", "path_on_host": "/tmp/vdd.img", "is_root_device": false, "is_read_only": false}' ||
        ! api PUT /actions '{"action_type": "InstanceStart"}' ||
        ! wait_until 600 tick_after /tmp/diff-first.out 3 ||
        ! api PATCH /vm '{"state": "Paused"}' ||
        ! api PUT /snapshot/create '{"snapshot_path": "/tmp/d-full.state", "mem_file_path": "/tmp/d-full.mem"}'; then
        check snap-diff FAIL "the VM before the diff: $(answer)"
        kill_tandem
        return
    fi
    full_tick=$(last_tick /tmp/diff-first.out)
    if ! api PATCH /vm '{"state": "Resumed"}' || ! wait_until 120 tick_after /tmp/diff-first.out $((full_tick + 3)) ||
        ! api PATCH /vm '{"state": "Paused"}'; then
        check snap-diff FAIL "running on after the full snapshot: $(answer)"
        kill_tandem
        return
    fi
    sleep 1 # the last tick line on its way to the output file
    diff_tick=$(last_tick /tmp/diff-first.out)
    if ! api PUT /snapshot/create "{\"snapshot_path\": \"$DIFF_STATE\", \"mem_file_path\": \"$DIFF_MEMORY\", \"snapshot_type\": \"Diff\"}"; then
        check snap-diff FAIL "PUT /snapshot/create Diff: $(answer)"
        kill_tandem
        return
    fi
    api PUT /snapshot/create '{"snapshot_path": "/tmp/d-later.state", "mem_file_path": "/tmp/d-later.mem"}' ||
        { check snap-diff FAIL "the full snapshot beside the diff: $(answer)"; kill_tandem; return; }
    kill_tandem
    data=$(du -k "$DIFF_MEMORY" | cut -f1)
    if ! "$TANDEM" rebase-memory --memory-path /tmp/d-full.mem --diff-path "$DIFF_MEMORY" >/tmp/rebase.out 2>&1; then
        check snap-diff FAIL "rebase-memory: $(cat /tmp/rebase.out)"
        return
    fi
    differ=$(cmp -l /tmp/d-full.mem /tmp/d-later.mem | head -n 1000000 | awk '{ p[int(($1 - 1) / 4096)] = 1 } END { n = 0; for (k in p) n++; print n }')
    rm -f /tmp/d-later.mem
    if [ "$differ" != 0 ]; then
        check snap-diff FAIL "the rebased memory differs from a full snapshot taken at the diff's pause in $differ pages"
        return
    fi
    if ! start_api_tandem /tmp/diff.out ||
        ! api PUT /snapshot/load "{\"snapshot_path\": \"$DIFF_STATE\", \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": \"/tmp/d-full.mem\"}, \"resume_vm\": true, \"track_dirty_pages\": true}" ||
        ! wait_until 120 tick_after /tmp/diff.out $((diff_tick + 2)); then
        check snap-diff FAIL "the rebased diff did not go on: $(answer)"
        kill_tandem
        return
    fi
    first=$(first_tick /tmp/diff.out)
    # The chain goes on: the restored VM (loaded with tracking) gets a
    # diff of its own, checked the same way.
    api PATCH /vm '{"state": "Paused"}'
    sleep 1 # the last tick line on its way to the output file
    again_tick=$(last_tick /tmp/diff.out)
    if [ "${first%% *}" != $((diff_tick + 1)) ]; then
        check snap-diff FAIL "the rebased diff went on from tick '${first%% *}', not $((diff_tick + 1))"
    elif ! api PUT /snapshot/create '{"snapshot_path": "/tmp/d-again.state", "mem_file_path": "/tmp/d-again.mem", "snapshot_type": "Diff"}' ||
        ! api PUT /snapshot/create '{"snapshot_path": "/tmp/d-later.state", "mem_file_path": "/tmp/d-later.mem"}' ||
        ! "$TANDEM" rebase-memory --memory-path /tmp/d-full.mem --diff-path /tmp/d-again.mem >/tmp/rebase.out 2>&1; then
        check snap-diff FAIL "the restored VM's diff: $(answer) $(cat /tmp/rebase.out)"
    else
        again_data=$(du -k /tmp/d-again.mem | cut -f1)
        differ=$(cmp -l /tmp/d-full.mem /tmp/d-later.mem | head -n 1000000 | awk '{ p[int(($1 - 1) / 4096)] = 1 } END { n = 0; for (k in p) n++; print n }')
        if [ "$differ" = 0 ]; then
            check snap-diff PASS "diff after tick $diff_tick of a VM rewriting 16 MiB of RAM: $data KiB of data in its $DIFF_MIB MiB memory file; rebased onto the full snapshot of tick $full_tick it equals a full snapshot taken at the same pause byte for byte, and goes on from tick $((diff_tick + 1)); restored with tracking, its own diff after tick $again_tick ($again_data KiB) rebased onto that equals a full snapshot of its pause too"
        else
            check snap-diff FAIL "the restored VM's diff, rebased, differs from a full snapshot taken at its pause in $differ pages"
        fi
    fi
    rm -f /tmp/d-again.* /tmp/d-later.* /tmp/d-full.mem "$DIFF_MEMORY"
    kill_tandem
}

# Live migration: a fresh VM (2 vCPUs, 512 MiB; virtio-blk on a disk of
# its own and virtio-rng — no network: on one host the TAP would be held
# by both ends) ticks, is migrated to a second tandem waiting with
# --migrate-listen, and goes on there from its next tick with io=ok; the
# source exits 0 on its own. The x86_64 row migrates over TCP (this
# emulated host's own loopback), the aarch64 rows over a Unix socket, so
# both transports carry a real guest.
migrate_check() {
    local args src_pid dst_pid report tick first src_exit endpoint=/tmp/mig.sock passes bad
    args="console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=snapshot-ticks tandem.dirty_mib=32"
    dd if=/dev/zero of=/tmp/vdb.img bs=1M count=4 2>/dev/null
    if ! start_api_tandem /tmp/mig-src.out ||
        ! api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 512}' ||
        ! api PUT /boot-source "{\"kernel_image_path\": \"/guest/vmlinuz\", \"initrd_path\": \"/guest/initramfs.cpio.gz\", \"boot_args\": \"$args\"}" ||
        ! api PUT /drives/vda '{"drive_id": "vda", "path_on_host": "/tmp/vdb.img", "is_root_device": false, "is_read_only": false}' ||
        ! api PUT /entropy '{}' ||
        ! api PUT /actions '{"action_type": "InstanceStart"}' ||
        ! wait_until 600 tick_after /tmp/mig-src.out 3 ||
        ! wait_until 300 grep -aq "SNAP-DIRTY 2 " /tmp/mig-src.out; then
        check snap-migrate FAIL "the source VM did not tick 3 times and rewrite its RAM twice: $(answer); its last lines: $(tail -n 3 /tmp/mig-src.out | tr -d '\r' | tr '\n' ' ')"
        kill_tandem
        return
    fi
    src_pid=$TANDEM_PID
    if [ "$(uname -m)" = x86_64 ]; then
        ip link set lo up
        endpoint=tcp:127.0.0.1:4000
    fi
    spawn_tandem /tmp/mig-dst.out --api-sock /tmp/dst.sock --level Info --migrate-listen "$endpoint"
    dst_pid=$TANDEM_PID TANDEM_PID=$src_pid
    wait_until 30 grep -q "waiting for a migration on" /tmp/mig-dst.out
    if ! api PUT /migrate "{\"destination\": \"$endpoint\"}"; then
        check snap-migrate FAIL "PUT /migrate: $(answer)"
        kill -9 "$dst_pid"
        kill_tandem
        return
    fi
    report=$(cat /tmp/api.answer)
    finish_tandem 30
    src_exit=$TANDEM_EXIT tick=$(last_tick /tmp/mig-src.out) TANDEM_PID=$dst_pid
    if wait_until 120 tick_after /tmp/mig-dst.out $((tick + 3)); then
        first=$(first_tick /tmp/mig-dst.out)
    fi
    # The rewrites of RAM go on in the destination, every one intact.
    wait_until 300 grep -aq "SNAP-DIRTY .* ok" /tmp/mig-dst.out
    passes="$(grep -ac 'SNAP-DIRTY .* ok' /tmp/mig-src.out) + $(grep -ac 'SNAP-DIRTY .* ok' /tmp/mig-dst.out)"
    bad=$(cat /tmp/mig-src.out /tmp/mig-dst.out | grep -a 'SNAP-DIRTY .* BAD' | tr -d '\r' | tr '\n' ' ')
    if [ "${first%% *}" = $((tick + 1)) ] && [ "$src_exit" = 0 ] && [ -z "$bad" ] &&
        grep -aq "SNAP-DIRTY .* ok" /tmp/mig-dst.out &&
        [ -z "$(bad_io_after /tmp/mig-dst.out "$tick")" ] && ! grep -aq TANDEM-GUEST-UP /tmp/mig-dst.out; then
        check snap-migrate PASS "rewriting 32 MiB of RAM over and over ($passes passes read back intact, source + destination), migrated over $endpoint after tick $tick, goes on from tick $((tick + 1)) with io=ok; the source exited 0; $report"
    else
        check snap-migrate FAIL "source exit $src_exit after tick $tick; destination's first tick '${first%% *}', RAM rewrites read back wrong: '$bad', passes $passes, failed I/O: $(bad_io_after /tmp/mig-dst.out "$tick"); $report; destination: $(tail -n 3 /tmp/mig-dst.out | tr '\n' ' ')"
    fi
    kill -9 "$dst_pid" 2>/dev/null
    wait "$dst_pid" 2>/dev/null
}

# The guest's TCP connection: the SNAP-TCP ticks this host's one-shot
# listener received, compared with the restore.
tcp_check() {
    local got
    got=$(sed -n 's/^SNAP-TCP \([0-9]*\).*/\1/p' /tmp/tcp.out | tail -n 1)
    if [ "${got:-0}" -gt $((SAVED_TICK + 1)) ]; then
        check snap-tcp PASS "the connection opened before the snapshot carried tick $got after the restore (saved at tick $SAVED_TICK; $(grep -c SNAP-TCP /tmp/tcp.out) lines in all)"
    else
        check snap-tcp FAIL "the connection's last tick: ${got:-none} (saved at tick $SAVED_TICK)"
    fi
    # Later restores rewind the guest's end of it: close this end.
    kill "$TCP_PID" 2>/dev/null
}

main() {
    local restores=${SNAP_RESTORES:-4} i ok=0 back stalls last missing
    TANDEM=${TANDEM:-/bin/tandem} TANDEM_EXIT=""
    load_tun
    dd if=/dev/zero of="$DISK" bs=1M count=4 2>/dev/null
    mkdir -p "$NET_WWW" && echo tick >"$NET_WWW/tick.txt"
    httpd -f -p 8080 -h "$NET_WWW" &
    HTTPD_PID=$!
    # busybox nc ends a connection once its stdin ends: give it one that
    # does not.
    tail -f /dev/null | nc -l -p 9000 >/tmp/tcp.out 2>&1 &
    TCP_PID=$!
    boot_and_snapshot || { FAILED=1; kill_tandem; echo "snapshot-host: done, a check failed"; return 1; }

    if restore_into /tmp/second.out; then
        check snap-restore PASS "new tandem, load 204, Running; ticks go on: $(tick_fields /tmp/second.out | head -n 4 | cut -d' ' -f1 | tr '\n' ' ')after $SAVED_TICK"
    else
        check snap-restore FAIL "$WHY"
    fi
    # Guest uptime: the first VM's ticks, then the restored one's.
    back=$({ tick_fields /tmp/first.out; tick_fields /tmp/second.out; } |
        awk 'NR > 1 && $2 < p { print "tick " $1 " at " $2 " s after " p " s" } { p = $2 }')
    if [ -z "$back" ] && [ -n "$(first_tick /tmp/second.out)" ]; then
        check snap-clock PASS "guest uptime $(grep -a "SNAP-TICK $SAVED_TICK " /tmp/first.out | sed 's/.*uptime=\([0-9.]*\).*/\1/' | tr -d '\r') s at the snapshot, $(first_tick /tmp/second.out | cut -d' ' -f2) s at the next tick"
    else
        check snap-clock FAIL "${back:-no ticks after the restore}"
    fi
    stalls=$(tick_fields /tmp/second.out | tail -n 1 | cut -d' ' -f3)
    if [ "${stalls:-x}" = 0 ]; then
        check snap-no-stall PASS "no stall, lockup or unstable clocksource line in the guest's log"
    else
        check snap-no-stall FAIL "the guest's log has ${stalls:-no tick with a count of} stall/lockup lines"
    fi
    last=$(last_tick /tmp/second.out)
    if [ "$(bad_io_after /tmp/second.out $((SAVED_TICK + 1)))$(bad_io_after /tmp/first.out 0)" = "" ] &&
        [ "$last" -gt $((SAVED_TICK + 1)) ]; then
        check snap-devices PASS "ticks 1-$SAVED_TICK before and $((SAVED_TICK + 2))-$last after the restore each wrote the disk, read the rng and fetched over the network"
    else
        check snap-devices FAIL "failed I/O before: $(bad_io_after /tmp/first.out 0); after: $(bad_io_after /tmp/second.out $((SAVED_TICK + 1)))"
    fi
    tcp_check
    kill_tandem
    missing=$(missing_ticks "$last")
    if [ -z "$missing" ] && [ "$last" -gt "$SAVED_TICK" ]; then
        check snap-disk PASS "sectors 1-$last hold their tick's number ($SAVED_TICK written before the snapshot)"
    else
        check snap-disk FAIL "ticks missing from the disk: ${missing:-none after the snapshot}"
    fi

    for i in $(seq 1 "$restores"); do
        if restore_into "/tmp/again-$i.out"; then ok=$((ok + 1)); else note "restore $i: $WHY"; fi
        kill_tandem
    done
    if [ "$ok" = "$restores" ]; then
        check snap-restore-again PASS "the same snapshot restored $restores more times, each going on from tick $((SAVED_TICK + 1))"
    else
        check snap-restore-again FAIL "$ok of $restores restores went on from tick $((SAVED_TICK + 1)) (notes say why)"
    fi
    diff_snapshot
    migrate_check
    kill "$HTTPD_PID"
    echo "snapshot-host: done, $([ "$FAILED" = 0 ] && echo 'every check passed' || echo 'a check failed')"
    return "$FAILED"
}

main "$@"; exit
