//! Per-vCPU CPUID: KVM's supported list, normalised so each vCPU sees its
//! own APIC ID, a topology of `vcpus` single-threaded cores in one socket,
//! the hypervisor bit, and the KVM paravirtual leaves (plus the TSC
//! frequency leaf, so the guest need not calibrate), and the TSC-deadline
//! timer, which KVM emulates but never lists as supported.
//!
//! [`normalize`] is a pure function over the entry list; the caller gets
//! the list from KVM_GET_SUPPORTED_CPUID and hands the result to
//! KVM_SET_CPUID2.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Leaf 1 EBX: initial APIC ID (31:24) and logical processor count (23:16).
const LEAF1_EBX_APIC_ID_SHIFT: u32 = 24;
const LEAF1_EBX_COUNT_SHIFT: u32 = 16;
/// Leaf 1 EDX: the package has more than one logical processor.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: the local APIC has the TSC-deadline timer mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Extended topology level types (leaf 0xB / 0x1F ECX 15:8).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// KVM's paravirtual leaves.
const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
const KVM_TIMING_LEAF: u32 = 0x4000_0010;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// The local APIC timer KVM emulates ticks at 1 GHz.
const KVM_APIC_BUS_KHZ: u32 = 1_000_000;

/// Bits needed to number `count` items: the APIC-ID shift of a level.
fn id_bits(count: u32) -> u32 {
    count.max(1).next_power_of_two().trailing_zeros()
}

/// The three subleaves of an extended topology leaf (0xB or 0x1F) for
/// vCPU `apic_id` of `vcpus` single-threaded cores.
fn topology_leaf(function: u32, apic_id: u32, vcpus: u32) -> [kvm_cpuid_entry2; 3] {
    let sub = |index: u32, eax, ebx, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: apic_id,
        ..Default::default()
    };
    [
        sub(0, 0, 1, LEVEL_SMT),
        sub(1, id_bits(vcpus), vcpus, LEVEL_CORE),
        // Type 0 ends the enumeration.
        sub(2, 0, 0, 0),
    ]
}

/// Advertises the TSC-deadline timer in KVM's supported list. KVM leaves
/// the bit out of KVM_GET_SUPPORTED_CPUID and says it through
/// KVM_CAP_TSC_DEADLINE_TIMER instead; without it Linux programs the LAPIC
/// timer in one-shot mode, which costs it every timer interrupt.
pub fn add_tsc_deadline(supported: &mut [kvm_cpuid_entry2]) {
    for e in supported.iter_mut().filter(|e| e.function == 1) {
        e.ecx |= LEAF1_ECX_TSC_DEADLINE;
    }
}

/// The CPUID vCPU `index` of `vcpus` should see, from KVM's supported list.
/// `tsc_khz`, when known, is published in leaf 0x4000_0010.
pub fn normalize(
    supported: &[kvm_cpuid_entry2],
    index: u8,
    vcpus: u8,
    tsc_khz: Option<u32>,
) -> Vec<kvm_cpuid_entry2> {
    let apic_id = u32::from(index);
    let count = u32::from(vcpus.max(1));
    let max_basic = supported
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let has_leaf = |f: u32| supported.iter().any(|e| e.function == f);
    let rebuild_0x1f = max_basic >= 0x1f && has_leaf(0x1f);
    let add_timing = tsc_khz.is_some() && has_leaf(KVM_SIGNATURE_LEAF);

    let mut out: Vec<kvm_cpuid_entry2> = supported
        .iter()
        .filter(|e| match e.function {
            0xb => false,
            0x1f => !rebuild_0x1f,
            KVM_TIMING_LEAF => !add_timing,
            _ => true,
        })
        .copied()
        .collect();

    for e in &mut out {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0xffff)
                    | (apic_id << LEAF1_EBX_APIC_ID_SHIFT)
                    | (count << LEAF1_EBX_COUNT_SHIFT);
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
                e.ecx |= LEAF1_ECX_HYPERVISOR;
            }
            // Deterministic cache parameters: cores per package (31:26)
            // and how many logical processors share each cache (25:14).
            4 if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                let cores = (count - 1).min(0x3f);
                e.eax = (e.eax & 0x3fff) | (sharing.min(0xfff) << 14) | (cores << 26);
            }
            // AMD: core count (7:0) and APIC-ID bits (15:12).
            0x8000_0008 => {
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
            }
            // AMD extended APIC ID; one thread per core, one node.
            0x8000_001e => {
                e.eax = apic_id;
                e.ebx = (e.ebx & !0xffff) | apic_id;
                e.ecx = 0;
            }
            KVM_SIGNATURE_LEAF => {
                [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
                if add_timing {
                    e.eax = e.eax.max(KVM_TIMING_LEAF);
                }
            }
            _ => {}
        }
    }

    if max_basic >= 0xb {
        out.extend(topology_leaf(0xb, apic_id, count));
    }
    if rebuild_0x1f {
        out.extend(topology_leaf(0x1f, apic_id, count));
    }
    if let (true, Some(khz)) = (add_timing, tsc_khz) {
        out.push(kvm_cpuid_entry2 {
            function: KVM_TIMING_LEAF,
            eax: khz,
            ebx: KVM_APIC_BUS_KHZ,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A trimmed-down KVM_GET_SUPPORTED_CPUID from an Intel host.
    fn host() -> Vec<kvm_cpuid_entry2> {
        vec![
            leaf(0, 0, [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            leaf(1, 0, [0x906ea, 0x0010_0800, 0x7ffa_fbff, 0xbfeb_fbff]),
            leaf(4, 0, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            leaf(4, 3, [0x1c03_c163, 0x02c0_003f, 0x3fff, 6]),
            leaf(4, 4, [0, 0, 0, 0]),
            leaf(0xb, 0, [1, 2, 0x100, 7]),
            leaf(0xb, 1, [4, 12, 0x201, 7]),
            leaf(0x1f, 0, [1, 2, 0x100, 7]),
            leaf(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            leaf(0x4000_0001, 0, [0x0100_7afb, 0, 0, 0]),
            leaf(0x8000_0008, 0, [0x3027, 0, 0, 0]),
        ]
    }

    fn find(list: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *list
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    #[test]
    fn each_vcpu_gets_its_apic_id() {
        for index in [0u8, 1, 3] {
            let out = normalize(&host(), index, 4, None);
            let l1 = find(&out, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(index));
            assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processor count");
            assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
            assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
            for sub in 0..3 {
                assert_eq!(find(&out, 0xb, sub).edx, u32::from(index));
                assert_eq!(find(&out, 0x1f, sub).edx, u32::from(index));
            }
        }
    }

    #[test]
    fn tsc_deadline_is_added_to_leaf_1_only() {
        let mut h = host();
        h[1].ecx &= !LEAF1_ECX_TSC_DEADLINE; // as KVM reports it
        let before: Vec<u32> = h.iter().map(|e| e.ecx).collect();
        add_tsc_deadline(&mut h);
        for (e, ecx) in h.iter().zip(before) {
            let added = if e.function == 1 {
                LEAF1_ECX_TSC_DEADLINE
            } else {
                0
            };
            assert_eq!(e.ecx, ecx | added, "leaf {:#x}", e.function);
        }
        let out = normalize(&h, 0, 1, None);
        assert_ne!(find(&out, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn hypervisor_bit_and_single_vcpu() {
        let mut h = host();
        h[1].ecx &= !LEAF1_ECX_HYPERVISOR;
        let out = normalize(&h, 0, 1, None);
        let l1 = find(&out, 1, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0, "one vCPU: no HTT");
        assert_eq!(find(&out, 0xb, 1).eax, 0, "no APIC-ID bits for one core");
    }

    #[test]
    fn topology_is_single_threaded_cores_in_one_socket() {
        let out = normalize(&host(), 2, 6, None);
        let smt = find(&out, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx), (0, 1, 0x100));
        let core = find(&out, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx), (3, 6, 0x201));
        assert_eq!(find(&out, 0xb, 2).ecx >> 8, 0, "enumeration ends");
        assert_eq!(
            out.iter().filter(|e| e.function == 0xb).count(),
            3,
            "host 0xb replaced"
        );
        assert_ne!(
            find(&out, 0xb, 0).flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            0
        );
        let l1d = find(&out, 4, 0);
        assert_eq!(
            (l1d.eax >> 26, (l1d.eax >> 14) & 0xfff),
            (5, 0),
            "L1 private"
        );
        assert_eq!(l1d.eax & 0x3fff, 0x121, "cache type and level kept");
        let l3 = find(&out, 4, 3);
        assert_eq!(
            (l3.eax >> 26, (l3.eax >> 14) & 0xfff),
            (5, 5),
            "L3 shared by all"
        );
        assert_eq!(find(&out, 4, 4).eax, 0, "null subleaf untouched");
        let amd = find(&out, 0x8000_0008, 0);
        assert_eq!((amd.ecx & 0xff, (amd.ecx >> 12) & 0xf), (5, 3));
    }

    #[test]
    fn kvm_leaves_and_tsc_frequency() {
        let out = normalize(&host(), 0, 2, Some(2_500_000));
        let sig = find(&out, 0x4000_0000, 0);
        assert_eq!(sig.eax, KVM_TIMING_LEAF);
        let bytes: Vec<u8> = [sig.ebx, sig.ecx, sig.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&bytes[..9], b"KVMKVMKVM");
        assert_eq!(
            find(&out, 0x4000_0001, 0).eax,
            0x0100_7afb,
            "features as KVM reports"
        );
        let timing = find(&out, KVM_TIMING_LEAF, 0);
        assert_eq!((timing.eax, timing.ebx), (2_500_000, KVM_APIC_BUS_KHZ));

        let out = normalize(&host(), 0, 2, None);
        assert_eq!(find(&out, 0x4000_0000, 0).eax, 0x4000_0001, "max leaf kept");
        assert!(!out.iter().any(|e| e.function == KVM_TIMING_LEAF));
    }

    #[test]
    fn old_hosts_without_topology_leaves() {
        let h: Vec<_> = host()
            .into_iter()
            .filter(|e| e.function < 0xb)
            .map(|mut e| {
                if e.function == 0 {
                    e.eax = 0xa;
                }
                e
            })
            .collect();
        let out = normalize(&h, 1, 2, Some(1000));
        assert!(!out.iter().any(|e| e.function >= 0xb), "nothing invented");
        assert_eq!(find(&out, 1, 0).ebx >> 24, 1);
    }
}
