//! What a snapshot holds of the VGIC, and in which order it goes back.
//!
//! Every register is reached through the VGIC device's attributes
//! (Documentation/virt/kvm/devices/arm-vgic-v3.rst, arm-vgic.rst,
//! arm-vgic-its.rst). The registers to save are listed by pure "plans" in
//! the order KVM needs them written back; saving reads each, restoring
//! writes each in that order. GICv3: GICD_IIDR and GICD_CTLR first, each
//! redistributor (LPI table bases before GICR_CTLR, which may enable LPIs),
//! the rest of the distributor, the SPIs' line levels, pending, active and
//! enable bits last; then each CPU interface's ICC registers (ICC_SRE_EL1
//! first). GICv2: distributor (banked registers through each CPU's id),
//! then CPU interfaces. The ITS goes after all of that: GITS_CBASER, the
//! other registers, its tables from guest RAM, GITS_CTLR last.

use kvm_bindings::{
    kvm_device_attr, KVM_DEV_ARM_ITS_RESTORE_TABLES, KVM_DEV_ARM_ITS_SAVE_TABLES,
    KVM_DEV_ARM_VGIC_GRP_CPU_REGS, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_ITS_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT,
    KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, VGIC_LEVEL_INFO_LINE_LEVEL,
};
use kvm_ioctls::DeviceFd;
use serde::{Deserialize, Serialize};

use super::gic::GicVersion;
use super::vcpu::sys_reg;
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

/// The groups a saved GICv3 (`true`) or GICv2 register may name.
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

/// The affinity field a GICv3 attribute names a CPU by (Aff3.Aff2.Aff1.Aff0
/// in bits 63:32), from its MPIDR_EL1.
pub fn v3_cpu_field(mpidr: u64) -> u64 {
    let aff3 = (mpidr >> 32) & 0xff;
    ((aff3 << 24) | (mpidr & 0xff_ffff)) << 32
}

// Distributor (GICD_*) offsets.
const GICD_CTLR: u64 = 0x0;
const GICD_IIDR: u64 = 0x8;
const GICD_IGROUPR: u64 = 0x80;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ISPENDR: u64 = 0x200;
const GICD_ISACTIVER: u64 = 0x300;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xc00;
const GICD_SPENDSGIR: u64 = 0xf20;
const GICD_IROUTER: u64 = 0x6000;
// Redistributor (GICR_*) offsets; the SGI frame is the second 64 KiB.
const GICR_CTLR: u64 = 0x0;
const GICR_PROPBASER: u64 = 0x70;
const GICR_PENDBASER: u64 = 0x78;
const GICR_SGI: u64 = 0x1_0000;
// GICv2 CPU interface (GICC_*) offsets.
const GICC_CTLR: u64 = 0x0;
const GICC_PMR: u64 = 0x4;
const GICC_BPR: u64 = 0x8;
const GICC_ABPR: u64 = 0x1c;
const GICC_APR: u64 = 0xd0;
// ITS (GITS_*) offsets.
const GITS_CTLR: u64 = 0x0;
const GITS_IIDR: u64 = 0x4;
const GITS_CBASER: u64 = 0x80;
const GITS_CWRITER: u64 = 0x88;
const GITS_CREADR: u64 = 0x90;
const GITS_BASER: u64 = 0x100;

/// The ICC register `op0, op1, CRn, CRm, op2` as a CPU_SYSREGS attribute.
const fn icc(crn: u64, crm: u64, op2: u64) -> u64 {
    sys_reg(3, 0, crn, crm, op2) & 0xffff
}
const ICC_SRE_EL1: u64 = icc(12, 12, 5);
const ICC_CTLR_EL1: u64 = icc(12, 12, 4);
const ICC_PMR_EL1: u64 = icc(4, 6, 0);
const ICC_BPR0_EL1: u64 = icc(12, 8, 3);
const ICC_BPR1_EL1: u64 = icc(12, 12, 3);
const ICC_IGRPEN0_EL1: u64 = icc(12, 12, 6);
const ICC_IGRPEN1_EL1: u64 = icc(12, 12, 7);

/// `count` 32-bit words from `base`, skipping the first `skip`.
fn words(base: u64, skip: u32, count: u32) -> impl Iterator<Item = u64> {
    (skip..count).map(move |i| base + 4 * u64::from(i))
}

/// GICv3 distributor registers that must go first (IIDR selects KVM's
/// behaviour, CTLR the groups the rest is written under).
pub fn v3_dist_head() -> Vec<(u32, u64)> {
    let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
    vec![(dist, GICD_IIDR), (dist, GICD_CTLR)]
}

/// One GICv3 redistributor (the CPU of `mpidr`): LPI table bases, SGI and
/// PPI configuration, then state, then GICR_CTLR (may enable LPIs).
pub fn v3_redist(mpidr: u64) -> Vec<(u32, u64)> {
    let cpu = v3_cpu_field(mpidr);
    let offsets = [
        GICR_PROPBASER,
        GICR_PROPBASER + 4,
        GICR_PENDBASER,
        GICR_PENDBASER + 4,
    ]
    .into_iter()
    .chain([GICD_IGROUPR, GICD_ICFGR, GICD_ICFGR + 4].map(|o| GICR_SGI + o))
    .chain(words(GICR_SGI + GICD_IPRIORITYR, 0, 8))
    .chain([GICD_ISPENDR, GICD_ISACTIVER, GICD_ISENABLER].map(|o| GICR_SGI + o))
    .chain([GICR_CTLR]);
    offsets
        .map(|o| (KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, cpu | o))
        .collect()
}

/// The GICv3 distributor's SPI registers for `nr_irqs` interrupts, with
/// the SPIs' line levels (read through `mpidr`'s CPU) before their pending
/// bits, and enable bits last.
pub fn v3_dist_spis(nr_irqs: u32, mpidr: u64) -> Vec<(u32, u64)> {
    let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
    let per_bit = nr_irqs / 32;
    let mut plan: Vec<(u32, u64)> = words(GICD_IGROUPR, 1, per_bit)
        .chain(words(GICD_ICFGR, 2, nr_irqs / 16))
        .chain(words(GICD_IPRIORITYR, 8, nr_irqs / 4))
        // IROUTER is 64 bits a SPI: its two halves.
        .chain((32..nr_irqs).flat_map(|i| {
            let at = GICD_IROUTER + 8 * u64::from(i);
            [at, at + 4]
        }))
        .map(|o| (dist, o))
        .collect();
    let cpu = v3_cpu_field(mpidr);
    let level = u64::from(VGIC_LEVEL_INFO_LINE_LEVEL) << KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT;
    plan.extend((1..per_bit).map(|i| {
        let intid = u64::from(i * 32);
        (KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, cpu | level | intid)
    }));
    plan.extend(
        words(GICD_ISPENDR, 1, per_bit)
            .chain(words(GICD_ISACTIVER, 1, per_bit))
            .chain(words(GICD_ISENABLER, 1, per_bit))
            .map(|o| (dist, o)),
    );
    plan
}

/// The ICC registers of the CPU of `mpidr` whose ICC_CTLR_EL1 is `ctlr`:
/// SRE first (it decides how the rest is reached), the active-priority
/// registers ICC_CTLR_EL1.PRIbits implies, the group enables last.
pub fn v3_cpu_sysregs(mpidr: u64, ctlr: u64) -> Vec<(u32, u64)> {
    let pri_bits = ((ctlr >> 8) & 7) + 1;
    let aprs = match pri_bits {
        7 => 4,
        6 => 2,
        _ => 1,
    };
    let cpu = v3_cpu_field(mpidr);
    [
        ICC_SRE_EL1,
        ICC_CTLR_EL1,
        ICC_PMR_EL1,
        ICC_BPR0_EL1,
        ICC_BPR1_EL1,
    ]
    .into_iter()
    .chain((0..aprs).map(|n| icc(12, 8, 4 + n)))
    .chain((0..aprs).map(|n| icc(12, 9, n)))
    .chain([ICC_IGRPEN0_EL1, ICC_IGRPEN1_EL1])
    .map(|reg| (KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, cpu | reg))
    .collect()
}

/// The GICv2 distributor for `cpus` CPUs and `nr_irqs` interrupts: CTLR,
/// each CPU's banked SGI/PPI registers (through its index), the SPIs';
/// configuration before state, enable bits last.
pub fn v2_dist(cpus: usize, nr_irqs: u32) -> Vec<(u32, u64)> {
    let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
    let per_bit = nr_irqs / 32;
    let mut plan = vec![(dist, GICD_CTLR)];
    for cpu in 0..cpus as u64 {
        let banked = [GICD_IGROUPR, GICD_ICFGR + 4]
            .into_iter()
            .chain(words(GICD_IPRIORITYR, 0, 8))
            .chain(words(GICD_SPENDSGIR, 0, 4))
            .chain([GICD_ISPENDR, GICD_ISACTIVER, GICD_ISENABLER]);
        plan.extend(banked.map(|o| (dist, cpu << 32 | o)));
    }
    plan.extend(
        words(GICD_IGROUPR, 1, per_bit)
            .chain(words(GICD_ICFGR, 2, nr_irqs / 16))
            .chain(words(GICD_IPRIORITYR, 8, nr_irqs / 4))
            .chain(words(GICD_ITARGETSR, 8, nr_irqs / 4))
            .chain(words(GICD_ISPENDR, 1, per_bit))
            .chain(words(GICD_ISACTIVER, 1, per_bit))
            .chain(words(GICD_ISENABLER, 1, per_bit))
            .map(|o| (dist, o)),
    );
    plan
}

/// One GICv2 CPU interface (CPU index `cpu`), GICC_CTLR last.
pub fn v2_cpu(cpu: usize) -> Vec<(u32, u64)> {
    [GICC_PMR, GICC_BPR, GICC_ABPR]
        .into_iter()
        .chain(words(GICC_APR, 0, 4))
        .chain([GICC_CTLR])
        .map(|o| (KVM_DEV_ARM_VGIC_GRP_CPU_REGS, (cpu as u64) << 32 | o))
        .collect()
}

/// The ITS registers but GITS_CTLR, GITS_CBASER first (writing it resets
/// GITS_CREADR, which follows).
pub fn its_registers() -> Vec<u64> {
    [GITS_CBASER, GITS_IIDR, GITS_CREADR, GITS_CWRITER]
        .into_iter()
        .chain((0..8).map(|n| GITS_BASER + 8 * n))
        .collect()
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
