#!/bin/sh
# shellcheck shell=dash
#! The balloon scenario, run by busybox sh inside an emulated KVM host
#! (ci/emulated-host.sh --host-script; see ci/balloon-e2e.sh). One tandem,
#! seccomp on, booted from a --config-file with "balloon" (0 MiB) and
#! serving its API: the test guest (512 MiB) runs check balloon
#! (ci/guest-checks.d/75-balloon.sh), filling and freeing 300 MiB. Then:
#!   balloon-inflate  PATCH /balloon 256 MiB; GET /balloon/statistics says
#!                    actual_mib 256 within 300 s
#!   balloon-rss      tandem's VmRSS fell by at least 80 % of 256 MiB
#!   balloon-deflate  PATCH /balloon 0; actual_mib 0 within 300 s
#!   balloon-exit     tandem (seccomp on) exits 0 when the guest powers off
#! and the guest's own balloon-guest line. Exits 0 when every check passed.

SOCK=/tmp/api.sock
OUT=/tmp/balloon.out
INFLATE_MIB=256
FILL_MIB=300
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

cat >/tmp/balloon.json <<JSON
{
  "boot-source": {"kernel_image_path": "/guest/vmlinuz", "initrd_path": "/guest/initramfs.cpio.gz",
                  "boot_args": "console=ttyS0 quiet panic=-1 tandem.mode=checks tandem.checks=balloon tandem.balloon_fill_mib=$FILL_MIB"},
  "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
  "balloon": {"amount_mib": 0, "deflate_on_oom": false}
}
JSON
rm -f "$SOCK"
start_tandem "$OUT" --api-sock "$SOCK" --id balloon --config-file /tmp/balloon.json
if wait_until 300 grep -q BALLOON-FREED "$OUT"; then
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
exit "$FAILED"
