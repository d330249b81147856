//! The x86_64 back end: a PC without legacy firmware — in-kernel LAPICs,
//! IOAPIC and PIT, a COM port, an i8042 (keyboard and reset line), ACPI
//! sleep registers, optionally a debug-exit port and a PCIe host bridge
//! (ECAM and ports 0xcf8-0xcff, described by MCFG and the DSDT) — booting Linux
//! through the 64-bit boot protocol (bzImage, ELF) or PVH (ELF with the PVH
//! note), described by ACPI, or a multiboot (v1) image such as a
//! kvm-unit-tests test.
//!
//! This file holds the [`Arch`] implementation and config checks; each
//! concern it calls on lives in its own module.

mod acpi;
#[cfg(test)]
mod aml_reader;
mod boot_info;
mod cpuid;
mod dsdt;
mod exit;
mod gdt;
mod interrupts;
mod layout;
mod loader;
mod msr;
mod multiboot_info;
mod paging;
mod pci_tables;
mod regs;
mod reset_vector;
mod seccomp;
mod snapshot;

use guest_memory::GuestMemoryMmap;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};

use crate::{
    kvm_err, AddressSpace, Arch, DeviceInfo, DeviceKind, Error, ExitAction, GicChoice, GuestClock,
    MemoryLayout, Result, VmConfig,
};
use boot_info::BootInfo;
use gdt::EntryMode;

/// Most vCPUs: APIC IDs are 8 bits in leaf 1 and the MADT, 0xff is the
/// broadcast ID, and the IOAPIC takes one more.
pub const MAX_VCPUS: usize = 254;

/// COM1.
const SERIAL_PORT: u64 = 0x3f8;
const SERIAL_LEN: u64 = 8;
const SERIAL_IRQ: u32 = 4;
/// i8042 data (0x60) through command/status (0x64).
const I8042_PORT: u64 = 0x60;
const I8042_LEN: u64 = 5;
/// The ISA keyboard line, GSI 1 = IOAPIC pin 1. The DSDT declares it edge,
/// active high; that is the ISA default, so the MADT needs no override.
const I8042_IRQ: u32 = 1;
/// ACPI sleep control (0x600) and status (0x601) registers.
const ACPI_SLEEP_PORT: u64 = 0x600;
const ACPI_SLEEP_LEN: u64 = 2;
/// The debug-exit port where QEMU's isa-debug-exit sits by default, which
/// kvm-unit-tests writes to; 4 ports so a 32-bit write lands whole.
const DEBUG_EXIT_PORT: u64 = 0xf4;
const DEBUG_EXIT_LEN: u64 = 4;
/// CONFIG_ADDRESS (0xcf8) and CONFIG_DATA (0xcfc-0xcff).
const PCI_CONFIG_PORT: u64 = 0xcf8;
const PCI_CONFIG_LEN: u64 = 8;

/// The x86_64 back end.
#[derive(Debug)]
pub struct X86_64 {
    layout: MemoryLayout,
    memory_size: u64,
    vcpus: u8,
    /// Whether the guest gets the debug-exit port.
    debug_exit: bool,
    /// Whether the VM has an in-kernel PIT.
    legacy_pit: bool,
    /// Whether the VM has a PCI host bridge.
    pci: bool,
    /// KVM_GET_SUPPORTED_CPUID, normalised per vCPU in `create_vcpu`.
    supported_cpuid: Vec<kvm_cpuid_entry2>,
    /// Whether vCPUs can report their TSC frequency (KVM_CAP_GET_TSC_KHZ).
    tsc_khz_known: bool,
    /// KVM_GET_MSR_INDEX_LIST: the MSRs a snapshot saves.
    msr_indices: Vec<u32>,
    /// Whether a vCPU's XSAVE state fits KVM_GET_XSAVE's 4 KiB (hosts with
    /// AMX need KVM_GET_XSAVE2, which snapshots do not use yet).
    xsave_fits: bool,
}

/// Checks `config` against what x86_64 and this host support.
fn validate_config(config: &VmConfig, kvm_max_vcpus: usize, host_memory: u64) -> Result<()> {
    if config.gic != GicChoice::Auto {
        return Err(Error::Config("--gic applies only to aarch64".into()));
    }
    if config.dump_fdt.is_some() {
        return Err(Error::Config("--dump-fdt applies only to aarch64".into()));
    }
    if config.pmu {
        return Err(Error::Config(
            "--pmu applies only to aarch64 (an x86_64 guest gets the PMU KVM lists in its CPUID)"
                .into(),
        ));
    }
    let max = MAX_VCPUS.min(kvm_max_vcpus);
    if config.vcpus == 0 || usize::from(config.vcpus) > max {
        return Err(Error::Config(format!(
            "{} vCPUs requested: this host allows 1 to {max}",
            config.vcpus
        )));
    }
    layout::validate_memory_size(config.memory_size, host_memory)
}

/// Rejects a layout the guest cannot address: RAM, and with `pci` the
/// 64-bit BAR window above it, must end within the CPU's physical address
/// width (CPUID 0x8000_0008), or the guest would be told of memory it
/// cannot reach.
fn check_address_width(
    supported: &[kvm_cpuid_entry2],
    layout: &MemoryLayout,
    pci: bool,
) -> Result<()> {
    let Some(bits) = supported
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map(|e| e.eax & 0xff)
        .filter(|&bits| (32..64).contains(&bits))
    else {
        return Ok(());
    };
    let limit = 1u64 << bits;
    let ram_end = layout
        .ram
        .iter()
        .map(|(start, len)| start.0 + len)
        .max()
        .unwrap_or(0);
    if ram_end > limit {
        return Err(Error::Config(format!(
            "guest RAM would end at {ram_end:#x}, beyond this CPU's {bits}-bit physical addresses"
        )));
    }
    let window = &layout.pci.mmio64;
    if pci && window.end > limit {
        return Err(Error::Config(format!(
            "the PCI 64-bit BAR window ({:#x}..{:#x}, above guest RAM) would end beyond this \
             CPU's {bits}-bit physical addresses: give the guest less memory or no PCI",
            window.start, window.end
        )));
    }
    Ok(())
}

/// The ECAM window of the host bridge among `devices`, if there is one.
fn pci_ecam(devices: &[DeviceInfo]) -> Option<std::ops::Range<u64>> {
    devices
        .iter()
        .find(|d| d.kind == DeviceKind::PciEcam)
        .map(|ecam| ecam.base..ecam.base + ecam.len)
}

/// Fuzzing hooks (fuzz/, docs/fuzzing.md), not an API: the boot payload
/// code of [`Arch::configure_boot`] without KVM. Both back ends have them
/// with the same signatures, so the targets go through [`crate::Host`].
impl X86_64 {
    /// Loads `kernel`, `initrd` and `cmdline` into `mem` as
    /// `configure_boot` does for a VM of `memory_size` bytes; returns the
    /// entry point and where the initrd went.
    #[doc(hidden)]
    pub fn fuzz_load_payload(
        mem: &GuestMemoryMmap,
        memory_size: u64,
        kernel: &std::path::Path,
        initrd: Option<&std::path::Path>,
        cmdline: &str,
    ) -> Result<(u64, Option<(u64, u64)>)> {
        let loaded = loader::load_kernel(mem, kernel)?;
        let initrd = match initrd {
            Some(path) => {
                loader::load_initrd(mem, path, &loaded, layout::low_ram_end(memory_size))?
            }
            None => None,
        };
        loader::write_cmdline(mem, cmdline, loaded.cmdline_max)?;
        Ok((loaded.entry, initrd))
    }

    /// Where an initrd of `size` bytes goes in a VM of `memory_size` bytes,
    /// after a kernel ending at `kernel_end` that reaches up to `ceiling`.
    #[doc(hidden)]
    pub fn fuzz_place_initrd(
        memory_size: u64,
        kernel_end: u64,
        ceiling: u64,
        size: u64,
    ) -> Result<u64> {
        let ceiling = ceiling.min(layout::low_ram_end(memory_size));
        loader::place_initrd(size, kernel_end, ceiling)
    }
}

impl X86_64 {
    fn check_xsave_fits(&self) -> Result<()> {
        match self.xsave_fits {
            true => Ok(()),
            false => Err(Error::Snapshot(
                "this host's XSAVE state is larger than 4 KiB (AMX): not supported yet".into(),
            )),
        }
    }
}

impl Arch for X86_64 {
    const NAME: &'static str = "x86_64";
    const HAS_GIC_CHOICE: bool = false;
    const HAS_LEGACY_PIT: bool = true;
    const HAS_PMU_CHOICE: bool = false;
    type VcpuState = snapshot::VcpuState;
    type VmState = snapshot::VmState;

    fn create_vm(kvm: &Kvm, config: &VmConfig) -> Result<(Self, VmFd)> {
        validate_config(config, kvm.get_max_vcpus(), crate::host_memory_limit())?;
        let layout = layout::memory_layout(config.memory_size);
        let mut supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?
            .as_slice()
            .to_vec();
        if kvm.check_extension(Cap::TscDeadlineTimer) {
            cpuid::add_tsc_deadline(&mut supported_cpuid);
        }
        check_address_width(&supported_cpuid, &layout, config.pci)?;

        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;

        let arch = X86_64 {
            layout,
            memory_size: config.memory_size,
            vcpus: config.vcpus,
            debug_exit: config.debug_exit,
            legacy_pit: config.legacy_pit,
            pci: config.pci,
            supported_cpuid,
            tsc_khz_known: kvm.check_extension(Cap::GetTscKhz),
            msr_indices: kvm
                .get_msr_index_list()
                .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
                .as_slice()
                .to_vec(),
            xsave_fits: vm.check_extension_int(Cap::Xsave2)
                <= std::mem::size_of::<kvm_bindings::kvm_xsave>() as i32,
        };
        Ok((arch, vm))
    }

    fn create_irqchip(&mut self, vm: &VmFd) -> Result<()> {
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        interrupts::mask_pics(vm)?;
        if self.legacy_pit {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        }
        Ok(())
    }

    fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    fn platform_devices(&self) -> Vec<DeviceInfo> {
        let pio = |kind, base, len, irq| DeviceInfo {
            kind,
            space: AddressSpace::Pio,
            base,
            len,
            irq,
        };
        let mut devices = vec![
            pio(
                DeviceKind::Serial,
                SERIAL_PORT,
                SERIAL_LEN,
                Some(SERIAL_IRQ),
            ),
            pio(DeviceKind::I8042, I8042_PORT, I8042_LEN, Some(I8042_IRQ)),
            pio(DeviceKind::AcpiSleep, ACPI_SLEEP_PORT, ACPI_SLEEP_LEN, None),
        ];
        if self.debug_exit {
            devices.push(pio(
                DeviceKind::DebugExit,
                DEBUG_EXIT_PORT,
                DEBUG_EXIT_LEN,
                None,
            ));
        }
        if self.pci {
            devices.push(crate::pci_ecam_device(&self.layout));
            devices.push(pio(
                DeviceKind::PciConfigPorts,
                PCI_CONFIG_PORT,
                PCI_CONFIG_LEN,
                None,
            ));
        }
        devices
    }

    fn create_vcpu(&self, vm: &VmFd, index: u8) -> Result<VcpuFd> {
        if index >= self.vcpus {
            return Err(Error::Config(format!(
                "vCPU {index} requested but the VM has {} vCPUs",
                self.vcpus
            )));
        }
        let vcpu = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        // Without a frequency the guest calibrates the TSC itself.
        let tsc_khz = self
            .tsc_khz_known
            .then(|| vcpu.get_tsc_khz().ok())
            .flatten()
            .filter(|&khz| khz > 0);
        let entries = cpuid::normalize(&self.supported_cpuid, index, self.vcpus, tsc_khz);
        let cpuid = CpuId::from_entries(&entries)
            .map_err(|e| Error::Config(format!("CPUID list too long: {e:?}")))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        msr::setup_msrs(&vcpu)?;
        regs::setup_fpu(&vcpu)?;
        interrupts::setup_lapic(&vcpu)?;
        Ok(vcpu)
    }

    fn configure_boot(
        &mut self,
        _vm: &VmFd,
        vcpus: &mut [VcpuFd],
        mem: &GuestMemoryMmap,
        config: &VmConfig,
        devices: &[DeviceInfo],
    ) -> Result<()> {
        let boot_vcpu = vcpus
            .first()
            .ok_or_else(|| Error::Config("no vCPU to boot".into()))?;
        let kernel = loader::load_kernel(mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => {
                loader::load_initrd(mem, path, &kernel, layout::low_ram_end(self.memory_size))?
            }
            None => None,
        };
        loader::write_cmdline(mem, &config.cmdline, kernel.cmdline_max)?;
        let rsdp = acpi::write_acpi_tables(mem, self.vcpus, devices, &self.layout.pci)?;
        reset_vector::write_reset_vector(mem, devices)?;
        let e820 = layout::e820_map(self.memory_size, pci_ecam(devices));
        let info = BootInfo {
            e820: &e820,
            cmdline_len: config.cmdline.len(),
            initrd,
            rsdp,
        };
        match kernel.mode {
            EntryMode::Long => boot_info::write_zero_page(mem, kernel.setup_header, &info)?,
            EntryMode::Protected32 => boot_info::write_start_info(mem, &info)?,
            EntryMode::Multiboot => multiboot_info::write_info(mem, &info)?,
        }
        log::debug!(
            "x86_64: {:?} entry at {:#x}, initrd {initrd:x?}, RSDP at {rsdp:#x}",
            kernel.mode,
            kernel.entry
        );
        regs::setup_boot_vcpu(boot_vcpu, mem, kernel.mode, kernel.entry)
    }

    fn handle_exit(&self, vcpu_index: u8, exit: VcpuExit<'_>) -> ExitAction {
        exit::handle_exit(vcpu_index, exit)
    }

    fn save_clock(&self, vm: &VmFd, _vcpus: &[&VcpuFd]) -> Result<GuestClock> {
        let clock = vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?;
        Ok(GuestClock { value: clock.clock })
    }

    fn restore_clock(&self, vm: &VmFd, _vcpus: &[&VcpuFd], clock: GuestClock) -> Result<()> {
        let data = kvm_bindings::kvm_clock_data {
            clock: clock.value,
            ..Default::default()
        };
        vm.set_clock(&data).map_err(kvm_err("KVM_SET_CLOCK"))
    }

    fn save_vcpu(&self, vcpu: &VcpuFd) -> Result<snapshot::VcpuState> {
        self.check_xsave_fits()?;
        snapshot::save_vcpu(vcpu, &self.msr_indices, self.tsc_khz_known)
    }

    fn restore_vcpu(&self, vcpu: &VcpuFd, state: &snapshot::VcpuState) -> Result<()> {
        self.check_xsave_fits()?;
        snapshot::restore_vcpu(vcpu, state)
    }

    fn save_vm(&self, vm: &VmFd, _vcpus: &[&VcpuFd]) -> Result<snapshot::VmState> {
        snapshot::save_vm(vm, self.legacy_pit)
    }

    fn restore_vm(
        &mut self,
        vm: &VmFd,
        _vcpus: &[VcpuFd],
        state: &snapshot::VmState,
    ) -> Result<()> {
        snapshot::restore_vm(vm, self.legacy_pit, state)
    }

    fn msi_routing(&self) -> Result<crate::MsiRouting> {
        use kvm_bindings::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
        // KVM's default table: GSIs 0-15 on a PIC and the IOAPIC, 16-23 on
        // the IOAPIC alone; MSIs go above.
        let route = |gsi, irqchip, pin| crate::IrqchipRoute { gsi, irqchip, pin };
        let mut irqchip_routes = Vec::new();
        for gsi in 0..24 {
            irqchip_routes.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < 16 {
                let pic = [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE][gsi as usize / 8];
                irqchip_routes.push(route(gsi, pic, gsi % 8));
            }
        }
        Ok(crate::MsiRouting {
            irqchip_routes,
            first_msi_gsi: 24,
            requester_id: false,
        })
    }

    fn seccomp_extras() -> crate::SeccompExtras {
        seccomp::extras()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn config(vcpus: u8, memory_size: u64) -> VmConfig {
        VmConfig {
            vcpus,
            memory_size,
            kernel: PathBuf::from("/boot/vmlinuz"),
            initrd: None,
            cmdline: String::new(),
            gic: GicChoice::Auto,
            dump_fdt: None,
            debug_exit: false,
            legacy_pit: false,
            pci: false,
            pmu: false,
        }
    }

    #[test]
    fn vcpu_count_limits() {
        let host = 1 << 40;
        assert!(validate_config(&config(1, 128 << 20), 1024, host).is_ok());
        assert!(validate_config(&config(254, 128 << 20), 1024, host).is_ok());
        for (vcpus, kvm_max) in [(0, 1024), (255, 1024), (9, 8)] {
            let err = validate_config(&config(vcpus, 128 << 20), kvm_max, host).unwrap_err();
            assert!(err.to_string().contains("vCPUs requested"), "{err}");
        }
    }

    #[test]
    fn aarch64_only_options_are_refused() {
        let mut c = config(1, 128 << 20);
        c.gic = GicChoice::V3;
        let err = validate_config(&c, 8, u64::MAX).unwrap_err().to_string();
        assert_eq!(err, "--gic applies only to aarch64");
        let mut c = config(1, 128 << 20);
        c.dump_fdt = Some(PathBuf::from("/tmp/x.dtb"));
        let err = validate_config(&c, 8, u64::MAX).unwrap_err().to_string();
        assert_eq!(err, "--dump-fdt applies only to aarch64");
        let mut c = config(1, 128 << 20);
        c.pmu = true;
        let err = validate_config(&c, 8, u64::MAX).unwrap_err().to_string();
        assert!(err.starts_with("--pmu applies only to aarch64"), "{err}");
    }

    #[test]
    fn memory_limits() {
        let err = validate_config(&config(1, 16 << 20), 8, u64::MAX).unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("at least 64 MiB")),
            "{err}"
        );
        let err = validate_config(&config(1, 8 << 30), 8, 4 << 30).unwrap_err();
        assert!(
            err.to_string().contains("more than this host allows"),
            "{err}"
        );
        assert!(
            crate::host_memory_limit() > 64 << 20,
            "this host has some RAM"
        );
    }

    #[test]
    fn physical_address_width_is_respected() {
        let cpuid = |bits| {
            vec![kvm_cpuid_entry2 {
                function: 0x8000_0008,
                eax: bits,
                ..Default::default()
            }]
        };
        let big = layout::memory_layout(1 << 40);
        assert!(check_address_width(&cpuid(40), &big, false).is_err());
        assert!(check_address_width(&cpuid(48), &big, false).is_ok());
        assert!(
            check_address_width(&[], &big, true).is_ok(),
            "unknown width: no check"
        );
    }

    #[test]
    fn pci_bar_window_must_fit_the_address_width() {
        let cpuid = vec![kvm_cpuid_entry2 {
            function: 0x8000_0008,
            eax: 36,
            ..Default::default()
        }];
        // 60 GiB of RAM ends at 61 GiB, under the 64 GiB 36 bits reach;
        // the 4 GiB BAR window above it would end at 65 GiB.
        let layout = layout::memory_layout(60 << 30);
        assert_eq!(layout.pci.mmio64, (61 << 30)..(65 << 30));
        assert!(check_address_width(&cpuid, &layout, false).is_ok());
        let err = check_address_width(&cpuid, &layout, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PCI 64-bit BAR window (0xf40000000..0x1040000000")
                && err.contains("36-bit"),
            "{err}"
        );
        // Small enough that the window fits too.
        let layout = layout::memory_layout(56 << 30);
        assert!(check_address_width(&cpuid, &layout, true).is_ok());
    }

    fn arch(debug_exit: bool) -> X86_64 {
        X86_64 {
            layout: layout::memory_layout(128 << 20),
            memory_size: 128 << 20,
            vcpus: 1,
            debug_exit,
            legacy_pit: false,
            pci: false,
            supported_cpuid: vec![],
            tsc_khz_known: false,
            msr_indices: vec![],
            xsave_fits: true,
        }
    }

    #[test]
    fn debug_exit_port_only_when_asked() {
        let kinds = |debug_exit| -> Vec<DeviceKind> {
            arch(debug_exit)
                .platform_devices()
                .iter()
                .map(|d| d.kind)
                .collect()
        };
        assert!(!kinds(false).contains(&DeviceKind::DebugExit));
        let devices = arch(true).platform_devices();
        let port = devices
            .iter()
            .find(|d| d.kind == DeviceKind::DebugExit)
            .unwrap();
        assert_eq!(
            (port.space, port.base, port.len, port.irq),
            (AddressSpace::Pio, 0xf4, 4, None)
        );
    }

    #[test]
    fn a_pci_machine_boots_with_mcfg_pci0_and_ecam_reserved() {
        use vm_memory::{Bytes, GuestAddress};

        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let tables_of = |arch: &X86_64| {
            let devices = arch.platform_devices();
            let rsdp = acpi::write_acpi_tables(&mem, 1, &devices, &arch.layout.pci).unwrap();
            let mut xsdt_addr = [0; 8];
            mem.read_slice(&mut xsdt_addr, GuestAddress(rsdp + 24))
                .unwrap();
            let mut xsdt = [0; 36 + 3 * 8];
            mem.read_slice(&mut xsdt, GuestAddress(u64::from_le_bytes(xsdt_addr)))
                .unwrap();
            let entries = (u32::from_le_bytes(xsdt[4..8].try_into().unwrap()) - 36) / 8;
            let e820 = layout::e820_map(arch.memory_size, pci_ecam(&devices));
            (entries, e820)
        };
        let (entries, e820) = tables_of(&arch(false));
        assert_eq!(entries, 2, "FADT and MADT");
        assert!(!e820.iter().any(|e| e.addr == layout::PCI_ECAM.start));

        let mut with_pci = arch(false);
        with_pci.pci = true;
        let (entries, e820) = tables_of(&with_pci);
        assert_eq!(entries, 3, "and MCFG");
        assert!(e820.contains(&layout::E820Entry {
            addr: 0xe000_0000,
            size: 1 << 20,
            kind: layout::E820Kind::Reserved,
        }));
    }

    #[test]
    fn platform_devices_match_the_pc_ports() {
        let arch = arch(false);
        let devices = arch.platform_devices();
        let find = |kind| *devices.iter().find(|d| d.kind == kind).unwrap();
        let serial = find(DeviceKind::Serial);
        assert_eq!((serial.base, serial.len, serial.irq), (0x3f8, 8, Some(4)));
        let i8042 = find(DeviceKind::I8042);
        assert_eq!((i8042.base, i8042.len, i8042.irq), (0x60, 5, Some(1)));
        let sleep = find(DeviceKind::AcpiSleep);
        assert_eq!((sleep.base, sleep.len), (0x600, 2));
        assert!(devices.iter().all(|d| d.space == AddressSpace::Pio));
        assert!(!devices.iter().any(|d| d
            .irq
            .is_some_and(|irq| arch.layout().device_irqs.contains(&irq))));
    }
}
