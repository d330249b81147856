#!/bin/sh
# shellcheck shell=sh
#! Runs in an emulated KVM host (ci/kvm-unit-tests.sh puts it there as the
#! host script): each kvm-unit-tests run of /kut/plan, one after another,
#! its output between
#!   KUT-BEGIN <vmm> <name>
#!   KUT-END <vmm> <name> status=<the VMM's exit status>
#! (124: killed at its timeout). A plan line is
#!   vmm|name|file|cpus|memory|timeout seconds|check|environment|VMM arguments|command line
#! where check is the cfg's `check` (PATH=VALUE words, read here: a test
#! whose condition this host does not meet prints `KUT-UNMET needs …` and
#! ends with status 77, not run), and vmm is `tandem`, or `qemu`: this
#! machine's QEMU with KVM, run as the
#! suite's x86/run runs it, in /hostroot (emulated-host.sh --share-root),
#! where /kut is bind-mounted at /mnt. The test's environment (the plan's
#! KEY=VALUE words, then the ERRATA_<commit>=y of /kut/errata.txt this
#! kernel has) is its initrd, as the suite's own runner gives it.

# The suite's errata this kernel has fixed (minimum version at most ours).
ERRATA=$(awk -F: -v kernel="$(uname -r)" '
    function version(v, part) { split(v, part, /[.-]/); return part[1] * 1000 + part[2] }
    /^#/ || NF < 2 { next }
    { commit = $1; minimum = $2; gsub(/[ \t]/, "", commit); gsub(/[ \t]/, "", minimum)
      if (commit != "" && version(minimum) <= version(kernel)) print "ERRATA_" commit "=y" }
' /kut/errata.txt)

if grep -q '^qemu|' /kut/plan; then
    mount -o bind /kut /hostroot/mnt && mount -o bind /tmp /hostroot/tmp ||
        echo "kut-host: cannot reach /hostroot (emulated-host.sh --share-root): QEMU runs will fail"
fi

# The first of the PATH=VALUE conditions given that this host does not meet.
unmet() {
    for cond in "$@"; do
        [ "$(cat "${cond%%=*}" 2>/dev/null)" = "${cond#*=}" ] || { echo "$cond"; return; }
    done
}

while IFS='|' read -r vmm name file cpus memory timeout check env args cmdline; do
    [ -n "$name" ] || continue
    # shellcheck disable=SC2086 # the conditions, split on purpose
    missing=$(unmet $check)
    if [ -n "$missing" ]; then
        printf 'KUT-BEGIN %s %s\nKUT-UNMET needs %s\nKUT-END %s %s status=77\n' \
            "$vmm" "$name" "$missing" "$vmm" "$name"
        continue
    fi
    { for word in $env; do echo "$word"; done
      echo "$ERRATA"; } >/tmp/kut.env
    echo "KUT-BEGIN $vmm $name"
    # $args: words for the VMM, split on purpose.
    # shellcheck disable=SC2086
    case $vmm in
        tandem)
            timeout -s KILL "$timeout" /bin/tandem run --kernel "/kut/$file" --initrd /tmp/kut.env \
                --cpus "$cpus" --memory "$memory" $args --cmdline "$cmdline" </dev/null 2>&1 ;;
        qemu)
            timeout -s KILL "$timeout" chroot /hostroot qemu-system-x86_64 --no-reboot -nodefaults \
                -global kvm-pit.lost_tick_policy=discard -device pc-testdev \
                -device isa-debug-exit,iobase=0xf4,iosize=0x4 -display none -serial stdio \
                -device pci-testdev -machine accel=kvm -kernel "/mnt/$file" -smp "$cpus" \
                -m "$memory" $args -initrd /tmp/kut.env -append "$cmdline" </dev/null 2>&1 ;;
    esac
    status=$?
    # busybox timeout's KILL leaves 137.
    [ "$status" -ne 137 ] || status=124
    echo
    echo "KUT-END $vmm $name status=$status"
done </kut/plan
echo "KUT-PLAN-DONE"
