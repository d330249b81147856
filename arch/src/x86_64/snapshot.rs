//! What an x86_64 snapshot holds of the CPU and KVM's in-kernel devices:
//! each vCPU's registers, FPU/XSAVE, XCRs, debug registers, LAPIC, pending
//! events, MP state, every MSR KVM lists and the TSC frequency; the VM's
//! PIT and PIC/IOAPIC. Guest time (kvmclock) travels as the arch-neutral
//! `GuestClock` the pause saved. Restore sets state in the order KVM needs
//! (MP state and CPUID-dependent state before the LAPIC and events).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::{kvm_err, Error, Result};

/// One vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the guest was given: restore refuses a host that would
    /// give it other features.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Guest TSC frequency, where KVM reports it.
    pub tsc_khz: Option<u32>,
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    msrs: Vec<kvm_msr_entry>,
    events: kvm_vcpu_events,
}

/// The VM's in-kernel devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// The PIT, if the VM has one ([`crate::VmConfig::legacy_pit`]).
    pit: Option<kvm_pit_state2>,
    /// PIC master, PIC slave, IOAPIC.
    irqchips: Vec<kvm_irqchip>,
}

const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

/// Reads the vCPU's state; `msr_indices` is KVM's MSR list.
pub fn save_vcpu(vcpu: &VcpuFd, msr_indices: &[u32], tsc_khz_known: bool) -> Result<VcpuState> {
    Ok(VcpuState {
        cpuid: vcpu
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec(),
        tsc_khz: match tsc_khz_known {
            true => Some(vcpu.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?),
            false => None,
        },
        mp_state: vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?,
        regs: vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
        sregs: vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
        xsave: vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?,
        xcrs: vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?,
        debugregs: vcpu
            .get_debug_regs()
            .map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
        lapic: vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?,
        msrs: read_msrs(vcpu, msr_indices)?,
        events: vcpu
            .get_vcpu_events()
            .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?,
    })
}

/// Gives a new vCPU, whose CPUID tandem already set, the saved state and
/// the saved CPUID, once the host has every feature that CPUID shows.
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<()> {
    let offered = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_CPUID2"))?;
    check_features(&state.cpuid, offered.as_slice())?;
    // The guest keeps exactly the CPUID it booted with.
    let cpuid = CpuId::from_entries(&state.cpuid)
        .map_err(|e| Error::Snapshot(format!("CPUID list: {e:?}")))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    if let Some(khz) = state.tsc_khz {
        vcpu.set_tsc_khz(khz).map_err(kvm_err("KVM_SET_TSC_KHZ"))?;
    }
    vcpu.set_mp_state(state.mp_state)
        .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    vcpu.set_sregs(&state.sregs)
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&state.regs)
        .map_err(kvm_err("KVM_SET_REGS"))?;
    // SAFETY: `kvm_xsave` is the 4 KiB legacy layout KVM_GET_XSAVE filled
    // on a host whose XSAVE state fits it (the back end refuses to save
    // otherwise), and the CPUID check above means this vCPU has the same
    // XSAVE features, so KVM reads no more than the struct holds.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&state.xcrs)
        .map_err(kvm_err("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debugregs)
        .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(kvm_err("KVM_SET_LAPIC"))?;
    write_msrs(vcpu, &state.msrs)?;
    vcpu.set_vcpu_events(&state.events)
        .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))
}

/// Reads the three interrupt controllers and the PIT if there is one.
pub fn save_vm(vm: &VmFd, has_pit: bool) -> Result<VmState> {
    let mut irqchips = Vec::new();
    for chip_id in IRQCHIPS {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    Ok(VmState {
        pit: match has_pit {
            true => Some(vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?),
            false => None,
        },
        irqchips,
    })
}

/// Sets the PIT and interrupt controllers of a VM built like the saved one.
pub fn restore_vm(vm: &VmFd, has_pit: bool, state: &VmState) -> Result<()> {
    match (&state.pit, has_pit) {
        (Some(pit), true) => vm.set_pit2(pit).map_err(kvm_err("KVM_SET_PIT2"))?,
        (None, false) => {}
        (saved, _) => {
            return Err(Error::Snapshot(format!(
                "the snapshot's VM {} a PIT, this one {}",
                if saved.is_some() { "has" } else { "has no" },
                if has_pit { "has" } else { "has none" }
            )))
        }
    }
    if state.irqchips.len() != IRQCHIPS.len() {
        return Err(Error::Snapshot(format!(
            "{} interrupt controllers saved, {} expected",
            state.irqchips.len(),
            IRQCHIPS.len()
        )));
    }
    for chip in &state.irqchips {
        vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

/// Reads every MSR in `indices` the vCPU has. KVM_GET_MSRS stops at the
/// first one it cannot read; that one is left out (KVM lists MSRs a
/// particular CPU may lack) and reading goes on after it.
fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let mut msrs = msr_list(chunk.iter().map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        }))?;
        let read = vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        // Past what was read, and past the MSR that stopped the read.
        let done = if read < chunk.len() { read + 1 } else { read };
        rest = &rest[done..];
    }
    Ok(saved)
}

/// Writes `entries`; one KVM refuses is an error naming it.
fn write_msrs(vcpu: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<()> {
    for chunk in entries.chunks(KVM_MAX_MSR_ENTRIES) {
        let msrs = msr_list(chunk.iter().copied())?;
        let written = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if written < chunk.len() {
            return Err(Error::Snapshot(format!(
                "this host's KVM refused the guest's MSR {:#x}",
                chunk[written].index
            )));
        }
    }
    Ok(())
}

fn msr_list(entries: impl Iterator<Item = kvm_msr_entry>) -> Result<Msrs> {
    Msrs::from_entries(&entries.collect::<Vec<_>>())
        .map_err(|e| Error::Snapshot(format!("MSR list: {e:?}")))
}

/// Bits (eax, ebx, ecx, edx) KVM rewrites at run time from the guest's own
/// settings: CPUID.1 ECX.OSXSAVE (CR4) and EDX.APIC (the APIC base MSR),
/// CPUID.7.0 ECX.OSPKE (CR4). A vCPU the guest ran on shows them otherwise
/// than a new one; they are not features.
fn runtime_bits(function: u32, index: u32) -> [u32; 4] {
    match (function, index) {
        (1, _) => [0, 0, 1 << 27, 1 << 9],
        (7, 0) => [0, 0, 1 << 4, 0],
        _ => [0; 4],
    }
}

/// The CPUID registers that list features: (leaf, subleaf, register
/// 0..=3 for eax..edx, its name).
const FEATURE_REGISTERS: [(u32, u32, usize, &str); 10] = [
    (1, 0, 2, "ecx"),
    (1, 0, 3, "edx"),
    (7, 0, 1, "ebx"),
    (7, 0, 2, "ecx"),
    (7, 0, 3, "edx"),
    (7, 1, 0, "eax"),
    (0xd, 1, 0, "eax"),
    (0x8000_0001, 0, 2, "ecx"),
    (0x8000_0001, 0, 3, "edx"),
    (0x4000_0001, 0, 0, "eax"),
];

/// Refuses a snapshot whose guest was shown a CPU feature that `offered`
/// (what tandem gives a new vCPU on this host) lacks: the guest may use
/// any feature it saw. Values that are not features (topology, cache
/// sizes, the APIC ID) are the guest's own and restored as saved.
fn check_features(saved: &[kvm_cpuid_entry2], offered: &[kvm_cpuid_entry2]) -> Result<()> {
    let register = |entries: &[kvm_cpuid_entry2], function: u32, index: u32, reg: usize| {
        entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .map_or(0, |e| [e.eax, e.ebx, e.ecx, e.edx][reg])
    };
    for (function, index, reg, name) in FEATURE_REGISTERS {
        let runtime = runtime_bits(function, index)[reg];
        let missing = register(saved, function, index, reg)
            & !register(offered, function, index, reg)
            & !runtime;
        if missing != 0 {
            return Err(Error::Snapshot(format!(
                "the guest was given CPU features this host lacks: CPUID leaf {function:#x}.{index} {name} bits {missing:#x}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn a_host_without_the_guests_cpu_features_is_refused() {
        let saved = [leaf(1, 0b101), leaf(7, 0), leaf(0, 0)];
        // Same features; other non-feature leaves do not matter.
        assert!(check_features(&saved, &[leaf(7, 0), leaf(1, 0b101)]).is_ok());
        // More offered than shown is fine.
        assert!(check_features(&saved, &[leaf(1, 0b111)]).is_ok());
        let err = check_features(&saved, &[leaf(1, 0b001), leaf(7, 0)]).unwrap_err();
        assert!(err.to_string().contains("leaf 0x1.0 ecx bits 0x4"), "{err}");
        // OSXSAVE follows the guest's CR4: a running guest's leaf 1 has it,
        // a new vCPU's not.
        let running = [leaf(1, 0b101 | 1 << 27)];
        assert!(check_features(&running, &[leaf(1, 0b101)]).is_ok());
    }
}
