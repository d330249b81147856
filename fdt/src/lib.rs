//! Device tree blobs for tandem's Arm guests, built from a plain description
//! of the machine ([`MachineDescription`]) with `vm-fdt`.
//!
//! The crate knows the device tree bindings (GICv2/v3 and its v2m MSI
//! frame, generic timer, PSCI, 16550, PL031, virtio-mmio, an ECAM PCIe host
//! bridge) but nothing about KVM or the host, so it
//! builds and is tested on any architecture. [`decode`] reads a blob back,
//! for tests and for inspecting a dumped tree.

pub mod decode;
mod nodes;

#[cfg(test)]
mod pci_tests;
#[cfg(test)]
mod tests;

/// The generic timer's PPIs in binding order: secure physical, non-secure
/// physical, virtual, hypervisor (the numbers QEMU and KVM use).
pub const ARMV8_TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];

/// The PMUv3 overflow interrupt's PPI (INTID 23), where QEMU's `virt` and
/// kvmtool put it.
pub const PMU_PPI: u32 = 7;

/// Highest SPI number a GIC can have (INTID 1019).
pub const MAX_SPI: u32 = 987;

/// GICv2 cannot address more than 8 CPUs.
pub const GICV2_MAX_CPUS: usize = 8;

/// A guest-physical address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// The range `[base, base + size)`.
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }
}

/// The interrupt controller the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (GIC-400): distributor and CPU interface.
    V2 {
        /// Distributor registers.
        dist: Region,
        /// CPU interface registers.
        cpu: Region,
    },
    /// GICv3: distributor, one redistributor region for all CPUs, and an
    /// optional ITS (MSI controller).
    V3 {
        /// Distributor registers.
        dist: Region,
        /// Redistributors of all CPUs, contiguous.
        redist: Region,
        /// Interrupt translation service, if the VM has one.
        its: Option<Region>,
    },
}

/// How the guest calls PSCI firmware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PsciMethod {
    /// `hvc`: the hypervisor (KVM) implements PSCI.
    #[default]
    Hvc,
    /// `smc`: secure firmware implements PSCI.
    Smc,
}

/// What a device is, as far as its device tree node is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// 16550A-compatible UART, byte-spaced registers.
    Serial16550,
    /// PL031 real-time clock (an AMBA primecell clocked by `apb_pclk`).
    Pl031Rtc,
    /// A virtio-mmio transport.
    VirtioMmio,
}

/// One memory-mapped device with one SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdtDevice {
    /// What the device is.
    pub kind: DeviceKind,
    /// Register window.
    pub region: Region,
    /// SPI number (INTID - 32). Every device interrupt is described as
    /// edge-rising: tandem raises them through KVM_IRQFD, which pulses.
    pub spi: u32,
}

/// A GICv2m MSI frame: a GICv2 host's MSI controller, each MSI one of its
/// SPIs (`arm,gic-v2m-frame`, a child of the GIC node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V2mFrame {
    /// The frame's registers (MSI_TYPER, MSI_SETSPI_NS).
    pub frame: Region,
    /// First SPI (INTID - 32) an MSI may set.
    pub first_spi: u32,
    /// How many SPIs from there.
    pub spis: u32,
}

/// A PCIe host bridge with an ECAM configuration window
/// (`pci-host-ecam-generic`). Its MSI controller is the machine's: the GICv3
/// ITS (`msi-map`) or a GICv2m frame (`msi-parent`); with neither, the node
/// names none and devices use INTx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// The ECAM window, 1 MiB per bus from bus `buses.0`.
    pub ecam: Region,
    /// First and last bus number.
    pub buses: (u8, u8),
    /// Window for 32-bit non-prefetchable BARs (PCI address = CPU address).
    pub mmio32: Region,
    /// Window for 64-bit prefetchable BARs, if the layout has room.
    pub mmio64: Option<Region>,
    /// SPIs of the INTA#..INTD# lines, swizzled across device slots.
    pub intx_spis: [u32; 4],
}

/// The `/chosen` node: what the kernel is told about its boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chosen {
    /// Kernel command line.
    pub bootargs: String,
    /// The initrd's location, if there is one.
    pub initrd: Option<Region>,
}

/// Everything the device tree says about a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineDescription {
    /// MPIDR affinity of each CPU, boot CPU first.
    pub cpus: Vec<u64>,
    /// RAM regions.
    pub memory: Vec<Region>,
    /// Interrupt controller.
    pub gic: Gic,
    /// Generic timer PPIs, usually [`ARMV8_TIMER_PPIS`].
    pub timer_ppis: [u32; 4],
    /// The PMUv3's overflow interrupt PPI, when the CPUs have a PMU
    /// (usually [`PMU_PPI`]).
    pub pmu_ppi: Option<u32>,
    /// PSCI conduit. PSCI 0.2+ is assumed (KVM_ARM_VCPU_PSCI_0_2).
    pub psci: PsciMethod,
    /// Command line and initrd.
    pub chosen: Chosen,
    /// Devices; the first serial becomes `stdout-path`.
    pub devices: Vec<FdtDevice>,
    /// Frequency of the fixed `apb_pclk` clock feeding the PL031.
    pub apb_pclk_hz: u32,
    /// Input clock of the 16550 UARTs.
    pub uart_clock_hz: u32,
    /// A GICv2m frame under a GICv2 (None: no MSI on a GICv2 machine).
    pub gic_v2m: Option<V2mFrame>,
    /// A PCIe host bridge, if the machine has PCI.
    pub pci: Option<PciHost>,
}

/// Why a device tree could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The description breaks a rule of the bindings.
    #[error("invalid machine description: {0}")]
    Invalid(String),
    /// `vm-fdt` refused a node or property.
    #[error("device tree writer: {0}")]
    Writer(String),
}

impl From<vm_fdt::Error> for Error {
    fn from(e: vm_fdt::Error) -> Self {
        Error::Writer(e.to_string())
    }
}

/// Shorthand for this crate's results.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds the device tree blob for `machine`.
pub fn build(machine: &MachineDescription) -> Result<Vec<u8>> {
    validate(machine)?;
    nodes::write(machine)
}

fn validate(m: &MachineDescription) -> Result<()> {
    let invalid = |msg: String| Err(Error::Invalid(msg));
    if m.cpus.is_empty() {
        return invalid("no CPUs".into());
    }
    if m.memory.is_empty() || m.memory.iter().any(|r| r.size == 0) {
        return invalid("no RAM, or an empty RAM region".into());
    }
    if matches!(m.gic, Gic::V2 { .. }) && m.cpus.len() > GICV2_MAX_CPUS {
        return invalid(format!(
            "GICv2 supports at most {GICV2_MAX_CPUS} CPUs, not {}",
            m.cpus.len()
        ));
    }
    let mut mpidrs = m.cpus.clone();
    mpidrs.sort_unstable();
    mpidrs.dedup();
    if mpidrs.len() != m.cpus.len() {
        return invalid("two CPUs share an MPIDR".into());
    }
    if let Some(ppi) = m.timer_ppis.iter().find(|&&p| p >= 16) {
        return invalid(format!("timer PPI {ppi} is not a PPI (0..16)"));
    }
    if let Some(ppi) = m.pmu_ppi {
        if ppi >= 16 || m.timer_ppis.contains(&ppi) {
            return invalid(format!("PMU PPI {ppi} is not a free PPI (0..16)"));
        }
    }
    for d in &m.devices {
        if d.spi > MAX_SPI {
            return invalid(format!(
                "{:?} at {:#x}: SPI {} is above {MAX_SPI}",
                d.kind, d.region.base, d.spi
            ));
        }
        if d.region.size == 0 {
            return invalid(format!(
                "{:?} at {:#x} has no registers",
                d.kind, d.region.base
            ));
        }
    }
    if let Some(initrd) = m.chosen.initrd {
        if initrd.size == 0 {
            return invalid("empty initrd".into());
        }
    }
    if let Some(v2m) = m.gic_v2m {
        if !matches!(m.gic, Gic::V2 { .. }) {
            return invalid("a GICv2m frame needs a GICv2".into());
        }
        if v2m.spis == 0 || v2m.first_spi.saturating_add(v2m.spis) > MAX_SPI + 1 {
            return invalid(format!(
                "GICv2m SPIs {}+{} out of range",
                v2m.first_spi, v2m.spis
            ));
        }
    }
    if let Some(pci) = m.pci {
        let buses = u64::from(pci.buses.1).saturating_sub(u64::from(pci.buses.0)) + 1;
        if pci.buses.1 < pci.buses.0 || pci.ecam.size < buses << 20 {
            return invalid(format!(
                "ECAM window of {:#x} bytes for buses {}..={}",
                pci.ecam.size, pci.buses.0, pci.buses.1
            ));
        }
        if pci.mmio32.size == 0 || pci.mmio64.is_some_and(|w| w.size == 0) {
            return invalid("an empty PCI memory window".into());
        }
        if let Some(spi) = pci.intx_spis.iter().find(|&&s| s > MAX_SPI) {
            return invalid(format!("PCI INTx SPI {spi} is above {MAX_SPI}"));
        }
    }
    Ok(())
}
