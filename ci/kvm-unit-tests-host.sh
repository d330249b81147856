#!/bin/sh
# shellcheck shell=sh
#! Runs in an emulated KVM host (ci/kvm-unit-tests.sh --arch aarch64 puts
#! it there as the host script): each kvm-unit-tests test of /kut/plan under
#! tandem, one after another, its output between
#!   KUT-BEGIN <name>
#!   KUT-END <name> status=<tandem's exit status>
#! (124: killed at its timeout). A plan line is
#!   name|file|cpus|memory|timeout seconds|command line
#! and the test's environment (NR_CPUS, MEMSIZE, the ERRATA_<commit>=y of
#! /kut/errata.txt this kernel has) is its initrd, as the suite's own
#! runner gives it.

# The suite's errata this kernel has fixed (minimum version at most ours).
ERRATA=$(awk -F: -v kernel="$(uname -r)" '
    function version(v, part) { split(v, part, /[.-]/); return part[1] * 1000 + part[2] }
    /^#/ || NF < 2 { next }
    { commit = $1; minimum = $2; gsub(/[ \t]/, "", commit); gsub(/[ \t]/, "", minimum)
      if (commit != "" && version(minimum) <= version(kernel)) print "ERRATA_" commit "=y" }
' /kut/errata.txt)

while IFS='|' read -r name file cpus memory timeout cmdline; do
    [ -n "$name" ] || continue
    printf 'NR_CPUS=%s\nMEMSIZE=%s\n%s\n' "$cpus" "${memory%M}" "$ERRATA" >/tmp/kut.env
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
