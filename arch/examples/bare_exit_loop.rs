//! The floor for ci/bench-exit.sh: boots a PVH payload with the x86_64
//! back end and runs its vCPU in the barest loop kvm-ioctls allows — every
//! port or MMIO write exit goes straight back into KVM_RUN, untouched —
//! until the payload writes the ACPI sleep port. tandem's run loop
//! (device lookup, locking, counters) is measured against this.
//! Usage: bare_exit_loop KERNEL; prints the exits it saw.

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::path::PathBuf;

    use arch::x86_64::X86_64;
    use arch::{Arch, GicChoice, VmConfig};
    use guest_memory::GuestMemoryMmap;
    use kvm_ioctls::{Kvm, VcpuExit};
    use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    /// The port the payload powers off through (tandem's ACPI sleep port).
    const SLEEP_PORT: u16 = 0x600;

    let kernel = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: bare_exit_loop KERNEL");
    let config = VmConfig {
        vcpus: 1,
        memory_size: 128 << 20,
        kernel,
        initrd: None,
        cmdline: String::new(),
        gic: GicChoice::Auto,
        dump_fdt: None,
        debug_exit: false,
        legacy_pit: false,
        pci: false,
        pmu: false,
    };
    let kvm = Kvm::new().expect("/dev/kvm");
    let (mut arch, vm) = X86_64::create_vm(&kvm, &config).expect("create_vm");
    let ranges: Vec<(GuestAddress, usize)> = (arch.layout().ram.iter())
        .map(|&(start, len)| (start, len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).expect("guest memory");
    for (slot, region) in mem.iter().enumerate() {
        let region_info = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the mapping is live for `region.len()` bytes and `mem`
        // outlives the vCPU.
        unsafe { vm.set_user_memory_region(region_info) }.expect("memory region");
    }
    arch.create_irqchip(&vm).expect("irqchip");
    let mut vcpus = vec![arch.create_vcpu(&vm, 0).expect("vCPU")];
    let devices = arch.platform_devices();
    arch.configure_boot(&vm, &mut vcpus, &mem, &config, &devices)
        .expect("boot");

    let mut exits = 0u64;
    loop {
        match vcpus[0].run().expect("KVM_RUN") {
            VcpuExit::IoOut(SLEEP_PORT, _) => break,
            VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..) => exits += 1,
            other => panic!("unexpected exit {other:?}"),
        }
    }
    println!("bare_exit_loop: exits={exits}");
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("bare_exit_loop: x86_64 only");
    std::process::exit(2);
}
