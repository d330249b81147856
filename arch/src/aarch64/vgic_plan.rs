//! Which VGIC registers a snapshot holds, as pure lists of (attribute
//! group, attribute) in the order KVM needs them written back
//! (Documentation/virt/kvm/devices/arm-vgic-v3.rst, arm-vgic.rst,
//! arm-vgic-its.rst); vgic_state.rs reads and writes them. Kept free of
//! KVM calls so the order is unit-tested under qemu-user.
//!
//! GICv3: GICD_IIDR and GICD_CTLR first, each redistributor (LPI table
//! bases before GICR_CTLR, which may enable LPIs), the rest of the
//! distributor with the SPIs' line levels before their pending bits and
//! enable bits last, then each CPU interface's ICC registers (ICC_SRE_EL1
//! first). GICv2: distributor (banked registers through each CPU's
//! index), then CPU interfaces. ITS: GITS_CBASER, the other registers;
//! GITS_CTLR apart, after the tables.

use kvm_bindings::{
    KVM_DEV_ARM_VGIC_GRP_CPU_REGS, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
    KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT,
    VGIC_LEVEL_INFO_LINE_LEVEL,
};

use super::vcpu::sys_reg;

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
pub const GITS_CTLR: u64 = 0x0;
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
pub const ICC_CTLR_EL1: u64 = icc(12, 12, 4);
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
