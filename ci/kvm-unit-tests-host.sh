#!/bin/sh
# shellcheck shell=sh
#! Runs in an emulated KVM host (ci/kvm-unit-tests.sh --arch aarch64 puts
#! it there as the host script): each kvm-unit-tests test of /kut/plan under
#! tandem, one after another, its output between
#!   KUT-BEGIN <name>
#!   KUT-END <name> status=<tandem's exit status>
#! (124: killed at its timeout). A plan line is
#!   name|file|cpus|memory|timeout seconds|command line
#! and the test's environment (NR_CPUS, MEMSIZE) is its initrd, as the
#! suite's own runner gives it.

while IFS='|' read -r name file cpus memory timeout cmdline; do
    [ -n "$name" ] || continue
    printf 'NR_CPUS=%s\nMEMSIZE=%s\n' "$cpus" "${memory%M}" >/tmp/kut.env
    echo "KUT-BEGIN $name"
    timeout -s KILL "$timeout" /bin/tandem run --kernel "/kut/$file" --initrd /tmp/kut.env \
        --cpus "$cpus" --memory "$memory" --cmdline "$cmdline" </dev/null 2>&1
    status=$?
    # busybox timeout's KILL leaves 137.
    [ "$status" -ne 137 ] || status=124
    echo
    echo "KUT-END $name status=$status"
done </kut/plan
echo "KUT-PLAN-DONE"
