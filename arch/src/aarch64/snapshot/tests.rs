//! Tests of the parts of aarch64 snapshots that need no KVM (they run
//! under qemu-user): register widths from ids, the state's JSON round
//! trip, and the refusals of states this VM cannot take.

use kvm_bindings::{
    kvm_mp_state, KVM_DEV_ARM_VGIC_GRP_CPU_REGS, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
    KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_MP_STATE_STOPPED,
};

use super::*;
use crate::aarch64::vcpu::{core_reg, x_reg, MPIDR_EL1, PC};

// Ids as KVM lists them (arch/arm64/include/uapi/asm/kvm.h): FPSR is a
// 32-bit core register, V0 a 128-bit one.
const FPSR: u64 = 0x6020_0000_0010_00d4;
const V0: u64 = 0x6040_0000_0010_0054;

fn reg(id: u64, len: usize) -> OneReg {
    OneReg {
        id,
        value: (0..len as u8).collect(),
    }
}

fn v3_state() -> VmState {
    VmState {
        gic: GicVersion::V3,
        mpidrs: vec![0, 1],
        registers: vec![GicReg {
            group: KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
            attr: plan::v3_cpu_field(1) | 0x70,
            value: 0x1234,
        }],
        its: Some(ItsState {
            registers: vec![],
            ctlr: 1,
        }),
    }
}

#[test]
fn register_width_comes_from_the_id() {
    assert_eq!(reg_size(FPSR), 4);
    assert_eq!(reg_size(x_reg(3)), 8);
    assert_eq!(reg_size(PC), 8);
    assert_eq!(reg_size(MPIDR_EL1), 8);
    assert_eq!(reg_size(V0), 16);
    // The same index at another width is another register size.
    assert_eq!(reg_size(core_reg(0) & !KVM_REG_SIZE_MASK), 1);
    assert!(check_register(&reg(FPSR, 4)).is_ok());
    assert!(check_register(&reg(V0, 16)).is_ok());
    let err = check_register(&reg(V0, 8)).unwrap_err().to_string();
    assert!(
        err.contains("register 0x6040000000100054: 8 bytes saved, its id says 16"),
        "{err}"
    );
    assert!(check_register(&reg(FPSR, 8)).is_err());
}

#[test]
fn vcpu_state_round_trips_through_json() {
    let saved = VcpuState {
        registers: vec![reg(x_reg(0), 8), reg(FPSR, 4), reg(V0, 16)],
        mp_state: kvm_mp_state {
            mp_state: KVM_MP_STATE_STOPPED,
        },
    };
    let json = serde_json::to_string(&saved).unwrap();
    let back: VcpuState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);
    assert_eq!(back.mp_state.mp_state, KVM_MP_STATE_STOPPED);
}

#[test]
fn vm_state_round_trips_through_json() {
    let saved = v3_state();
    let json = serde_json::to_string(&saved).unwrap();
    assert!(json.contains("\"gic\":\"V3\""), "{json}");
    let back: VmState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);
}

#[test]
fn a_snapshot_of_another_gic_version_is_refused() {
    let v3 = v3_state();
    let err = check_vm_state(&v3, GicVersion::V2, &[0, 1], false)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "snapshot: the snapshot's guest has a GICv3, this VM a GICv2: tandem cannot restore across GIC versions"
    );
    let v2 = VmState {
        gic: GicVersion::V2,
        its: None,
        registers: vec![],
        ..v3_state()
    };
    let err = check_vm_state(&v2, GicVersion::V3, &[0, 1], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has a GICv2, this VM a GICv3"), "{err}");
    assert!(check_vm_state(&v2, GicVersion::V2, &[0, 1], false).is_ok());
    assert!(check_vm_state(&v3, GicVersion::V3, &[0, 1], true).is_ok());
}

#[test]
fn other_cpus_a_missing_its_or_foreign_registers_are_refused() {
    let v3 = v3_state();
    let err = check_vm_state(&v3, GicVersion::V3, &[0], true).unwrap_err();
    assert!(err.to_string().contains("MPIDRs"), "{err}");
    let err = check_vm_state(&v3, GicVersion::V3, &[0, 1], false).unwrap_err();
    assert!(err.to_string().contains("ITS"), "{err}");
    // A GICv2 CPU-interface register in a GICv3 state, and the reverse.
    let mut foreign = v3_state();
    foreign.registers.push(GicReg {
        group: KVM_DEV_ARM_VGIC_GRP_CPU_REGS,
        attr: 0,
        value: 0,
    });
    let err = check_vm_state(&foreign, GicVersion::V3, &[0, 1], true).unwrap_err();
    assert!(err.to_string().contains("group 2"), "{err}");
    let v2 = VmState {
        gic: GicVersion::V2,
        its: None,
        ..v3_state()
    };
    assert!(check_vm_state(&v2, GicVersion::V2, &[0, 1], false).is_err());
}

#[test]
fn gicv3_plans_put_what_kvm_needs_first_first() {
    // Affinity 1.2.3.4 (Aff3 in MPIDR bits 39:32) names the CPU as 0x01020304.
    let mpidr = 0x01_0002_0304;
    assert_eq!(plan::v3_cpu_field(mpidr), 0x0102_0304 << 32);
    let redist = plan::v3_redist(mpidr);
    assert!(redist
        .iter()
        .all(|&(g, a)| g == KVM_DEV_ARM_VGIC_GRP_REDIST_REGS && a >> 32 == 0x0102_0304));
    // PROPBASER and PENDBASER (both halves) before GICR_CTLR, which is last.
    let offsets: Vec<u64> = redist.iter().map(|&(_, a)| a & 0xffff_ffff).collect();
    assert_eq!(&offsets[..4], &[0x70, 0x74, 0x78, 0x7c]);
    assert_eq!(offsets.last(), Some(&0));

    let head = plan::v3_dist_head();
    assert_eq!(head, vec![(1, 0x8), (1, 0x0)], "GICD_IIDR, then GICD_CTLR");

    let spis = plan::v3_dist_spis(128, 0);
    let position = |group: u32, offset: u64| spis.iter().position(|&r| r == (group, offset));
    let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
    // Every SPI's route, both halves; none for SGIs and PPIs.
    assert!(position(dist, 0x6000 + 8 * 32).is_some());
    assert!(position(dist, 0x6000 + 8 * 127 + 4).is_some());
    assert!(position(dist, 0x6000 + 8 * 31).is_none());
    // Line levels after the configuration, before pending; enables last.
    let level = position(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, 32).unwrap();
    assert!(position(dist, 0xc00 + 8).unwrap() < level);
    assert!(level < position(dist, 0x204).unwrap());
    assert_eq!(spis.last(), Some(&(dist, 0x100 + 4 * 3)));

    // ICC_SRE_EL1 first; 5 priority bits (PRIbits 4) give one APnR each.
    let sysregs = plan::v3_cpu_sysregs(0, 4 << 8);
    assert!(sysregs
        .iter()
        .all(|&(g, _)| g == KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS));
    assert_eq!(sysregs[0].1, 0xc665, "ICC_SRE_EL1");
    assert_eq!(sysregs.len(), 5 + 2 + 2);
    assert_eq!(plan::v3_cpu_sysregs(0, 6 << 8).len(), 5 + 8 + 2);
}

#[test]
fn gicv2_and_its_plans() {
    let dist = plan::v2_dist(2, 128);
    // Banked registers once per CPU, through its index.
    assert!(dist.contains(&(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 1 << 32 | 0x100)));
    assert!(dist.contains(&(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0x800 + 4 * 8)));
    assert!(!dist.contains(&(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 2 << 32 | 0x100)));
    let cpu = plan::v2_cpu(1);
    assert_eq!(cpu.last(), Some(&(KVM_DEV_ARM_VGIC_GRP_CPU_REGS, 1 << 32)));
    // GITS_CBASER first: writing it resets GITS_CREADR.
    let its = plan::its_registers();
    assert_eq!(its[0], 0x80);
    assert!(its.iter().position(|&o| o == 0x90).unwrap() > 0);
    assert!(!its.contains(&0), "GITS_CTLR is written after the tables");
}
