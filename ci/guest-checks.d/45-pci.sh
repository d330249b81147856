# shellcheck shell=dash
# pci: the virtio devices are functions on PCI bus 0 (vendor 0x1af4) bound
# to virtio-pci, beside tandem's host bridge (1b36:0008 at 00:00.0), and
# each interrupts through MSI-X with a vector per queue plus one for
# configuration changes (at least 2) — or, when the command line says
# pci=nomsi, through its INTx line with no MSI vectors at all.
check_pci() {
    local dev vendor driver vectors functions=0 detail="" nomsi=0 bridge want
    grep -qw pci=nomsi /proc/cmdline && nomsi=1
    bridge=$(cat /sys/bus/pci/devices/0000:00:00.0/vendor /sys/bus/pci/devices/0000:00:00.0/device 2>/dev/null | tr '\n' ' ')
    if [ "$bridge" != "0x1b36 0x0008 " ]; then
        check_result pci FAIL "00:00.0 is '${bridge:-absent}', not tandem's host bridge 0x1b36 0x0008"
        return
    fi
    for dev in /sys/bus/pci/devices/*; do
        vendor=$(cat "$dev/vendor")
        [ "$vendor" = 0x1af4 ] || continue
        functions=$((functions + 1))
        driver=$(basename "$(readlink "$dev/driver")")
        vectors=$(ls "$dev/msi_irqs" 2>/dev/null | wc -l)
        detail="$detail ${dev##*/}=$(cat "$dev/device"):$driver:msix=$vectors:irq=$(cat "$dev/irq")"
        if [ "$driver" != virtio-pci ]; then
            check_result pci FAIL "${dev##*/} is bound to '$driver', not virtio-pci;$detail"
            return
        fi
        if [ "$nomsi" = 1 ] && [ "$vectors" -ne 0 ]; then
            check_result pci FAIL "pci=nomsi, yet ${dev##*/} has $vectors MSI vectors;$detail"
            return
        fi
        if [ "$nomsi" = 0 ] && [ "$vectors" -lt 2 ]; then
            check_result pci FAIL "${dev##*/} has $vectors MSI-X vectors, expected one per queue plus one;$detail"
            return
        fi
    done
    want=$(cmdline_value tandem.pci_functions)
    if [ "$functions" -ne "${want:-1}" ] && [ -n "$want" ]; then
        check_result pci FAIL "$functions virtio functions on PCI, expected $want;$detail"
    elif [ "$functions" -eq 0 ]; then
        check_result pci FAIL "no virtio function on PCI"
    else
        check_result pci PASS "$functions virtio functions$([ "$nomsi" = 1 ] && echo ' (pci=nomsi: INTx)'):$detail"
    fi
}
check_wanted pci && check_pci
