//! The x86_64 back end against a real /dev/kvm: VM and vCPU setup read
//! back through KVM, and hand-made ELF "kernels" booted through both entry
//! paths (64-bit and PVH) that report their boot register over port I/O.
//! Skipped, with a note on stderr, where /dev/kvm is missing.
#![cfg(target_arch = "x86_64")]

use std::io::Write;
use std::path::PathBuf;

use arch::x86_64::X86_64;
use arch::{Arch, GicChoice, VmConfig};
use guest_memory::GuestMemoryMmap;
use kvm_bindings::{
    kvm_irqchip, kvm_msr_entry, Msrs, KVM_IRQCHIP_PIC_MASTER, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::tempfile::TempFile;

const MEMORY: u64 = 64 << 20;
const REPORT_PORT: u16 = 0x10;

fn kvm() -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("/dev/kvm unavailable ({e}): these tests must run in CI")
        }
        Err(e) => {
            eprintln!("SKIPPED: /dev/kvm unavailable ({e})");
            None
        }
    }
}

fn config(vcpus: u8, kernel: PathBuf) -> VmConfig {
    VmConfig {
        vcpus,
        memory_size: MEMORY,
        kernel,
        initrd: None,
        cmdline: "console=ttyS0".into(),
        gic: GicChoice::Auto,
        dump_fdt: None,
        debug_exit: false,
        legacy_pit: false,
        pci: false,
        pmu: false,
    }
}

/// Maps the layout's RAM and registers it with KVM, as the core does.
fn guest_memory(vm: &VmFd, arch: &X86_64) -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = arch
        .layout()
        .ram
        .iter()
        .map(|&(start, len)| (start, len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
    for (slot, region) in mem.iter().enumerate() {
        let region_info = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the mapping is live for `region.len()` bytes and `mem`
        // outlives every vCPU run in these tests.
        unsafe { vm.set_user_memory_region(region_info) }.unwrap();
    }
    mem
}

/// An x86_64 ELF with `code` loaded and entered at 16 MiB, and a PVH note
/// pointing at the same code when `pvh`.
fn elf_kernel(code: &[u8], pvh: bool) -> TempFile {
    const LOAD: u64 = 0x100_0000;
    let file = TempFile::new().unwrap();
    file.as_file()
        .write_all(&arch::test_payloads::elf_kernel(
            code,
            LOAD,
            pvh.then_some(LOAD as u32),
        ))
        .unwrap();
    file
}

/// Runs vCPU 0 until it writes to [`REPORT_PORT`]; returns the value.
fn run_until_report(vcpu: &mut VcpuFd) -> u32 {
    for _ in 0..1000 {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(REPORT_PORT, data) => {
                let mut bytes = [0u8; 4];
                bytes[..data.len()].copy_from_slice(data);
                return u32::from_le_bytes(bytes);
            }
            VcpuExit::IoOut(..) | VcpuExit::IoIn(..) => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
    panic!("the payload never reported");
}

fn boot(code: &[u8], pvh: bool) -> Option<(u32, GuestMemoryMmap)> {
    let kvm = kvm()?;
    let kernel = elf_kernel(code, pvh);
    let config = config(1, kernel.as_path().to_path_buf());
    let (mut arch, vm) = X86_64::create_vm(&kvm, &config).unwrap();
    let mem = guest_memory(&vm, &arch);
    arch.create_irqchip(&vm).unwrap();
    let mut vcpus = vec![arch.create_vcpu(&vm, 0).unwrap()];
    let devices = arch.platform_devices();
    arch.configure_boot(&vm, &mut vcpus, &mem, &config, &devices)
        .unwrap();
    Some((run_until_report(&mut vcpus[0]), mem))
}

#[test]
fn vm_and_vcpus_are_set_up() {
    let Some(kvm) = kvm() else { return };
    let config = config(2, PathBuf::from("/unused"));
    let (mut arch, vm) = X86_64::create_vm(&kvm, &config).unwrap();
    arch.create_irqchip(&vm).unwrap();
    assert!(vm.get_pit2().is_err(), "no PIT unless asked for");

    let mut pic = kvm_irqchip {
        chip_id: KVM_IRQCHIP_PIC_MASTER,
        ..Default::default()
    };
    vm.get_irqchip(&mut pic).unwrap();
    // SAFETY: KVM filled the `pic` member for a PIC chip_id.
    assert_eq!(unsafe { pic.chip.pic }.imr, 0xff, "PIC masked");

    for index in 0..2u8 {
        let vcpu = arch.create_vcpu(&vm, index).unwrap();
        let cpuid = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
        let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
        assert_eq!(leaf1.ebx >> 24, u32::from(index), "APIC ID");
        assert_ne!(leaf1.ecx & (1 << 31), 0, "hypervisor bit");
        let deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        assert_eq!(leaf1.ecx & (1 << 24) != 0, deadline, "TSC-deadline timer");

        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: 0x2ff,
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 1);
        assert_eq!(msrs.as_slice()[0].data, 0x806, "MTRRs on, write-back");

        let lapic = vcpu.get_lapic().unwrap();
        let lvt = |offset: usize| {
            u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[offset + i] as u8))
        };
        assert_eq!((lvt(0x350) >> 8) & 7, 7, "LINT0 ExtINT");
        assert_eq!((lvt(0x360) >> 8) & 7, 4, "LINT1 NMI");
    }
    assert!(arch.create_vcpu(&vm, 2).is_err(), "only 2 vCPUs configured");
}

#[test]
fn legacy_pit_exists_when_asked_and_travels_in_snapshots() {
    let Some(kvm) = kvm() else { return };
    let with_pit = VmConfig {
        legacy_pit: true,
        ..config(1, PathBuf::from("/unused"))
    };
    let (mut arch, vm) = X86_64::create_vm(&kvm, &with_pit).unwrap();
    arch.create_irqchip(&vm).unwrap();
    assert!(vm.get_pit2().is_ok(), "PIT asked for");
    let saved = arch.save_vm(&vm, &[]).unwrap();
    arch.restore_vm(&vm, &[], &saved).unwrap();

    let (mut plain, plain_vm) =
        X86_64::create_vm(&kvm, &config(1, PathBuf::from("/unused"))).unwrap();
    plain.create_irqchip(&plain_vm).unwrap();
    let err = plain.restore_vm(&plain_vm, &[], &saved).unwrap_err();
    assert!(err.to_string().contains("has a PIT"), "{err}");
    let none = plain.save_vm(&plain_vm, &[]).unwrap();
    assert!(
        arch.restore_vm(&vm, &[], &none).is_err(),
        "PIT state missing"
    );
}

#[test]
fn elf_kernel_boots_in_long_mode_with_the_zero_page() {
    // mov %rsi,%rax; out %eax,$0x10; hlt
    let Some((rsi, mem)) = boot(&[0x48, 0x89, 0xf0, 0xe7, 0x10, 0xf4], false) else {
        return;
    };
    assert_eq!(rsi, 0x7000, "RSI points at boot_params");
    let magic: u32 = mem.read_obj(GuestAddress(0x7000 + 0x202)).unwrap();
    assert_eq!(magic, 0x5372_6448, "HdrS");
}

#[test]
fn pvh_kernel_boots_in_protected_mode_with_start_info() {
    // mov %ebx,%eax; out %eax,$0x10; hlt (32-bit code)
    let Some((ebx, mem)) = boot(&[0x89, 0xd8, 0xe7, 0x10, 0xf4], true) else {
        return;
    };
    assert_eq!(ebx, 0x6000, "EBX points at hvm_start_info");
    let magic: u32 = mem.read_obj(GuestAddress(u64::from(ebx))).unwrap();
    assert_eq!(magic, 0x336e_c578);
}
