//! Interrupt-controller setup KVM leaves to the VMM: both 8259 PICs masked
//! (an unmasked, unprogrammed PIC triple-faults PVH boots, which skip the
//! real-mode code that would mask it) and each local APIC's LINT0/LINT1
//! wired as ExtINT/NMI, the way PC firmware leaves them.

use kvm_bindings::{kvm_irqchip, kvm_lapic_state, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::{kvm_err, Result};

/// Local vector table entries for the LINT0 and LINT1 pins.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery modes (bits 10:8).
const DELIVERY_MODE_NMI: u32 = 0b100;
const DELIVERY_MODE_EXTINT: u32 = 0b111;

/// Masks every input of both PICs.
pub fn mask_pics(vm: &VmFd) -> Result<()> {
    for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(kvm_err("KVM_GET_IRQCHIP (PIC)"))?;
        // SAFETY: for a PIC chip_id KVM fills the union's `pic` member, and
        // every bit pattern is a valid kvm_pic_state (plain u8 fields).
        let mut pic = unsafe { chip.chip.pic };
        pic.imr = 0xff;
        chip.chip.pic = pic;
        vm.set_irqchip(&chip)
            .map_err(kvm_err("KVM_SET_IRQCHIP (PIC)"))?;
    }
    Ok(())
}

/// Reads the 32-bit APIC register at `offset`.
fn read_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

/// Writes the 32-bit APIC register at `offset`.
fn write_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as std::os::raw::c_char;
    }
}

/// `lvt` with its delivery mode replaced by `mode`.
fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !0x700) | (mode << 8)
}

/// LINT0 → ExtINT, LINT1 → NMI on a local APIC state.
pub fn wire_lints(lapic: &mut kvm_lapic_state) {
    let lint0 = read_reg(lapic, APIC_LVT_LINT0);
    write_reg(
        lapic,
        APIC_LVT_LINT0,
        with_delivery_mode(lint0, DELIVERY_MODE_EXTINT),
    );
    let lint1 = read_reg(lapic, APIC_LVT_LINT1);
    write_reg(
        lapic,
        APIC_LVT_LINT1,
        with_delivery_mode(lint1, DELIVERY_MODE_NMI),
    );
}

/// Applies [`wire_lints`] to a vCPU's in-kernel local APIC.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<()> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    wire_lints(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lints_get_extint_and_nmi_keeping_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        // Reset state: both LVTs masked (bit 16); a stray vector byte too.
        write_reg(&mut lapic, APIC_LVT_LINT0, 0x0001_0000);
        write_reg(&mut lapic, APIC_LVT_LINT1, 0x0001_04ff);
        write_reg(&mut lapic, 0x340, 0xdead_beef);
        wire_lints(&mut lapic);
        assert_eq!(read_reg(&lapic, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(read_reg(&lapic, APIC_LVT_LINT1), 0x0001_04ff);
        assert_eq!(read_reg(&lapic, 0x340), 0xdead_beef, "neighbours untouched");
        write_reg(&mut lapic, APIC_LVT_LINT1, 0x700);
        wire_lints(&mut lapic);
        assert_eq!(
            (read_reg(&lapic, APIC_LVT_LINT1) >> 8) & 7,
            DELIVERY_MODE_NMI
        );
    }
}
