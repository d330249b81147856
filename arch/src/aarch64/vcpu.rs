//! vCPU set-up: KVM_ARM_VCPU_INIT with PSCI 0.2 (secondaries powered off
//! until PSCI CPU_ON) and, when asked, a PMU; ONE_REG register ids, MPIDR,
//! and the boot CPU's entry state per the arm64 boot protocol.

use std::mem::offset_of;

use kvm_bindings::{
    kvm_regs, kvm_vcpu_init, user_pt_regs, KVM_ARM_VCPU_PMU_V3, KVM_ARM_VCPU_POWER_OFF,
    KVM_ARM_VCPU_PSCI_0_2, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{VcpuFd, VmFd};

use crate::{kvm_err, Result};

/// PSTATE at kernel entry: EL1h with D, A, I and F masked.
pub const BOOT_PSTATE: u64 = 0x3c5;

/// MPIDR_EL1 bits that identify a CPU: Aff3 (39:32) and Aff2..Aff0 (23:0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// ONE_REG id of a 64-bit field of `struct kvm_regs` at byte `offset`.
pub const fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4) as u64
}

/// ONE_REG id of system register `op0, op1, CRn, CRm, op2`.
pub const fn sys_reg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    KVM_REG_ARM64
        | KVM_REG_SIZE_U64
        | KVM_REG_ARM64_SYSREG as u64
        | (op0 << 14)
        | (op1 << 11)
        | (crn << 7)
        | (crm << 3)
        | op2
}

const REGS: usize = offset_of!(kvm_regs, regs);
/// General-purpose register `Xn`.
pub const fn x_reg(n: usize) -> u64 {
    core_reg(REGS + offset_of!(user_pt_regs, regs) + n * 8)
}
/// Program counter.
pub const PC: u64 = core_reg(REGS + offset_of!(user_pt_regs, pc));
/// Processor state.
pub const PSTATE: u64 = core_reg(REGS + offset_of!(user_pt_regs, pstate));
/// MPIDR_EL1.
pub const MPIDR_EL1: u64 = sys_reg(3, 0, 0, 0, 5);
/// The guest's virtual counter (KVM's encoding, which swaps CNT and CVAL).
pub const TIMER_CNT: u64 = sys_reg(3, 3, 14, 3, 2);

/// Creates vCPU `index` and initialises it as the host's preferred CPU
/// with PSCI 0.2, and a PMU with `pmu` (see [`super::pmu`]); every vCPU
/// but the first starts powered off.
pub fn create(vm: &VmFd, index: u8, pmu: bool) -> Result<VcpuFd> {
    let vcpu = vm
        .create_vcpu(u64::from(index))
        .map_err(kvm_err("create vCPU"))?;
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(kvm_err("query preferred vCPU target"))?;
    init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if index > 0 {
        init.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    if pmu {
        init.features[0] |= 1 << KVM_ARM_VCPU_PMU_V3;
    }
    vcpu.vcpu_init(&init).map_err(kvm_err("initialise vCPU"))?;
    Ok(vcpu)
}

/// Reads a 64-bit register through ONE_REG.
pub fn get_reg(vcpu: &VcpuFd, id: u64, what: &'static str) -> Result<u64> {
    let mut bytes = [0u8; 8];
    vcpu.get_one_reg(id, &mut bytes).map_err(kvm_err(what))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Writes a 64-bit register through ONE_REG.
pub fn set_reg(vcpu: &VcpuFd, id: u64, value: u64, what: &'static str) -> Result<()> {
    vcpu.set_one_reg(id, &value.to_le_bytes())
        .map(drop)
        .map_err(kvm_err(what))
}

/// The vCPU's MPIDR affinity, as the device tree's `reg` wants it.
pub fn mpidr(vcpu: &VcpuFd) -> Result<u64> {
    Ok(get_reg(vcpu, MPIDR_EL1, "read MPIDR_EL1")? & MPIDR_AFFINITY_MASK)
}

/// Sets the boot vCPU to enter the kernel at `entry` with the device tree
/// address in X0 and X1..X3 zero.
pub fn set_boot_regs(vcpu: &VcpuFd, entry: u64, fdt: u64) -> Result<()> {
    set_reg(vcpu, PSTATE, BOOT_PSTATE, "set PSTATE")?;
    set_reg(vcpu, x_reg(0), fdt, "set X0")?;
    for n in 1..=3 {
        set_reg(vcpu, x_reg(n), 0, "clear X1..X3")?;
    }
    set_reg(vcpu, PC, entry, "set PC")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from the kernel's uapi encoding (arch/arm64/include/uapi/asm/kvm.h).
    #[test]
    fn register_ids_match_the_kernel_encoding() {
        assert_eq!(x_reg(0), 0x6030_0000_0010_0000);
        assert_eq!(x_reg(1), 0x6030_0000_0010_0002);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(MPIDR_EL1, 0x6030_0000_0013_c005);
        assert_eq!(TIMER_CNT, 0x6030_0000_0013_df1a);
    }

    #[test]
    fn boot_pstate_is_el1h_with_interrupts_masked() {
        assert_eq!(BOOT_PSTATE & 0xf, 0b0101, "EL1h");
        assert_eq!(BOOT_PSTATE & 0x3c0, 0x3c0, "D, A, I, F masked");
    }
}
