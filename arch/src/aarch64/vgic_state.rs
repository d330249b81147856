//! What a snapshot holds of the VGIC, and how it is read and written
//! back: every register through the VGIC device's attributes, listed by
//! vgic_plan.rs in the order KVM needs them written back; saving reads
//! each, restoring writes each in that order. The ITS goes last, its
//! tables through guest RAM.

use kvm_bindings::{
    kvm_device_attr, KVM_DEV_ARM_ITS_RESTORE_TABLES, KVM_DEV_ARM_ITS_SAVE_TABLES,
    KVM_DEV_ARM_VGIC_GRP_CPU_REGS, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_ITS_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES,
};
use kvm_ioctls::DeviceFd;
use serde::{Deserialize, Serialize};

use super::gic::GicVersion;
use super::vgic_plan::{its_registers, v3_cpu_field, GITS_CTLR, ICC_CTLR_EL1};
use crate::{Error, Result};

/// One saved VGIC register: the device attribute that reaches it and its
/// value (32 bits wide in every group but ICC and ITS registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GicReg {
    /// KVM_DEV_ARM_VGIC_GRP_*.
    pub group: u32,
    /// Register offset, with the CPU's MPIDR affinity or index above bit 32.
    pub attr: u64,
    /// The register's value.
    pub value: u64,
}

/// The ITS: its registers but GITS_CTLR, which is written after the
/// tables are read back from guest RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItsState {
    /// GITS_CBASER first, then the others, in restore order.
    pub registers: Vec<GicReg>,
    /// GITS_CTLR.
    pub ctlr: u64,
}

/// The groups a saved register of this GIC version may name.
fn allowed_groups(version: GicVersion) -> &'static [u32] {
    match version {
        GicVersion::V3 => &[
            KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
            KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
            KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
            KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
        ],
        GicVersion::V2 => &[
            KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
            KVM_DEV_ARM_VGIC_GRP_CPU_REGS,
        ],
    }
}

/// Whether KVM passes this group's values as 64 bits (else 32).
fn is_wide(group: u32) -> bool {
    matches!(
        group,
        KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS | KVM_DEV_ARM_VGIC_GRP_ITS_REGS
    )
}

/// Reads one attribute.
fn read(device: &DeviceFd, group: u32, attr: u64) -> std::result::Result<u64, kvm_ioctls::Error> {
    let mut wide = 0u64;
    let mut narrow = 0u32;
    let addr = match is_wide(group) {
        true => &mut wide as *mut u64 as u64,
        false => &mut narrow as *mut u32 as u64,
    };
    let mut request = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr,
    };
    // SAFETY: `addr` points at a local of the width KVM writes for this
    // group (u64 for ICC and ITS registers, u32 otherwise), alive across
    // the call.
    unsafe { device.get_device_attr(&mut request) }?;
    Ok(wide | u64::from(narrow))
}

/// Writes one attribute.
fn write(device: &DeviceFd, reg: &GicReg) -> std::result::Result<(), kvm_ioctls::Error> {
    let narrow = reg.value as u32;
    let addr = match is_wide(reg.group) {
        true => &reg.value as *const u64 as u64,
        false => &narrow as *const u32 as u64,
    };
    device.set_device_attr(&kvm_device_attr {
        flags: 0,
        group: reg.group,
        attr: reg.attr,
        addr,
    })
}

/// Runs a control command (no value).
fn control(device: &DeviceFd, attr: u32, what: &str) -> Result<()> {
    device
        .set_device_attr(&kvm_device_attr {
            flags: 0,
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: u64::from(attr),
            addr: 0,
        })
        .map_err(|e| Error::Snapshot(format!("{what}: {e}")))
}

fn register_error(verb: &str, group: u32, attr: u64, e: kvm_ioctls::Error) -> Error {
    Error::Snapshot(format!(
        "cannot {verb} VGIC register (group {group}, attribute {attr:#x}): {e}"
    ))
}

/// Reads the registers `plan` names, in its order.
pub fn read_plan(device: &DeviceFd, plan: &[(u32, u64)]) -> Result<Vec<GicReg>> {
    plan.iter()
        .map(|&(group, attr)| {
            let value =
                read(device, group, attr).map_err(|e| register_error("read", group, attr, e))?;
            Ok(GicReg { group, attr, value })
        })
        .collect()
}

/// Writes `registers`, in their order.
pub fn write_all(device: &DeviceFd, registers: &[GicReg]) -> Result<()> {
    for reg in registers {
        write(device, reg).map_err(|e| register_error("write", reg.group, reg.attr, e))?;
    }
    Ok(())
}

/// Reads ICC_CTLR_EL1 of the CPU of `mpidr`, to know its priority bits.
pub fn read_icc_ctlr(device: &DeviceFd, mpidr: u64) -> Result<u64> {
    let (group, attr) = (
        KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
        v3_cpu_field(mpidr) | ICC_CTLR_EL1,
    );
    read(device, group, attr).map_err(|e| register_error("read", group, attr, e))
}

/// Writes the LPIs' pending bits into their tables in guest RAM (GICv3).
pub fn flush_pending_tables(gic: &DeviceFd) -> Result<()> {
    control(
        gic,
        KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES,
        "cannot write the VGIC's pending tables to guest memory",
    )
}

/// Writes the ITS tables into guest RAM and reads its registers.
pub fn save_its(its: &DeviceFd) -> Result<ItsState> {
    control(
        its,
        KVM_DEV_ARM_ITS_SAVE_TABLES,
        "cannot write the ITS tables to guest memory",
    )?;
    let group = KVM_DEV_ARM_VGIC_GRP_ITS_REGS;
    let plan: Vec<(u32, u64)> = its_registers().into_iter().map(|o| (group, o)).collect();
    Ok(ItsState {
        registers: read_plan(its, &plan)?,
        ctlr: read(its, group, GITS_CTLR)
            .map_err(|e| register_error("read", group, GITS_CTLR, e))?,
    })
}

/// Restores the ITS as arm-vgic-its.rst orders it (after every
/// redistributor): its registers, its tables from guest RAM, GITS_CTLR.
pub fn restore_its(its: &DeviceFd, state: &ItsState) -> Result<()> {
    write_all(its, &state.registers)?;
    control(
        its,
        KVM_DEV_ARM_ITS_RESTORE_TABLES,
        "cannot read the ITS tables back from guest memory",
    )?;
    write_all(
        its,
        &[GicReg {
            group: KVM_DEV_ARM_VGIC_GRP_ITS_REGS,
            attr: GITS_CTLR,
            value: state.ctlr,
        }],
    )
}

/// Refuses saved registers that name a group this GIC does not have (a
/// corrupted or foreign state), before anything is written.
pub fn check_groups(
    version: GicVersion,
    registers: &[GicReg],
    its: Option<&ItsState>,
) -> Result<()> {
    let allowed = allowed_groups(version);
    let its_registers = its.map_or(&[][..], |its| &its.registers[..]);
    let foreign = registers
        .iter()
        .find(|r| !allowed.contains(&r.group))
        .or_else(|| {
            its_registers
                .iter()
                .find(|r| r.group != KVM_DEV_ARM_VGIC_GRP_ITS_REGS)
        });
    match foreign {
        Some(reg) => Err(Error::Snapshot(format!(
            "the saved {} state has a register of group {}, which a {} does not have",
            version.name(),
            reg.group,
            version.name()
        ))),
        None => Ok(()),
    }
}
