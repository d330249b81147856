//! The aarch64 back end: a `virt`-like machine with an in-kernel VGIC (v3,
//! or v2 on GIC-400 hosts), PSCI, the generic timer, a 16550 console, a
//! PL031 clock and virtio-mmio, described to the kernel by a device tree.
//! Memory map: see [`layout`]; design notes: docs/aarch64.md.

mod counter;
mod exit;
mod gic;
mod image;
pub mod layout;
mod machine_fdt;
mod pmu;
mod seccomp;
mod snapshot;
mod vcpu;
mod vgic_plan;
mod vgic_state;

#[cfg(test)]
mod pci_tests;
#[cfg(test)]
mod tests;

use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

pub use gic::GicVersion;

use crate::{
    AddressSpace, Arch, DeviceInfo, DeviceKind, Error, ExitAction, GuestClock, MemoryLayout,
    Result, VmConfig,
};
use fdt::Region;
use gic::Vgic;
use layout::{GIC_V2M, RAM_BASE, RTC, RTC_SPI, SERIAL, SERIAL_SPI, V2M_SPIS};
use machine_fdt::BootMachine;

/// The aarch64 back end's state for one VM.
#[derive(Debug)]
pub struct AArch64 {
    layout: MemoryLayout,
    page_size: u64,
    vgic: Vgic,
    /// Whether the VM has a PCI host bridge.
    pci: bool,
    /// Whether each vCPU has a PMU.
    pmu: bool,
}

/// The single RAM region of `layout`.
fn ram_region(layout: &MemoryLayout) -> Region {
    let (start, size) = layout.ram[0];
    Region::new(start.0, size)
}

impl AArch64 {
    /// The GIC the guest got.
    pub fn gic_version(&self) -> GicVersion {
        self.vgic.version()
    }
}

/// Fuzzing hooks (fuzz/, docs/fuzzing.md), not an API: the boot payload
/// code of [`Arch::configure_boot`] without KVM, for RAM at `RAM_BASE`
/// and 4 KiB pages. Both back ends have them with the same signatures, so
/// the targets go through [`crate::Host`].
impl AArch64 {
    /// Checks and loads the Image `kernel` and places and loads `initrd`
    /// into `mem` as `configure_boot` does for a VM of `memory_size` bytes
    /// (the command line goes into the FDT: unused); returns the entry
    /// point and where the initrd went.
    #[doc(hidden)]
    pub fn fuzz_load_payload(
        mem: &GuestMemoryMmap,
        memory_size: u64,
        kernel: &std::path::Path,
        initrd: Option<&std::path::Path>,
        _cmdline: &str,
    ) -> Result<(u64, Option<(u64, u64)>)> {
        image::check_kernel(kernel)?;
        let loaded = image::load_kernel(mem, kernel)?;
        let ram = Region::new(RAM_BASE, memory_size);
        let initrd_size = initrd.map(image::initrd_size).transpose()?;
        let placed = layout::place_boot_data(ram, loaded.end, initrd_size, 4096)?;
        if let (Some(path), Some(region)) = (initrd, placed.initrd) {
            image::load_initrd(mem, path, region.base, region.size)?;
        }
        Ok((loaded.entry, placed.initrd.map(|r| (r.base, r.size))))
    }

    /// Where an initrd of `size` bytes goes in a VM of `memory_size` bytes,
    /// after a kernel ending at `kernel_end` (`_ceiling`: x86_64 only).
    #[doc(hidden)]
    pub fn fuzz_place_initrd(
        memory_size: u64,
        kernel_end: u64,
        _ceiling: u64,
        size: u64,
    ) -> Result<u64> {
        let ram = Region::new(RAM_BASE, memory_size);
        layout::place_boot_data(ram, kernel_end, Some(size), 4096)?
            .initrd
            .map(|region| region.base)
            .ok_or_else(|| Error::Config("no initrd placed".into()))
    }
}

impl Arch for AArch64 {
    const NAME: &'static str = "aarch64";
    const HAS_GIC_CHOICE: bool = true;
    const HAS_LEGACY_PIT: bool = false;
    const HAS_PMU_CHOICE: bool = true;
    type VcpuState = snapshot::VcpuState;
    type VmState = snapshot::VmState;

    fn create_vm(kvm: &Kvm, config: &VmConfig) -> Result<(Self, VmFd)> {
        if config.debug_exit {
            return Err(Error::Config(
                "--debug-exit applies only to x86_64 (arm64 test kernels exit through PSCI)".into(),
            ));
        }
        if config.legacy_pit {
            return Err(Error::Config(
                "--legacy-pit applies only to x86_64 (arm64 has no PIT)".into(),
            ));
        }
        if config.pmu {
            pmu::check_available(kvm)?;
        }
        image::check_kernel(&config.kernel)?;
        let host_memory = crate::host_memory_limit();
        if config.memory_size > host_memory {
            return Err(Error::Config(format!(
                "guest memory of {} MiB is more than this host's RAM plus swap ({} MiB)",
                config.memory_size >> 20,
                host_memory >> 20
            )));
        }
        let page_size = crate::host_page_size()?;
        let layout = layout::memory_layout(config.memory_size, page_size)?;
        let ram = ram_region(&layout);
        let ipa_top = layout::IpaTop::of(&layout, config.pci);
        let ipa_bits = ipa_top.bits();
        let vm_type = layout::vm_type_for_ipa(&ipa_top, kvm.get_host_ipa_limit())?;
        let vm = kvm
            .create_vm_with_type(vm_type)
            .map_err(crate::kvm_err("create VM"))?;
        let vgic = Vgic::create(&vm, config.gic, config.pci)?;
        // Asked of the VM: KVM lowers the limit once a GICv2 exists.
        let kvm_max = match usize::try_from(vm.check_extension_int(Cap::MaxVcpus)) {
            Ok(max) if max > 0 => max,
            _ => kvm.get_max_vcpus(),
        };
        let version = vgic.version();
        layout::check_vcpus(config.vcpus, version.max_vcpus(), kvm_max, version.name())?;
        log::info!(
            "aarch64 VM: {} MiB RAM at {RAM_BASE:#x}, host pages {} KiB, IPA {} bits{}",
            ram.size >> 20,
            page_size >> 10,
            ipa_bits,
            if vm_type == 0 {
                " (default VM type)"
            } else {
                ""
            },
        );
        Ok((
            Self {
                layout,
                page_size,
                vgic,
                pci: config.pci,
                pmu: config.pmu,
            },
            vm,
        ))
    }

    fn create_irqchip(&mut self, _vm: &VmFd) -> Result<()> {
        // The GIC exists since create_vm: the vCPU limit depends on its
        // version, and KVM maps its registers only at the first KVM_RUN.
        Ok(())
    }

    fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    fn platform_devices(&self) -> Vec<DeviceInfo> {
        let mut devices = platform_devices();
        devices.extend(pci_devices(&self.layout, self.vgic.version(), self.pci));
        devices
    }

    fn create_vcpu(&self, vm: &VmFd, index: u8) -> Result<VcpuFd> {
        vcpu::create(vm, index, self.pmu)
    }

    fn configure_boot(
        &mut self,
        vm: &VmFd,
        vcpus: &mut [VcpuFd],
        mem: &GuestMemoryMmap,
        config: &VmConfig,
        devices: &[DeviceInfo],
    ) -> Result<()> {
        let Some(boot_vcpu) = vcpus.first() else {
            return Err(Error::Config("no vCPUs to boot".into()));
        };
        let mpidrs = vcpus.iter().map(vcpu::mpidr).collect::<Result<Vec<_>>>()?;
        self.vgic.init()?;
        if self.pmu {
            pmu::init(vcpus)?;
        }
        counter::zero_guest_counter(vm, vcpus)?;

        let ram = ram_region(&self.layout);
        let kernel = image::load_kernel(mem, &config.kernel)?;
        let initrd_size = config
            .initrd
            .as_deref()
            .map(image::initrd_size)
            .transpose()?;
        let placed = layout::place_boot_data(ram, kernel.end, initrd_size, self.page_size)?;
        if let (Some(path), Some(initrd)) = (&config.initrd, placed.initrd) {
            image::load_initrd(mem, path, initrd.base, initrd.size)?;
            log::info!(
                "initrd at {:#x}..{:#x}",
                initrd.base,
                initrd.base + initrd.size
            );
        }

        let blob = machine_fdt::build(&BootMachine {
            mpidrs,
            ram,
            gic: self.vgic.fdt_gic(vcpus.len()),
            cmdline: &config.cmdline,
            initrd: placed.initrd,
            devices,
            pci: &self.layout.pci,
            pmu: self.pmu,
        })?;
        mem.write_slice(&blob, GuestAddress(placed.fdt))
            .map_err(|e| Error::GuestMemory(format!("writing the device tree: {e}")))?;
        if let Some(path) = &config.dump_fdt {
            std::fs::write(path, &blob).map_err(|e| {
                Error::Config(format!(
                    "cannot write the device tree to {}: {e}",
                    path.display()
                ))
            })?;
        }
        log::info!("device tree ({} bytes) at {:#x}", blob.len(), placed.fdt);
        vcpu::set_boot_regs(boot_vcpu, kernel.entry, placed.fdt)
    }

    fn handle_exit(&self, vcpu_index: u8, exit: VcpuExit<'_>) -> ExitAction {
        exit::exit_action(vcpu_index, exit)
    }

    fn save_clock(&self, _vm: &VmFd, vcpus: &[&VcpuFd]) -> Result<GuestClock> {
        let first = vcpus
            .first()
            .ok_or_else(|| Error::Config("a VM without vCPUs has no clock".into()))?;
        Ok(GuestClock {
            value: counter::guest_counter(first)?,
        })
    }

    fn restore_clock(&self, vm: &VmFd, vcpus: &[&VcpuFd], clock: GuestClock) -> Result<()> {
        counter::set_guest_counter(vm, vcpus, clock.value).map(drop)
    }

    fn save_vcpu(&self, vcpu: &VcpuFd) -> Result<snapshot::VcpuState> {
        snapshot::save_vcpu(vcpu)
    }

    fn restore_vcpu(&self, vcpu: &VcpuFd, state: &snapshot::VcpuState) -> Result<()> {
        snapshot::restore_vcpu(vcpu, state)
    }

    fn save_vm(&self, _vm: &VmFd, vcpus: &[&VcpuFd]) -> Result<snapshot::VmState> {
        snapshot::save_vm(&self.vgic, vcpus)
    }

    fn restore_vm(
        &mut self,
        _vm: &VmFd,
        vcpus: &[VcpuFd],
        state: &snapshot::VmState,
    ) -> Result<()> {
        snapshot::restore_vm(&self.vgic, vcpus, state)?;
        if self.pmu {
            pmu::init(vcpus)?;
        }
        Ok(())
    }

    fn msi_routing(&self) -> Result<crate::MsiRouting> {
        let version = self.vgic.version();
        let v2m = version.has_v2m(self.pci);
        if self.vgic.its().is_none() && !v2m {
            return Err(Error::Config(format!(
                "virtio-pci needs MSIs, and this {} has neither an ITS nor a GICv2m frame (use --transport mmio)",
                version.name()
            )));
        }
        // KVM's default table routes each SPI's GSI to that SPI (a v2m
        // frame's too: its MSIs are SPIs); the MSI routes go above them,
        // named by requester id for the ITS.
        let spis = layout::vgic_nr_irqs(v2m) - 32;
        let irqchip_routes = (0..spis)
            .map(|spi| crate::IrqchipRoute {
                gsi: spi,
                irqchip: 0,
                pin: spi,
            })
            .collect();
        Ok(crate::MsiRouting {
            irqchip_routes,
            first_msi_gsi: spis,
            requester_id: !v2m,
        })
    }

    fn seccomp_extras() -> crate::SeccompExtras {
        seccomp::extras()
    }
}

/// With `pci`, the host bridge and, on a GICv2 (which has no ITS), the
/// GICv2m frame its MSIs go through. A GICv3 with an ITS needs no device
/// of ours; one without gets no MSI controller (INTx only).
fn pci_devices(layout: &MemoryLayout, gic: GicVersion, pci: bool) -> Vec<DeviceInfo> {
    if !pci {
        return Vec::new();
    }
    let mut devices = vec![crate::pci_ecam_device(layout)];
    if gic.has_v2m(pci) {
        devices.push(DeviceInfo {
            kind: DeviceKind::GicV2mFrame {
                spis: V2M_SPIS.end - V2M_SPIS.start,
            },
            space: AddressSpace::Mmio,
            base: GIC_V2M.base,
            len: GIC_V2M.size,
            irq: Some(V2M_SPIS.start),
        });
    }
    devices
}

/// The console UART and the RTC, at their fixed places.
fn platform_devices() -> Vec<DeviceInfo> {
    let mmio = |kind, region: Region, spi| DeviceInfo {
        kind,
        space: AddressSpace::Mmio,
        base: region.base,
        len: region.size,
        irq: Some(spi),
    };
    vec![
        mmio(DeviceKind::Serial, SERIAL, SERIAL_SPI),
        mmio(DeviceKind::Rtc, RTC, RTC_SPI),
    ]
}
