//! ACPI tables for a hardware-reduced PC: RSDP → XSDT → FADT (sleep and
//! reset registers, IA-PC boot flags, DSDT pointer), MADT (one local
//! APIC per vCPU, one IOAPIC) and, with a PCI host bridge, MCFG
//! (`pci_tables`), written into the BIOS area at [`ACPI_START`] which the
//! e820 map reserves.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::dsdt::dsdt;
use super::layout::{ACPI_START, IOAPIC_ADDR, LAPIC_ADDR};
use super::pci_tables::PciHost;
use super::reset_vector::{I8042_COMMAND_OFFSET, I8042_RESET_COMMAND, RESET_VECTOR};
use crate::{AddressSpace, DeviceInfo, DeviceKind, Error, PciLayout, Result};

/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"TANDEM";
/// IA-PC boot architecture flags: no VGA (bit 2), no CMOS RTC (bit 5).
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);
/// IA-PC boot architecture flag: an 8042 at ports 0x60 and 0x64. Linux
/// (acpi_parse_fadt) marks the i8042 firmware-absent without it; that only
/// matters when the DSDT has no PNP0303 device (or `i8042.nopnp`), and then
/// decides whether the driver probes the ports blind.
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
/// Tables start on 16-byte boundaries.
const TABLE_ALIGN: u64 = 16;

fn io_register(port: u64) -> GAS {
    GAS::new(GasSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

/// The first port-I/O device of `kind`.
fn pio_device(devices: &[DeviceInfo], kind: DeviceKind) -> Option<&DeviceInfo> {
    devices
        .iter()
        .find(|d| d.kind == kind && d.space == AddressSpace::Pio)
}

fn fadt(dsdt_addr: u64, devices: &[DeviceInfo]) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"TANDFACP", 1)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt_addr);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    if let Some(sleep) = pio_device(devices, DeviceKind::AcpiSleep) {
        fadt.sleep_control_reg = io_register(sleep.base);
        fadt.sleep_status_reg = io_register(sleep.base + 1);
    }
    if let Some(i8042) = pio_device(devices, DeviceKind::I8042) {
        fadt.iapc_boot_arch = (IAPC_BOOT_ARCH | IAPC_BOOT_ARCH_8042).into();
        fadt = fadt.flag(Flags::ResetRegSup);
        fadt.reset_reg = io_register(i8042.base + I8042_COMMAND_OFFSET);
        fadt.reset_value = I8042_RESET_COMMAND;
    }
    to_bytes(&fadt.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"TANDAPIC",
        1,
        LocalInterruptController::Address(LAPIC_ADDR as u32),
    );
    for id in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR as u32, 0));
    to_bytes(&madt)
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// Appends tables to guest memory from [`ACPI_START`] up to the reset
/// vector.
struct TableWriter<'a> {
    mem: &'a GuestMemoryMmap,
    next: u64,
}

impl TableWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<u64> {
        let addr = self.next.next_multiple_of(TABLE_ALIGN);
        let end = addr + bytes.len() as u64;
        if end > RESET_VECTOR {
            return Err(Error::Config(format!(
                "ACPI tables need {} bytes more than the {} KiB BIOS area holds: too many devices",
                end - RESET_VECTOR,
                (RESET_VECTOR - ACPI_START) >> 10
            )));
        }
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|e| Error::GuestMemory(format!("ACPI table at {addr:#x}: {e}")))?;
        self.next = end;
        Ok(addr)
    }
}

/// Writes all tables for `devices` and returns the RSDP's address. `pci`
/// places the host bridge's windows when `devices` has one.
pub fn write_acpi_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &[DeviceInfo],
    pci: &PciLayout,
) -> Result<u64> {
    let mut writer = TableWriter {
        mem,
        next: ACPI_START + Rsdp::len() as u64,
    };
    let dsdt_addr = writer.write(&dsdt(devices, pci)?)?;
    let fadt_addr = writer.write(&fadt(dsdt_addr, devices))?;
    let madt_addr = writer.write(&madt(vcpus))?;
    let mut xsdt = XSDT::new(OEM_ID, *b"TANDXSDT", 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if let Some(host) = PciHost::find(devices, pci) {
        xsdt.add_entry(writer.write(&host.mcfg()?)?);
    }
    let xsdt_addr = writer.write(&to_bytes(&xsdt))?;
    mem.write_slice(
        &to_bytes(&Rsdp::new(OEM_ID, xsdt_addr)),
        GuestAddress(ACPI_START),
    )
    .map_err(|e| Error::GuestMemory(format!("RSDP: {e}")))?;
    Ok(ACPI_START)
}

#[cfg(test)]
mod pci_tests;
#[cfg(test)]
mod tests;
