//! Device tree blobs for tandem's Arm guests, built from a plain description
//! of the machine ([`MachineDescription`]) with `vm-fdt`.
//!
//! The crate knows the device tree bindings (GICv2/v3, generic timer, PSCI,
//! 16550, PL031, virtio-mmio) but nothing about KVM or the host, so it
//! builds and is tested on any architecture. [`decode`] reads a blob back,
//! for tests and for inspecting a dumped tree.

pub mod decode;
mod nodes;

#[cfg(test)]
mod tests;

/// The generic timer's PPIs in binding order: secure physical, non-secure
/// physical, virtual, hypervisor (the numbers QEMU and KVM use).
pub const ARMV8_TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];

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
    Ok(())
}
