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
#! ends with status 77, not run; so does a QEMU run that fails the suite's
#! premature-failure check: `KUT-UNMET QEMU does not start here: …`), and
#! vmm is `tandem`, or `qemu`: QEMU with KVM, run as the suite's x86/run or
#! arm/run runs it, in a chroot where /kut is bind-mounted at /mnt:
#! /hostroot, this machine's root (emulated-host.sh --share-root), in an
#! x86_64 host; in an arm64 host the arm64 folder of ci/arm64-qemu-root.sh
#! seen through that share (its path in /kut/qemu-root), given its own
#! proc, sys and dev. The test's environment (the plan's KEY=VALUE words,
#! then the ERRATA_<commit>=y of /kut/errata.txt this kernel has) is its
#! initrd, as the suite's own runner gives it.

# The suite's errata this kernel has fixed (minimum version at most ours).
ERRATA=$(awk -F: -v kernel="$(uname -r)" '
    function version(v, part) { split(v, part, /[.-]/); return part[1] * 1000 + part[2] }
    /^#/ || NF < 2 { next }
    { commit = $1; minimum = $2; gsub(/[ \t]/, "", commit); gsub(/[ \t]/, "", minimum)
      if (commit != "" && version(minimum) <= version(kernel)) print "ERRATA_" commit "=y" }
' /kut/errata.txt)

QEMU_ROOT=/hostroot
[ ! -f /kut/qemu-root ] || QEMU_ROOT=/hostroot$(cat /kut/qemu-root)
if grep -q '^qemu|' /kut/plan; then
    if [ "$QEMU_ROOT" != /hostroot ]; then
        mount -t proc proc "$QEMU_ROOT/proc" && mount -t sysfs sysfs "$QEMU_ROOT/sys" &&
            mount -t devtmpfs devtmpfs "$QEMU_ROOT/dev" ||
            echo "kut-host: cannot prepare $QEMU_ROOT (ci/arm64-qemu-root.sh): QEMU runs will fail"
    fi
    mount -o bind /kut "$QEMU_ROOT/mnt" && mount -o bind /tmp "$QEMU_ROOT/tmp" ||
        echo "kut-host: cannot reach $QEMU_ROOT (emulated-host.sh --share-root): QEMU runs will fail"
fi

# QEMU as the suite's <arch>/run starts it, then the plan's file, vCPUs,
# memory, command line, VMM arguments (the cfg's qemu_params) and timeout.
# x86/run: pc-testdev and isa-debug-exit (the result is QEMU's status).
qemu_x86_64() {
    # shellcheck disable=SC2086 # $5: words for QEMU, split on purpose
    timeout -s KILL "$6" chroot "$QEMU_ROOT" qemu-system-x86_64 --no-reboot -nodefaults \
        -global kvm-pit.lost_tick_policy=discard -device pc-testdev \
        -device isa-debug-exit,iobase=0xf4,iosize=0x4 -display none -serial stdio \
        -device pci-testdev -machine accel=kvm -kernel "/mnt/$1" -smp "$2" \
        -m "$3" $5 -initrd /tmp/kut.env -append "$4" </dev/null 2>&1
}
# arm/run with KVM: virt with the host's GIC (a gic-version in qemu_params
# overrides it), -cpu host, chr-testdev (the test's exit status reaches
# QEMU's) and pci-testdev; the console is virt's PL011.
qemu_aarch64() {
    # shellcheck disable=SC2086 # $5: words for QEMU, split on purpose
    timeout -s KILL "$6" chroot "$QEMU_ROOT" /usr/bin/qemu-system-aarch64 -nodefaults \
        -machine virt,gic-version=host -accel kvm -cpu host \
        -device virtio-serial-device -device virtconsole,chardev=ctd -chardev testdev,id=ctd \
        -device pci-testdev -display none -serial stdio -kernel "/mnt/$1" -smp "$2" \
        -m "$3" -append "$4" $5 -initrd /tmp/kut.env </dev/null 2>&1
}

# The first of the PATH=VALUE conditions given that this host does not meet.
unmet() {
    for cond in "$@"; do
        [ "$(cat "${cond%%=*}" 2>/dev/null)" = "${cond#*=}" ] || { echo "$cond"; return; }
    done
}

# The suite's premature-failure check (scripts/runtime.bash): QEMU given
# the test's options and a kernel file that does not exist must fail for
# that file; QEMU's last line when it fails for something else (an option
# this host's KVM lacks, as mte=on without KVM_CAP_ARM_MTE), which makes the
# test a SKIP saying so.
qemu_cannot_start() {
    out=$("qemu_$(uname -m)" _NO_FILE_4Uhere_ "$@")
    echo "$out" | grep -q -e '[Cc]ould not \(load\|open\) kernel' -e 'error loading' \
        -e 'failed to load' || echo "$out" | tail -n 1
}

while IFS='|' read -r vmm name file cpus memory timeout check env args cmdline; do
    [ -n "$name" ] || continue
    { for word in $env; do echo "$word"; done
      echo "$ERRATA"; } >/tmp/kut.env
    # shellcheck disable=SC2086 # the conditions, split on purpose
    missing=$(unmet $check)
    [ -z "$missing" ] || missing="needs $missing"
    if [ -z "$missing" ] && [ "$vmm" = qemu ]; then
        missing=$(qemu_cannot_start "$cpus" "$memory" "$cmdline" "$args" "$timeout")
        [ -z "$missing" ] || missing="QEMU does not start here: $missing"
    fi
    if [ -n "$missing" ]; then
        printf 'KUT-BEGIN %s %s\nKUT-UNMET %s\nKUT-END %s %s status=77\n' \
            "$vmm" "$name" "$missing" "$vmm" "$name"
        continue
    fi
    echo "KUT-BEGIN $vmm $name"
    # $args: words for the VMM, split on purpose.
    # shellcheck disable=SC2086
    case $vmm in
        tandem)
            timeout -s KILL "$timeout" /bin/tandem run --kernel "/kut/$file" --initrd /tmp/kut.env \
                --cpus "$cpus" --memory "$memory" $args --cmdline "$cmdline" </dev/null 2>&1 ;;
        qemu) "qemu_$(uname -m)" "$file" "$cpus" "$memory" "$cmdline" "$args" "$timeout" ;;
    esac
    status=$?
    # busybox timeout's KILL leaves 137.
    [ "$status" -ne 137 ] || status=124
    echo
    echo "KUT-END $vmm $name status=$status"
done </kut/plan
echo "KUT-PLAN-DONE"
