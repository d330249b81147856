//! Turns what the back end knows at boot (vCPU MPIDRs, RAM, the VGIC, the
//! devices the core built) into the `fdt` crate's machine description.

use fdt::{Chosen, FdtDevice, MachineDescription, PsciMethod, Region};

use crate::{AddressSpace, DeviceInfo, DeviceKind, Error, Result};

/// Frequency of the fixed clock the PL031 is fed from (`apb_pclk`).
pub const APB_PCLK_HZ: u32 = 24_000_000;
/// The 16550's input clock: the classic 1.8432 MHz crystal.
pub const UART_CLOCK_HZ: u32 = 1_843_200;
/// The device tree view of one device the core built.
pub fn fdt_device(device: &DeviceInfo) -> Result<FdtDevice> {
    let kind = match device.kind {
        DeviceKind::Serial => fdt::DeviceKind::Serial16550,
        DeviceKind::Rtc => fdt::DeviceKind::Pl031Rtc,
        DeviceKind::VirtioMmio => fdt::DeviceKind::VirtioMmio,
        other => {
            return Err(Error::Config(format!(
                "{other:?} at {:#x} does not exist on aarch64",
                device.base
            )))
        }
    };
    if device.space != AddressSpace::Mmio {
        return Err(Error::Config(format!(
            "{:?} at {:#x} is port I/O, which aarch64 does not have",
            device.kind, device.base
        )));
    }
    let spi = device.irq.ok_or_else(|| {
        Error::Config(format!(
            "{:?} at {:#x} has no interrupt line",
            device.kind, device.base
        ))
    })?;
    Ok(FdtDevice {
        kind,
        region: Region::new(device.base, device.len),
        spi,
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
}

/// The machine description for `machine`.
pub fn describe(machine: &BootMachine<'_>) -> Result<MachineDescription> {
    let devices = machine
        .devices
        .iter()
        .map(fdt_device)
        .collect::<Result<Vec<_>>>()?;
    Ok(MachineDescription {
        cpus: machine.mpidrs.clone(),
        memory: vec![machine.ram],
        gic: machine.gic,
        timer_ppis: fdt::ARMV8_TIMER_PPIS,
        psci: PsciMethod::Hvc,
        chosen: Chosen {
            bootargs: machine.cmdline.to_owned(),
            initrd: machine.initrd,
        },
        devices,
        apb_pclk_hz: APB_PCLK_HZ,
        uart_clock_hz: UART_CLOCK_HZ,
        // No PCI yet (issue 11): no bridge, so no MSI frame either.
        gic_v2m: None,
        pci: None,
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
