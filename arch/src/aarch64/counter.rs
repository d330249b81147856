//! The guest's generic-timer counter: started near zero at boot, and held
//! still across a pause (read at pause, set back at resume).
//!
//! Linux 6.4+ (KVM_CAP_COUNTER_OFFSET) takes one VM-wide offset through
//! KVM_ARM_SET_COUNTER_OFFSET: guest counter = host counter - offset, so the
//! offset is the host counter now. Older kernels (Debian 6.1) only take a
//! per-vCPU write of the counter value (KVM_REG_ARM_TIMER_CNT) through
//! ONE_REG, which we set to 0 on every vCPU.

use kvm_bindings::{kvm_arm_counter_offset, KVMIO};
use kvm_ioctls::{Cap, VcpuFd, VmFd};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use super::vcpu::{get_reg, set_reg, TIMER_CNT};
use crate::Result;

ioctl_iow_nr!(
    KVM_ARM_SET_COUNTER_OFFSET,
    KVMIO,
    0xb5,
    kvm_arm_counter_offset
);

/// The host's virtual counter, CNTVCT_EL0 (readable from EL0 on Linux;
/// KVM keeps the host's CNTVOFF at 0, so it equals the physical count).
fn host_counter() -> u64 {
    let value: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects and touches no memory;
    // Linux enables EL0 access to it (or traps and emulates the read).
    unsafe {
        std::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack));
    }
    value
}

fn set_vm_offset(vm: &VmFd, offset: u64) -> std::io::Result<()> {
    let arg = kvm_arm_counter_offset {
        counter_offset: offset,
        reserved: 0,
    };
    // SAFETY: `vm` is a KVM VM fd, the request matches the argument type,
    // and KVM only reads `arg`, which lives across the call.
    let ret = unsafe { ioctl_with_ref(vm, KVM_ARM_SET_COUNTER_OFFSET(), &arg) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the guest's virtual counter to `value`, by whichever interface
/// the host kernel has; says which ("with …" or "through …", as the logs
/// and the e2e rows that check them put it). Call while no vCPU runs.
pub fn set_guest_counter(vm: &VmFd, vcpus: &[&VcpuFd], value: u64) -> Result<&'static str> {
    if vm.check_extension(Cap::CounterOffset) {
        match set_vm_offset(vm, host_counter().wrapping_sub(value)) {
            Ok(()) => return Ok("with KVM_ARM_SET_COUNTER_OFFSET"),
            // Protected VMs advertise nothing, but be lenient with kernels
            // that refuse the ioctl: the register path still works.
            Err(e) => log::warn!("KVM_ARM_SET_COUNTER_OFFSET failed ({e}); writing TIMER_CNT"),
        }
    }
    for vcpu in vcpus {
        set_reg(
            vcpu,
            TIMER_CNT,
            value,
            "set the guest counter (KVM_REG_ARM_TIMER_CNT)",
        )?;
    }
    Ok("through KVM_REG_ARM_TIMER_CNT on each vCPU")
}

/// Makes the guest counter start near zero. Call before any vCPU runs.
pub fn zero_guest_counter(vm: &VmFd, vcpus: &[VcpuFd]) -> Result<()> {
    let vcpus: Vec<&VcpuFd> = vcpus.iter().collect();
    let how = set_guest_counter(vm, &vcpus, 0)?;
    log::info!("guest counter zeroed {how}");
    Ok(())
}

/// The guest's virtual counter now (all vCPUs share it).
pub fn guest_counter(vcpu: &VcpuFd) -> Result<u64> {
    get_reg(
        vcpu,
        TIMER_CNT,
        "read the guest counter (KVM_REG_ARM_TIMER_CNT)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_is_iow_kvmio_0xb5_of_16_bytes() {
        assert_eq!(KVM_ARM_SET_COUNTER_OFFSET(), 0x4010_aeb5);
    }

    #[test]
    fn host_counter_is_running_and_monotonic() {
        let first = host_counter();
        let second = host_counter();
        assert!(first > 0, "the counter has run since boot");
        assert!(second >= first);
    }
}
