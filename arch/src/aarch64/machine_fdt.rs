//! Turns what the back end knows at boot (vCPU MPIDRs, RAM, the VGIC, the
//! devices the core built) into the `fdt` crate's machine description:
//! plain devices become nodes of their own, the PCI host bridge (from its
//! ECAM device and the layout's windows) and a GICv2m frame become the
//! description's `pci` and `gic_v2m`.

use fdt::{Chosen, FdtDevice, MachineDescription, PciHost, PsciMethod, Region, V2mFrame};

use crate::{AddressSpace, DeviceInfo, DeviceKind, Error, PciLayout, Result};

/// Frequency of the fixed clock the PL031 is fed from (`apb_pclk`).
pub const APB_PCLK_HZ: u32 = 24_000_000;
/// The 16550's input clock: the classic 1.8432 MHz crystal.
pub const UART_CLOCK_HZ: u32 = 1_843_200;
/// ECAM bytes per bus.
const ECAM_BUS_SIZE: u64 = 1 << 20;

/// What one device the core built is to the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtView {
    /// A node of its own.
    Device(FdtDevice),
    /// The PCIe host bridge's ECAM window.
    PciEcam(Region),
    /// A GICv2m MSI frame.
    V2m(V2mFrame),
}

fn config_err(device: &DeviceInfo, what: &str) -> Error {
    Error::Config(format!("{:?} at {:#x} {what}", device.kind, device.base))
}

/// The device tree view of one device the core built.
pub fn fdt_device(device: &DeviceInfo) -> Result<FdtView> {
    if device.space != AddressSpace::Mmio {
        return Err(config_err(
            device,
            "is port I/O, which aarch64 does not have",
        ));
    }
    let region = Region::new(device.base, device.len);
    let spi = || {
        device
            .irq
            .ok_or_else(|| config_err(device, "has no interrupt line"))
    };
    let kind = match device.kind {
        DeviceKind::Serial => fdt::DeviceKind::Serial16550,
        DeviceKind::Rtc => fdt::DeviceKind::Pl031Rtc,
        DeviceKind::VirtioMmio => fdt::DeviceKind::VirtioMmio,
        DeviceKind::PciEcam => return Ok(FdtView::PciEcam(region)),
        DeviceKind::GicV2mFrame { spis } => {
            return Ok(FdtView::V2m(V2mFrame {
                frame: region,
                first_spi: spi()?,
                spis,
            }))
        }
        _ => return Err(config_err(device, "does not exist on aarch64")),
    };
    Ok(FdtView::Device(FdtDevice {
        kind,
        region,
        spi: spi()?,
    }))
}

/// The host bridge over the ECAM window `ecam` (whole buses from 0), with
/// the BAR windows and INTx lines of `layout`.
fn pci_host(ecam: Region, layout: &PciLayout) -> Result<PciHost> {
    let buses = ecam.size / ECAM_BUS_SIZE;
    if buses == 0 || buses > 256 || !ecam.size.is_multiple_of(ECAM_BUS_SIZE) {
        return Err(Error::Config(format!(
            "ECAM window {:#x}+{:#x} is not a whole number of 1 MiB buses (1..=256)",
            ecam.base, ecam.size
        )));
    }
    let window = |w: &std::ops::Range<u64>| Region::new(w.start, w.end - w.start);
    Ok(PciHost {
        ecam,
        buses: (0, (buses - 1) as u8),
        mmio32: window(&layout.mmio32),
        mmio64: (!layout.mmio64.is_empty()).then(|| window(&layout.mmio64)),
        intx_spis: layout.intx_irqs,
    })
}

/// Everything the device tree is built from.
#[derive(Clone, Debug)]
pub struct BootMachine<'a> {
    /// MPIDR affinity per vCPU, boot vCPU first.
    pub mpidrs: Vec<u64>,
    /// Guest RAM.
    pub ram: Region,
    /// The VGIC as the guest sees it.
    pub gic: fdt::Gic,
    /// Kernel command line, as the user gave it (the FDT's stdout-path
    /// names the UART for a command line without `console=`).
    pub cmdline: &'a str,
    /// Where the initrd was loaded.
    pub initrd: Option<Region>,
    /// Devices the core built.
    pub devices: &'a [DeviceInfo],
    /// Where a host bridge's BARs and INTx lines go; described only when
    /// `devices` holds its ECAM window.
    pub pci: &'a PciLayout,
    /// Whether the vCPUs have a PMU.
    pub pmu: bool,
}

/// The machine description for `machine`.
pub fn describe(machine: &BootMachine<'_>) -> Result<MachineDescription> {
    let mut devices = Vec::new();
    let (mut pci, mut gic_v2m) = (None, None);
    for device in machine.devices {
        match fdt_device(device)? {
            FdtView::Device(node) => devices.push(node),
            FdtView::PciEcam(ecam) if pci.is_none() => {
                pci = Some(pci_host(ecam, machine.pci)?);
            }
            FdtView::V2m(frame) if gic_v2m.is_none() => gic_v2m = Some(frame),
            FdtView::PciEcam(_) | FdtView::V2m(_) => {
                return Err(config_err(device, "is the machine's second of its kind"))
            }
        }
    }
    Ok(MachineDescription {
        cpus: machine.mpidrs.clone(),
        memory: vec![machine.ram],
        gic: machine.gic,
        timer_ppis: fdt::ARMV8_TIMER_PPIS,
        pmu_ppi: machine.pmu.then_some(fdt::PMU_PPI),
        psci: PsciMethod::Hvc,
        chosen: Chosen {
            bootargs: machine.cmdline.to_owned(),
            initrd: machine.initrd,
        },
        devices,
        apb_pclk_hz: APB_PCLK_HZ,
        uart_clock_hz: UART_CLOCK_HZ,
        gic_v2m,
        pci,
    })
}

/// Builds the device tree blob for `machine`.
pub fn build(machine: &BootMachine<'_>) -> Result<Vec<u8>> {
    let blob = fdt::build(&describe(machine)?)
        .map_err(|e| Error::Config(format!("cannot build the device tree: {e}")))?;
    if blob.len() as u64 > super::layout::FDT_MAX_SIZE {
        return Err(Error::Config(format!(
            "device tree of {} bytes exceeds the 2 MiB the boot protocol allows",
            blob.len()
        )));
    }
    Ok(blob)
}
