//! The guest's PMUv3 (`--pmu`, as kvmtool's): a vCPU feature KVM backs
//! with the host's counters, its overflow interrupt the PPI the device
//! tree's `arm,armv8-pmuv3` node names. Off by default, as in Firecracker
//! and kvmtool: a PMU is host-specific state a snapshot then carries.

use kvm_bindings::{
    kvm_device_attr, KVM_ARM_VCPU_PMU_V3_CTRL, KVM_ARM_VCPU_PMU_V3_INIT, KVM_ARM_VCPU_PMU_V3_IRQ,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use crate::{kvm_err, Error, Result};

/// INTIDs below the PPIs (the SGIs).
const FIRST_PPI_INTID: u32 = 16;

/// Refuses `--pmu` where this host's KVM cannot give the guest a PMU (a
/// host kernel without a PMU driver, or a board whose device tree lists
/// none).
pub fn check_available(kvm: &Kvm) -> Result<()> {
    if kvm.check_extension(Cap::ArmPmuV3) {
        Ok(())
    } else {
        Err(Error::Config(
            "--pmu: this host's KVM offers no guest PMU (no KVM_CAP_ARM_PMU_V3)".into(),
        ))
    }
}

/// Sets one PMU attribute of `vcpu`; `addr` points at its value, or is 0.
fn set_attr(vcpu: &VcpuFd, attr: u32, addr: u64, what: &'static str) -> Result<()> {
    let attr = kvm_device_attr {
        flags: 0,
        group: KVM_ARM_VCPU_PMU_V3_CTRL,
        attr: u64::from(attr),
        addr,
    };
    vcpu.set_device_attr(&attr).map_err(kvm_err(what))
}

/// Gives each vCPU's PMU its overflow interrupt and initialises it. KVM
/// wants this after the VGIC's own init and before the first KVM_RUN, on
/// a fresh boot and on a restore alike.
pub fn init(vcpus: &[VcpuFd]) -> Result<()> {
    let intid = FIRST_PPI_INTID + fdt::PMU_PPI;
    for vcpu in vcpus {
        let addr = &intid as *const u32 as u64;
        set_attr(vcpu, KVM_ARM_VCPU_PMU_V3_IRQ, addr, "set the PMU interrupt")?;
        set_attr(vcpu, KVM_ARM_VCPU_PMU_V3_INIT, 0, "initialise the PMU")?;
    }
    Ok(())
}
