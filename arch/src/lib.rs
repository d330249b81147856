//! The boundary between tandem's arch-neutral core and its back ends.
//!
//! The core (the `tandem` binary) only ever talks to the [`Arch`] trait and
//! the plain data types here. Each back end lives in its own module and is
//! chosen at compile time through the [`Host`] alias: this file is the only
//! place outside the back-end modules that names a target architecture.

use std::ops::Range;
use std::path::PathBuf;

use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use vm_memory::GuestAddress;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
pub mod test_payloads;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

/// The back end for the architecture tandem was built for.
#[cfg(target_arch = "aarch64")]
pub type Host = aarch64::AArch64;
/// The back end for the architecture tandem was built for.
#[cfg(target_arch = "x86_64")]
pub type Host = x86_64::X86_64;

/// Which interrupt controller the guest gets, where the architecture has a
/// choice (aarch64). `Auto` is the only value x86_64 accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GicChoice {
    /// GICv3 when the host has it, else GICv2.
    #[default]
    Auto,
    /// Force GICv2 (GIC-400 hosts such as the Raspberry Pi 4/5).
    V2,
    /// Force GICv3.
    V3,
}

/// Everything a back end needs to know to build and boot a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Number of vCPUs, at least 1.
    pub vcpus: u8,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// Kernel image (bzImage or ELF vmlinux on x86_64, `Image` on aarch64).
    pub kernel: PathBuf,
    /// Optional initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line, passed to the guest as given.
    pub cmdline: String,
    /// Interrupt controller choice (aarch64 only).
    pub gic: GicChoice,
    /// Where to write the generated device tree, for inspection (aarch64).
    pub dump_fdt: Option<PathBuf>,
    /// An isa-debug-exit style port the guest ends the run through (x86_64:
    /// port 0xf4), for test kernels such as kvm-unit-tests.
    pub debug_exit: bool,
    /// An in-kernel 8254 PIT (x86_64). Linux 5.3 and later do without one
    /// when the CPU has a TSC-deadline LAPIC timer, which every KVM guest
    /// has; destroying a VM with a PIT costs KVM about 15 ms more.
    pub legacy_pit: bool,
    /// A PCIe host bridge ([`MemoryLayout::pci`]): virtio devices are
    /// PCI functions on it instead of virtio-mmio transports.
    pub pci: bool,
    /// A PMUv3 in each vCPU, backed by the host's counters (aarch64; an
    /// error where KVM offers none).
    pub pmu: bool,
}

/// The address space a device is reached through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    /// x86 port I/O (`in`/`out`).
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

/// What a device is, as far as boot tables (FDT, ACPI) care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// 16550-compatible UART, the console.
    Serial,
    /// PL031 real-time clock.
    Rtc,
    /// i8042 keyboard controller: a keyboard (for Ctrl+Alt+Del) and the
    /// CPU reset line.
    I8042,
    /// ACPI sleep control/status registers: guest power-off.
    AcpiSleep,
    /// A virtio-mmio transport.
    VirtioMmio,
    /// The PCIe host bridge's ECAM configuration window (bus 0); the
    /// machine's [`PciLayout`] says where its BARs and INTx lines go. Its
    /// presence is what puts PCI in the boot tables (ACPI MCFG and PCI0,
    /// or the FDT's `pci-host-ecam-generic` node).
    PciEcam,
    /// x86's legacy PCI configuration ports 0xcf8-0xcff.
    PciConfigPorts,
    /// A GICv2m MSI frame (aarch64 with a GICv2 and PCI): a write of an
    /// SPI's INTID to its MSI_SETSPI_NS register raises that SPI, which
    /// is how a GICv2 guest gets MSIs. It owns `spis` SPIs from the
    /// device's `irq`: the VMM binds one irqfd to each of them.
    GicV2mFrame {
        /// How many SPIs, from `irq` on, MSIs may set.
        spis: u32,
    },
    /// The debug-exit port: a write ends the run with a status the guest
    /// chose.
    DebugExit,
}

/// One device's place in the machine: where it lives and which interrupt
/// line (a KVM GSI: IOAPIC pin on x86_64, SPI number on aarch64) it raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What the device is.
    pub kind: DeviceKind,
    /// Port or memory space.
    pub space: AddressSpace,
    /// First port or guest-physical address.
    pub base: u64,
    /// Length of the register window in bytes.
    pub len: u64,
    /// Interrupt line, if the device has one.
    pub irq: Option<u32>,
}

/// The host bridge's ECAM window of `layout` as a device of the machine.
pub fn pci_ecam_device(layout: &MemoryLayout) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::PciEcam,
        space: AddressSpace::Mmio,
        base: layout.pci.ecam.start,
        len: layout.pci.ecam.end - layout.pci.ecam.start,
        irq: None,
    }
}

/// The guest-physical layout a back end chose for a [`VmConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Guest RAM regions (start, size), sorted, each a multiple of the host
    /// page size.
    pub ram: Vec<(GuestAddress, u64)>,
    /// MMIO addresses free for virtio-mmio transports.
    pub device_mmio: Range<u64>,
    /// Interrupt lines (GSIs) free for those devices.
    pub device_irqs: Range<u32>,
    /// Where a PCI host bridge goes, if the VM has one.
    pub pci: PciLayout,
}

/// The guest-physical places of a PCIe host bridge, chosen by each back
/// end inside its map and IPA limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciLayout {
    /// ECAM configuration space of bus 0 (1 MiB).
    pub ecam: Range<u64>,
    /// The window 32-bit memory BARs are placed in (below 4 GiB).
    pub mmio32: Range<u64>,
    /// The window 64-bit prefetchable memory BARs are placed in.
    pub mmio64: Range<u64>,
    /// INTx lines (GSIs) of pins A-D after the standard swizzle: a
    /// device in slot `s` with pin `p` (0 = INTA) raises
    /// `intx_irqs[(s + p) % 4]`.
    pub intx_irqs: [u32; 4],
}

/// How PCI functions' MSIs reach this VM's interrupt controller through
/// KVM's GSI routing table ([`Arch::msi_routing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsiRouting {
    /// The routes KVM starts with that the VM's irqfds use: a
    /// KVM_SET_GSI_ROUTING table replaces the whole table, so the core
    /// repeats them in every table it sets.
    pub irqchip_routes: Vec<IrqchipRoute>,
    /// GSIs from here up are free for MSI routes.
    pub first_msi_gsi: u32,
    /// Whether an MSI route names its function by requester id (bus << 8
    /// | device << 3 | function) as KVM's device id (`KVM_MSI_VALID_DEVID`,
    /// which the GICv3 ITS needs).
    pub requester_id: bool,
}

/// A GSI routed to an interrupt controller's pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqchipRoute {
    /// The GSI.
    pub gsi: u32,
    /// KVM's irqchip number (x86: PIC master, PIC slave, IOAPIC; arm: 0).
    pub irqchip: u32,
    /// The pin on it.
    pub pin: u32,
}

/// Guest time as it stood when the VM was paused, so that resume can hide
/// the paused interval from the guest, and a snapshot can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClock {
    /// x86_64: kvmclock in nanoseconds (KVM_GET_CLOCK); aarch64: the
    /// guest's virtual counter in ticks.
    pub value: u64,
}

/// What the core should do after an exit the back end interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run the vCPU again.
    Continue,
    /// The guest powered off: end the run successfully.
    PowerOff,
    /// The guest asked for a reset: end the run successfully.
    Reset,
    /// Something went wrong that the guest cannot recover from.
    Fatal(String),
}

/// Errors a back end reports to the core. Messages are one line and say
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be satisfied on this host.
    #[error("{0}")]
    Config(String),
    /// A kernel or initrd could not be read or is not a kernel.
    #[error("{0}")]
    Image(String),
    /// A KVM ioctl failed.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The error KVM returned.
        source: kvm_ioctls::Error,
    },
    /// Writing boot data into guest memory failed.
    #[error("guest memory: {0}")]
    GuestMemory(String),
    /// A snapshot cannot be saved here, or does not fit this host or VM.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Shorthand for back-end results.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps a KVM error with what was being done, for `map_err`.
pub fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

/// The host's page size (4 KiB on x86_64; 4, 16 or 64 KiB on arm64).
pub fn host_page_size() -> Result<u64> {
    // SAFETY: sysconf only reads a system constant; no memory is involved.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .ok_or_else(|| Error::Config(format!("cannot read the host page size (got {size})")))
}

/// Host RAM plus swap in bytes (from /proc/meminfo), the most a guest can
/// be given without the host refusing or thrashing; `u64::MAX` if unknown.
pub fn host_memory_limit() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return u64::MAX;
    };
    let kib = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    match (kib("MemTotal:"), kib("SwapTotal:")) {
        (Some(ram), swap) => (ram + swap.unwrap_or(0)).saturating_mul(1024),
        (None, _) => u64::MAX,
    }
}

/// What a back end provides to the arch-neutral core.
///
/// The core calls these in order: [`Arch::create_vm`], [`Arch::layout`] and
/// [`Arch::platform_devices`] to build memory and devices,
/// [`Arch::create_vcpu`] once per vCPU, then [`Arch::configure_boot`] once
/// — or, restoring a snapshot, [`Arch::restore_vm`] and
/// [`Arch::restore_vcpu`] instead — then runs the vCPUs and hands every
/// exit that is not port or MMIO I/O to [`Arch::handle_exit`].
pub trait Arch: Sized + Send + Sync + 'static {
    /// The architecture's name, as `target_arch` spells it.
    const NAME: &'static str;
    /// Whether [`VmConfig::gic`] may be other than `Auto`.
    const HAS_GIC_CHOICE: bool;
    /// Whether the architecture has a legacy PIT ([`VmConfig::legacy_pit`]).
    const HAS_LEGACY_PIT: bool;
    /// Whether a PMU is the VMM's choice ([`VmConfig::pmu`]); x86_64
    /// guests get the one KVM lists in CPUID.
    const HAS_PMU_CHOICE: bool;

    /// Everything the guest can observe of one vCPU, for snapshots.
    type VcpuState: Serialize + DeserializeOwned + std::fmt::Debug + Send;
    /// What KVM holds for the whole VM outside the vCPUs and guest time
    /// (interrupt controllers, timers), for snapshots.
    type VmState: Serialize + DeserializeOwned + std::fmt::Debug + Send;

    /// Checks `config` against the host and creates the VM; its guest
    /// memory is registered next, then [`Arch::create_irqchip`] runs.
    fn create_vm(kvm: &Kvm, config: &VmConfig) -> Result<(Self, VmFd)>;

    /// Creates what must exist before the first vCPU and after guest
    /// memory: KVM makes a memory slot added after its interrupt controller
    /// wait out an SRCU grace period (6 ms per VM on a test host).
    fn create_irqchip(&mut self, vm: &VmFd) -> Result<()>;

    /// The guest-physical layout chosen for this VM.
    fn layout(&self) -> &MemoryLayout;

    /// Devices every guest of this architecture gets (console, clock, reset
    /// and power controls), with their addresses and interrupt lines.
    fn platform_devices(&self) -> Vec<DeviceInfo>;

    /// Creates vCPU `index` and sets everything that does not depend on the
    /// kernel (CPUID, MSRs, LAPIC; or KVM_ARM_VCPU_INIT).
    fn create_vcpu(&self, vm: &VmFd, index: u8) -> Result<VcpuFd>;

    /// Finishes the machine after all vCPUs exist: the interrupt controller
    /// where KVM wants it late (aarch64), kernel and initrd loading, boot
    /// tables (FDT or ACPI + boot_params) describing `devices`, and the boot
    /// vCPU's registers.
    fn configure_boot(
        &mut self,
        vm: &VmFd,
        vcpus: &mut [VcpuFd],
        mem: &GuestMemoryMmap,
        config: &VmConfig,
        devices: &[DeviceInfo],
    ) -> Result<()>;

    /// Interprets an exit the core does not handle itself (everything but
    /// port and MMIO I/O).
    fn handle_exit(&self, vcpu_index: u8, exit: VcpuExit<'_>) -> ExitAction;

    /// Reads guest time. Called with every vCPU parked, at pause.
    fn save_clock(&self, vm: &VmFd, vcpus: &[&VcpuFd]) -> Result<GuestClock>;

    /// Sets guest time back to `clock`, so the guest sees no time pass
    /// while it was paused. Called with every vCPU parked, at resume.
    fn restore_clock(&self, vm: &VmFd, vcpus: &[&VcpuFd], clock: GuestClock) -> Result<()>;

    /// Saves a parked vCPU's state.
    fn save_vcpu(&self, vcpu: &VcpuFd) -> Result<Self::VcpuState>;

    /// Gives a freshly created vCPU the state [`Arch::save_vcpu`] saved,
    /// refusing one this host cannot give the guest (CPU features).
    fn restore_vcpu(&self, vcpu: &VcpuFd, state: &Self::VcpuState) -> Result<()>;

    /// Saves the VM-wide state of a VM whose vCPUs are all parked.
    fn save_vm(&self, vm: &VmFd, vcpus: &[&VcpuFd]) -> Result<Self::VmState>;

    /// Gives a freshly built VM (vCPUs created, no boot configured) the
    /// state [`Arch::save_vm`] saved; called before [`Arch::restore_vcpu`].
    fn restore_vm(&mut self, vm: &VmFd, vcpus: &[VcpuFd], state: &Self::VmState) -> Result<()>;

    /// How PCI MSIs are routed on this VM; an error says why this VM's
    /// interrupt controller takes none (a GICv2 without an MSI frame).
    fn msi_routing(&self) -> Result<MsiRouting>;

    /// What this architecture adds to tandem's per-thread seccomp filters:
    /// the system calls and ioctls only it makes (src/seccomp/).
    fn seccomp_extras() -> SeccompExtras;
}

/// The architecture-specific part of tandem's seccomp filters. System call
/// numbers are `libc::SYS_*` values; ioctl numbers are request codes.
#[derive(Clone, Debug, Default)]
pub struct SeccompExtras {
    /// System calls every filtered thread may make that exist only on this
    /// architecture (the x86_64 forms of calls aarch64 only has as `*at`
    /// or `p*` variants, which libc may pick).
    pub all_threads: Vec<i64>,
    /// ioctls the main thread makes on a built VM: pause and resume save
    /// and restore guest time.
    pub main_ioctls: Vec<u64>,
    /// Names of the system calls only this architecture has, for the
    /// message a forbidden call ends tandem with.
    pub names: Vec<(i64, &'static str)>,
}
