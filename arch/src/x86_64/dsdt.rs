//! The DSDT: the devices Linux cannot probe for, in AML. The `\_S5_`
//! package (soft-off through the FADT sleep registers), the COM ports, the
//! i8042 as a `PNP0303` keyboard, and every virtio-mmio transport as an
//! `LNRO0005` device with its registers and interrupt — the only way x86
//! kernels without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` find them — and,
//! with a PCI host bridge, the devices `pci_tables` describes it with.

use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::acpi::OEM_ID;
use super::pci_tables::PciHost;
use super::reset_vector::I8042_COMMAND_OFFSET;
use crate::{AddressSpace, DeviceInfo, DeviceKind, Error, PciLayout, Result};

/// SLP_TYP for S5. The AcpiSleep device model powers off on exactly this
/// value (devices::legacy::acpi_sleep::S5_SLEEP_TYPE).
pub const S5_SLEEP_TYPE: u8 = 5;
/// The ACPI ID Linux's virtio-mmio driver matches.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// AML names are four characters: "V" and three hex digits for virtio,
/// "COM" and one digit for serial ports.
const MAX_VIRTIO_DEVICES: usize = 0x1000;
const MAX_SERIAL_PORTS: usize = 9;

/// An edge-triggered, active-high, exclusive interrupt a device consumes.
fn edge_interrupt(gsi: u32) -> Interrupt {
    Interrupt::new(true, true, false, false, gsi)
}

fn config_err(device: &DeviceInfo, what: &str) -> Error {
    Error::Config(format!(
        "{:?} device at {:#x} cannot be described in ACPI: {what}",
        device.kind, device.base
    ))
}

/// A COM port: PNP0501 with its I/O ports and IRQ.
fn serial_device(uid: usize, device: &DeviceInfo) -> Result<Vec<u8>> {
    let port = u16::try_from(device.base)
        .ok()
        .filter(|_| device.space == AddressSpace::Pio)
        .ok_or_else(|| config_err(device, "not a port-I/O address"))?;
    let len = u8::try_from(device.len).map_err(|_| config_err(device, "port range too long"))?;
    let io = IO::new(port, port, 1, len);
    let irq = device.irq.map(edge_interrupt);
    let mut resources: Vec<&dyn Aml> = vec![&io];
    if let Some(irq) = &irq {
        resources.push(irq);
    }
    let crs = ResourceTemplate::new(resources);
    let hid = EISAName::new("PNP0501");
    let mut bytes = Vec::new();
    Device::new(
        Path::new(&format!("COM{}", uid + 1)),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    Ok(bytes)
}

/// The i8042 as a PC keyboard: PNP0303 with its data and command ports,
/// one byte each, and its interrupt. Linux's i8042 driver binds through this
/// ACPI PnP device (i8042_pnp_init); the FADT's 8042 flag only lets it probe
/// the ports blind when no such device exists. With no PNP0F13 mouse
/// device it leaves the aux port alone ("AUX port disabled").
fn keyboard_device(device: &DeviceInfo) -> Result<Vec<u8>> {
    let data = u16::try_from(device.base)
        .ok()
        .filter(|_| device.space == AddressSpace::Pio && device.len > I8042_COMMAND_OFFSET)
        .ok_or_else(|| config_err(device, "not a port-I/O range up to the command port"))?;
    let command = data + I8042_COMMAND_OFFSET as u16;
    let data_io = IO::new(data, data, 1, 1);
    let command_io = IO::new(command, command, 1, 1);
    let irq = device.irq.map(edge_interrupt);
    let mut resources: Vec<&dyn Aml> = vec![&data_io, &command_io];
    if let Some(irq) = &irq {
        resources.push(irq);
    }
    let crs = ResourceTemplate::new(resources);
    let hid = EISAName::new("PNP0303");
    let mut bytes = Vec::new();
    Device::new(
        Path::new("PS2K"),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    Ok(bytes)
}

/// A virtio-mmio transport: LNRO0005 with its registers and interrupt.
fn virtio_mmio_device(uid: usize, device: &DeviceInfo) -> Result<Vec<u8>> {
    let base = u32::try_from(device.base)
        .ok()
        .filter(|_| device.space == AddressSpace::Mmio)
        .ok_or_else(|| config_err(device, "not a 32-bit MMIO address"))?;
    let len = u32::try_from(device.len).map_err(|_| config_err(device, "window too long"))?;
    let gsi = device
        .irq
        .ok_or_else(|| config_err(device, "no interrupt line"))?;
    let memory = Memory32Fixed::new(true, base, len);
    let irq = edge_interrupt(gsi);
    let crs = ResourceTemplate::new(vec![&memory, &irq]);
    let mut bytes = Vec::new();
    Device::new(
        Path::new(&format!("V{uid:03X}")),
        vec![
            &Name::new("_HID".into(), &VIRTIO_MMIO_HID),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    )
    .to_aml_bytes(&mut bytes);
    Ok(bytes)
}

/// The complete DSDT for `devices`. `\_S5_` is declared only when the
/// machine has the sleep registers to act on it, the PCI host bridge only
/// when it has a [`DeviceKind::PciEcam`] (placed by `pci`).
pub fn dsdt(devices: &[DeviceInfo], pci: &PciLayout) -> Result<Vec<u8>> {
    let mut system_bus = Vec::new();
    let mut serial_count = 0;
    let mut virtio_count = 0;
    let mut keyboard = false;
    for device in devices {
        let bytes = match device.kind {
            DeviceKind::Serial if serial_count < MAX_SERIAL_PORTS => {
                serial_count += 1;
                serial_device(serial_count - 1, device)?
            }
            DeviceKind::VirtioMmio if virtio_count < MAX_VIRTIO_DEVICES => {
                virtio_count += 1;
                virtio_mmio_device(virtio_count - 1, device)?
            }
            DeviceKind::I8042 if !keyboard => {
                keyboard = true;
                keyboard_device(device)?
            }
            DeviceKind::Serial | DeviceKind::VirtioMmio | DeviceKind::I8042 => {
                return Err(config_err(device, "too many devices of this kind"))
            }
            DeviceKind::Rtc
            | DeviceKind::AcpiSleep
            | DeviceKind::DebugExit
            | DeviceKind::GicV2mFrame { .. } => continue,
            // Described together by PCI0, below.
            DeviceKind::PciEcam | DeviceKind::PciConfigPorts => continue,
        };
        system_bus.extend_from_slice(&bytes);
    }
    if let Some(host) = PciHost::find(devices, pci) {
        system_bus.extend(host.dsdt_devices()?);
    }

    let mut body = Vec::new();
    if devices.iter().any(|d| d.kind == DeviceKind::AcpiSleep) {
        let s5 = Package::new(vec![&S5_SLEEP_TYPE, &aml::ZERO, &aml::ZERO, &aml::ZERO]);
        Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);
    }
    if !system_bus.is_empty() {
        body.extend(aml::Scope::raw("\\_SB_".into(), system_bus));
    }
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"TANDDSDT", 1);
    table.append_slice(&body);
    Ok(table.as_slice().to_vec())
}
