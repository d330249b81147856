#!/bin/sh
# shellcheck shell=dash
#! The balloon scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/balloon-e2e.sh). Two tandems
#! in turn, seccomp on, each booted from a --config-file with "balloon"
#! (0 MiB, statistics every 1 s) and serving its API; the test guest has
#! 512 MiB. Run 1's guest runs check balloon
#! (ci/guest-checks.d/75-balloon.sh): fills 300 MiB, holds it 12 s, frees
#! it. Then:
#!   balloon-stats    while the guest held the fill and after it freed it,
#!                    GET /balloon/statistics: total_memory is the guest's
#!                    MemTotal and free_memory rose by at least 200 MiB;
#!                    PATCH /balloon/statistics to 0 is refused, to 2 taken
#!   balloon-inflate  PATCH /balloon 256 MiB; GET /balloon/statistics says
#!                    actual_mib 256 within 300 s
#!   balloon-rss      tandem's VmRSS fell by at least 80 % of 256 MiB
#!   balloon-deflate  PATCH /balloon 0; actual_mib 0 within 300 s
#!   balloon-exit     tandem (seccomp on) exits 0 when the guest powers off
#! Run 2 has deflate_on_oom and the virtio console (hvc0); its guest runs
#! check balloon-oom:
#!   balloon-oom      PATCH /balloon 384 MiB (actual 384 within 300 s), then
#!                    the guest fills 48 MiB more than it has available:
#!                    every MiB written, actual_mib fell below 384, no OOM
#!                    line on the guest's console
#!   balloon-oom-exit tandem exits 0
#! and the guest's own balloon-guest and balloon-oom-guest lines. Exits 0
#! when every check passed.

SOCK=/tmp/api.sock
OUT=/tmp/balloon.out
OOM_OUT=/tmp/balloon-oom.out
INFLATE_MIB=256
FILL_MIB=300
HOLD_S=12
OOM_INFLATE_MIB=384
RUN_TIMEOUT=600
FAILED=0
# shellcheck disable=SC2034 # used by host-lib.sh
HOST_LOG_PREFIX=balloon-host
# shellcheck source=ci/host-lib.sh
. "$(dirname "$0")/host-lib.sh"
TANDEM=${TANDEM:-/bin/tandem}

rss_kb() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$TANDEM_PID/status"; }
actual_mib() {
    api GET /balloon/statistics >/dev/null &&
        sed -n 's/.*"actual_mib": *\([0-9]*\).*/\1/p' /tmp/api.answer
}
# shellcheck disable=SC2317 # run by wait_until
actual_is() { [ "$(actual_mib)" = "$1" ]; }
# The guest's statistic $1 (bytes) in GET /balloon/statistics, or nothing.
guest_stat() {
    api GET /balloon/statistics >/dev/null &&
        sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" /tmp/api.answer
}
# The value of NAME=VALUE ($1) in the last line of $2 holding marker $3.
marker_value() { grep "$3" "$2" | tail -n 1 | sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }

# A config file: $1 the file, $2 deflate_on_oom, $3 the guest's checks
# and their arguments, $4 the guest's console: serial (default) or
# virtio (tandem's machine-config extension; the guest's hvc0).
balloon_config() {
    local console=${4:-serial} tty=ttyS0
    [ "$console" = serial ] || tty=hvc0
    cat >"$1" <<JSON
{
  "boot-source": {"kernel_image_path": "/guest/vmlinuz", "initrd_path": "/guest/initramfs.cpio.gz",
                  "boot_args": "console=$tty quiet panic=-1 tandem.mode=checks $3"},
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 512, "console": "$console"},
  "balloon": {"amount_mib": 0, "deflate_on_oom": $2, "stats_polling_interval_s": 1}
}
JSON
}

# balloon-stats: reads free_memory while the guest holds its fill and
# after it freed it. Leaves the guest at BALLOON-FREED.
stats_check() {
    local held freed total guest_total patch_off
    if ! wait_until 300 grep -q BALLOON-FILLED "$OUT"; then
        check balloon-stats FAIL "the guest never said BALLOON-FILLED"
        return
    fi
    # Two refreshes at 1 s each, well within the guest's 12 s hold.
    sleep 3
    held=$(guest_stat free_memory)
    if ! wait_until 300 grep -q BALLOON-FREED "$OUT"; then
        check balloon-stats FAIL "the guest never said BALLOON-FREED"
        return
    fi
    sleep 3
    freed=$(guest_stat free_memory)
    total=$(guest_stat total_memory)
    guest_total=$(marker_value mem_total_kb "$OUT" BALLOON-FREED)
    guest_total=$((${guest_total:-0} * 1024))
    patch_off=refused
    api PATCH /balloon/statistics '{"stats_polling_interval_s": 0}' && patch_off=taken
    grep -q "cannot be turned on or off" /tmp/api.answer || patch_off="$patch_off without the reason"
    api PATCH /balloon/statistics '{"stats_polling_interval_s": 2}' || patch_off="$patch_off; interval 2 refused"
    local detail="free_memory ${held:-?} B holding $FILL_MIB MiB, ${freed:-?} B freed; total_memory ${total:-?} B, guest MemTotal $guest_total B; PATCH to 0 $patch_off"
    if [ -n "$held" ] && [ -n "$freed" ] && [ "$total" = "$guest_total" ] &&
        [ $((freed - held)) -ge $((200 << 20)) ] && [ "$patch_off" = refused ]; then
        check balloon-stats PASS "$detail: rose $(((freed - held) >> 20)) MiB"
    else
        check balloon-stats FAIL "$detail"
    fi
}

balloon_config /tmp/balloon.json false \
    "tandem.checks=balloon tandem.balloon_fill_mib=$FILL_MIB tandem.balloon_hold_s=$HOLD_S"
rm -f "$SOCK"
start_tandem "$OUT" --api-sock "$SOCK" --id balloon --config-file /tmp/balloon.json
stats_check
if grep -q BALLOON-FREED "$OUT"; then
    sleep 2
    before=$(rss_kb)
    note "guest filled and freed $FILL_MIB MiB; tandem VmRSS $before kB"
    api PATCH /balloon "{\"amount_mib\": $INFLATE_MIB}"
    if wait_until 300 actual_is "$INFLATE_MIB"; then
        sleep 2
        after=$(rss_kb)
        check balloon-inflate PASS "actual_mib $INFLATE_MIB: $(cat /tmp/api.answer)"
        fell=$((before - after))
        if [ "$fell" -ge $((INFLATE_MIB * 1024 * 8 / 10)) ]; then
            check balloon-rss PASS "VmRSS $before -> $after kB: fell $((fell / 1024)) MiB for $INFLATE_MIB MiB inflated"
        else
            check balloon-rss FAIL "VmRSS $before -> $after kB: fell $((fell / 1024)) MiB, want 80 % of $INFLATE_MIB"
        fi
    else
        check balloon-inflate FAIL "actual_mib is '$(actual_mib)' after 300 s: $(cat /tmp/api.answer)"
    fi
    api PATCH /balloon '{"amount_mib": 0}'
    if wait_until 300 actual_is 0; then
        check balloon-deflate PASS "actual_mib 0; VmRSS $(rss_kb) kB"
    else
        check balloon-deflate FAIL "actual_mib is '$(actual_mib)' after 300 s"
    fi
else
    check balloon-inflate FAIL "the guest never said BALLOON-FREED"
fi
finish_tandem "$RUN_TIMEOUT"
if [ "$TANDEM_EXIT" = 0 ] && ! grep -q "seccomp" "$OUT"; then
    check balloon-exit PASS "tandem exited 0, no seccomp line"
else
    check balloon-exit FAIL "tandem exited $TANDEM_EXIT; $(grep -m1 'seccomp\|tandem: error' "$OUT")"
fi

# Run 2: deflate on OOM.
# The second run's guest talks on the virtio console: the balloon beside
# either console.
balloon_config /tmp/balloon-oom.json true "tandem.checks=balloon-oom tandem.balloon_oom_mib=$OOM_INFLATE_MIB" virtio
rm -f "$SOCK"
TANDEM_EXIT=""
OUT=$OOM_OUT
start_tandem "$OUT" --api-sock "$SOCK" --id balloon-oom --config-file /tmp/balloon-oom.json
if wait_until 300 grep -q BALLOON-OOM-READY "$OUT" &&
    api PATCH /balloon "{\"amount_mib\": $OOM_INFLATE_MIB}" &&
    wait_until 300 actual_is "$OOM_INFLATE_MIB"; then
    if wait_until 600 grep -q BALLOON-OOM-DONE "$OUT"; then
        sleep 2
        after=$(actual_mib)
        fill=$(marker_value fill_mib "$OUT" BALLOON-OOM-DONE)
        written=$(marker_value written_mib "$OUT" BALLOON-OOM-DONE)
        oom_line=$(grep -m1 -E 'Out of memory|oom-kill' "$OUT")
        detail="actual_mib $OOM_INFLATE_MIB -> ${after:-?}; guest wrote ${written:-?} of ${fill:-?} MiB"
        if [ -n "$after" ] && [ "$after" -lt "$OOM_INFLATE_MIB" ] && [ -n "$written" ] &&
            [ "$written" = "$fill" ] && [ -z "$oom_line" ]; then
            check balloon-oom PASS "$detail; no OOM line on the console"
        else
            check balloon-oom FAIL "$detail; console: ${oom_line:-no OOM line}"
        fi
    else
        check balloon-oom FAIL "the guest never said BALLOON-OOM-DONE; actual_mib $(actual_mib)"
    fi
else
    check balloon-oom FAIL "no inflate to $OOM_INFLATE_MIB MiB: actual_mib '$(actual_mib)'"
fi
finish_tandem "$RUN_TIMEOUT"
if [ "$TANDEM_EXIT" = 0 ] && ! grep -q "seccomp" "$OUT"; then
    check balloon-oom-exit PASS "tandem exited 0, no seccomp line"
else
    check balloon-oom-exit FAIL "tandem exited $TANDEM_EXIT; $(grep -m1 'seccomp\|tandem: error' "$OUT")"
fi
exit "$FAILED"
