//! What an aarch64 snapshot holds of the CPU and the VGIC: every register
//! KVM lists for a vCPU (KVM_GET_REG_LIST: core, FP/SIMD, system, timer
//! and firmware registers, each as wide as its id says) and its MP state
//! (a powered-off secondary stays off); the VGIC's state (vgic_state.rs).
//! Guest time travels as the arch-neutral `GuestClock` the pause saved:
//! the counter is set back to it at resume, as after any pause.
//!
//! Restore runs on a VM built like the saved one: vCPUs created and
//! initialised (KVM_ARM_VCPU_INIT, same features), guest memory
//! registered, interrupt lines not yet connected. The VGIC is initialised
//! here, as `configure_boot` does for a boot, then given its state; then
//! each vCPU gets its registers and MP state.

use kvm_bindings::{kvm_mp_state, RegList, KVM_REG_SIZE_MASK, KVM_REG_SIZE_SHIFT};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::gic::{GicVersion, Vgic};
use super::vcpu;
use super::vgic_plan as plan;
use super::vgic_state::{self as state, GicReg, ItsState};
use crate::{kvm_err, Error, Result};

/// Widest register KVM has (an SVE Z register, 2048 bits).
const MAX_REG_BYTES: usize = 256;

/// One register: its ONE_REG id and its bytes, as KVM gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneReg {
    /// KVM's register id (arch, size, class, index).
    pub id: u64,
    /// The value, as many bytes as the id's size field says.
    pub value: Vec<u8>,
}

/// One vCPU.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuState {
    /// Every register KVM_GET_REG_LIST named, in its order.
    pub registers: Vec<OneReg>,
    /// Runnable, or powered off (PSCI).
    pub mp_state: kvm_mp_state,
}

/// The VM's VGIC.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    /// GICv2 or GICv3: restore refuses the other.
    pub gic: GicVersion,
    /// Each vCPU's MPIDR affinity, in index order (the CPU interface and
    /// redistributor registers are named by them).
    pub mpidrs: Vec<u64>,
    /// Distributor, redistributor and CPU interface registers, in the order
    /// they are written back.
    pub registers: Vec<GicReg>,
    /// The ITS, when the guest had one.
    pub its: Option<ItsState>,
}

/// The size in bytes of the register `id` names (its KVM_REG_SIZE field).
pub fn reg_size(id: u64) -> usize {
    1 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)
}

/// Refuses a saved register whose value is not as wide as its id says.
fn check_register(reg: &OneReg) -> Result<()> {
    let size = reg_size(reg.id);
    if size > MAX_REG_BYTES || reg.value.len() != size {
        return Err(Error::Snapshot(format!(
            "vCPU register {:#x}: {} bytes saved, its id says {size}",
            reg.id,
            reg.value.len()
        )));
    }
    Ok(())
}

/// Most registers kvm-bindings' list holds (KVM lists about 250 on a
/// vCPU without SVE).
const MAX_REGS: usize = 500;

/// The ids of every register KVM has for `vcpu`.
fn register_ids(vcpu: &VcpuFd) -> Result<Vec<u64>> {
    let mut list =
        RegList::new(MAX_REGS).map_err(|e| Error::Snapshot(format!("register list: {e:?}")))?;
    match vcpu.get_reg_list(&mut list) {
        Ok(()) => Ok(list.as_slice().to_vec()),
        Err(e) if e.errno() == libc::E2BIG => Err(Error::Snapshot(format!(
            "KVM lists more than {MAX_REGS} registers for a vCPU; tandem saves at most that many"
        ))),
        Err(e) => Err(kvm_err("KVM_GET_REG_LIST")(e)),
    }
}

/// Reads every register and the MP state of a parked vCPU.
pub fn save_vcpu(vcpu: &VcpuFd) -> Result<VcpuState> {
    let mut registers = Vec::new();
    for id in register_ids(vcpu)? {
        let size = reg_size(id);
        if size > MAX_REG_BYTES {
            return Err(Error::Snapshot(format!(
                "vCPU register {id:#x} is {size} bytes wide; tandem saves at most {MAX_REG_BYTES}"
            )));
        }
        let mut value = vec![0; size];
        vcpu.get_one_reg(id, &mut value)
            .map_err(|e| Error::Snapshot(format!("cannot read vCPU register {id:#x}: {e}")))?;
        registers.push(OneReg { id, value });
    }
    Ok(VcpuState {
        registers,
        mp_state: vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?,
    })
}

/// Gives a new, initialised vCPU the saved registers, then its MP state.
/// A register KVM refuses (another CPU model's ID registers) is named.
pub fn restore_vcpu(vcpu: &VcpuFd, saved: &VcpuState) -> Result<()> {
    for reg in &saved.registers {
        check_register(reg)?;
    }
    for reg in &saved.registers {
        vcpu.set_one_reg(reg.id, &reg.value).map_err(|e| {
            Error::Snapshot(format!(
                "this host's KVM refused vCPU register {:#x}: {e}",
                reg.id
            ))
        })?;
    }
    vcpu.set_mp_state(saved.mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE"))
}

/// Reads the VGIC of a VM whose vCPUs are all parked. The LPIs' pending
/// bits and the ITS tables are written into guest RAM first, so the
/// memory file (saved after this) holds them.
pub fn save_vm(vgic: &Vgic, vcpus: &[&VcpuFd]) -> Result<VmState> {
    let mpidrs = vcpus
        .iter()
        .map(|fd| vcpu::mpidr(fd))
        .collect::<Result<Vec<_>>>()?;
    let first = *mpidrs
        .first()
        .ok_or_else(|| Error::Snapshot("a VM without vCPUs has no VGIC state".into()))?;
    let gic = vgic.device();
    let version = vgic.version();
    let registers = match version {
        GicVersion::V3 => {
            state::flush_pending_tables(gic)?;
            let mut plan = plan::v3_dist_head();
            for &mpidr in &mpidrs {
                plan.extend(plan::v3_redist(mpidr));
            }
            plan.extend(plan::v3_dist_spis(vgic.nr_irqs(), first));
            for &mpidr in &mpidrs {
                let ctlr = state::read_icc_ctlr(gic, mpidr)?;
                plan.extend(plan::v3_cpu_sysregs(mpidr, ctlr));
            }
            state::read_plan(gic, &plan)?
        }
        GicVersion::V2 => {
            let mut plan = plan::v2_dist(mpidrs.len(), vgic.nr_irqs());
            for cpu in 0..mpidrs.len() {
                plan.extend(plan::v2_cpu(cpu));
            }
            state::read_plan(gic, &plan)?
        }
    };
    let its = vgic.its().map(state::save_its).transpose()?;
    Ok(VmState {
        gic: version,
        mpidrs,
        registers,
        its,
    })
}

/// Refuses a saved VGIC that this VM cannot take, before anything is
/// written: another GIC version, other CPUs, an ITS this VM lacks, or
/// registers of groups this GIC does not have.
pub fn check_vm_state(
    saved: &VmState,
    version: GicVersion,
    mpidrs: &[u64],
    has_its: bool,
) -> Result<()> {
    if saved.gic != version {
        return Err(Error::Snapshot(format!(
            "the snapshot's guest has a {}, this VM a {}: tandem cannot restore across GIC versions",
            saved.gic.name(),
            version.name()
        )));
    }
    if saved.mpidrs != mpidrs {
        return Err(Error::Snapshot(format!(
            "the snapshot's vCPUs have MPIDRs {:x?}, this VM's {mpidrs:x?}",
            saved.mpidrs
        )));
    }
    if saved.its.is_some() && !has_its {
        return Err(Error::Snapshot(
            "the snapshot's guest has a GICv3 ITS, which this host's KVM does not offer".into(),
        ));
    }
    state::check_groups(version, &saved.registers, saved.its.as_ref())
}

/// Initialises the VGIC of a VM built for a snapshot (all vCPUs exist,
/// guest memory is registered) and gives it the saved state.
pub fn restore_vm(vgic: &Vgic, vcpus: &[VcpuFd], saved: &VmState) -> Result<()> {
    let mpidrs = vcpus.iter().map(vcpu::mpidr).collect::<Result<Vec<_>>>()?;
    check_vm_state(saved, vgic.version(), &mpidrs, vgic.its().is_some())?;
    vgic.init()?;
    state::write_all(vgic.device(), &saved.registers)?;
    match (vgic.its(), &saved.its) {
        (Some(its), Some(its_state)) => state::restore_its(its, its_state),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
