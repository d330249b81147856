//! Decodes the tables back out of guest memory the way a guest's ACPI
//! code would, and checks what Linux relies on.

use super::*;
use crate::x86_64::dsdt::VIRTIO_MMIO_HID;

pub(super) fn pio(kind: DeviceKind, base: u64, len: u64, irq: Option<u32>) -> DeviceInfo {
    DeviceInfo {
        kind,
        space: AddressSpace::Pio,
        base,
        len,
        irq,
    }
}

pub(super) fn virtio(base: u64, irq: Option<u32>) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::VirtioMmio,
        space: AddressSpace::Mmio,
        base,
        len: 0x1000,
        irq,
    }
}

pub(super) fn machine() -> Vec<DeviceInfo> {
    vec![
        pio(DeviceKind::Serial, 0x3f8, 8, Some(4)),
        pio(DeviceKind::I8042, 0x60, 5, Some(1)),
        pio(DeviceKind::AcpiSleep, 0x600, 2, None),
        virtio(0xd000_0000, Some(5)),
        virtio(0xd000_1000, Some(6)),
        virtio(0xd000_2000, Some(7)),
    ]
}

/// The PCI windows of a 128 MiB machine.
pub(super) fn pci_layout() -> PciLayout {
    crate::x86_64::layout::memory_layout(128 << 20).pci
}

pub(super) fn guest() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

pub(super) fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

pub(super) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

pub(super) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Reads a whole table at `addr`, checking its checksum and that it lies
/// in the reserved BIOS area.
pub(super) fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let len = u32_at(&read(mem, addr, 8), 4) as usize;
    assert!(
        addr >= ACPI_START && addr + len as u64 <= RESET_VECTOR,
        "{addr:#x}+{len}"
    );
    let bytes = read(mem, addr, len);
    assert_eq!(
        sum(&bytes),
        0,
        "{} checksum",
        String::from_utf8_lossy(&bytes[..4])
    );
    bytes
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The tables reachable from the RSDP, by signature.
pub(super) fn tables(mem: &GuestMemoryMmap, rsdp_addr: u64) -> Vec<(String, Vec<u8>)> {
    let rsdp = read(mem, rsdp_addr, 36);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2, "revision 2: has an XSDT");
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(&rsdp), 0, "extended checksum");
    assert_eq!(u32_at(&rsdp, 20), 36, "length");
    let xsdt = table(mem, u64_at(&rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    let mut found: Vec<(String, Vec<u8>)> = (36..xsdt.len())
        .step_by(8)
        .map(|offset| {
            let t = table(mem, u64_at(&xsdt, offset));
            (String::from_utf8_lossy(&t[..4]).into_owned(), t)
        })
        .collect();
    let fadt = &found.iter().find(|(sig, _)| sig == "FACP").expect("FADT").1;
    let dsdt = table(mem, u64_at(fadt, 140));
    found.push(("DSDT".into(), dsdt));
    found
}

pub(super) fn get<'a>(tables: &'a [(String, Vec<u8>)], sig: &str) -> &'a [u8] {
    &tables.iter().find(|(s, _)| s == sig).unwrap().1
}

#[test]
fn rsdp_and_xsdt_reach_fadt_and_madt() {
    let mem = guest();
    let rsdp = write_acpi_tables(&mem, 2, &machine(), &pci_layout()).unwrap();
    assert_eq!(rsdp, ACPI_START);
    let found = tables(&mem, rsdp);
    let sigs: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sigs, ["FACP", "APIC", "DSDT"]);
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let mem = guest();
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 1, &machine(), &pci_layout()).unwrap(),
    );
    let fadt = get(&found, "FACP");
    assert_eq!(fadt.len(), 276);
    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    // GAS: space 1 (I/O), 8 bits wide, offset 0, byte access, address.
    let gas = |offset: usize| {
        (
            fadt[offset],
            fadt[offset + 1],
            fadt[offset + 3],
            u64_at(fadt, offset + 4),
        )
    };
    assert_eq!(gas(244), (1, 8, 1, 0x600), "sleep control");
    assert_eq!(gas(256), (1, 8, 1, 0x601), "sleep status");
    assert_eq!(gas(116), (1, 8, 1, 0x64), "reset register");
    assert_eq!(fadt[128], 0xfe, "reset value");
    let iapc_boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(iapc_boot_arch, IAPC_BOOT_ARCH | IAPC_BOOT_ARCH_8042);
    assert_eq!(iapc_boot_arch & 2, 2, "8042 present");
}

#[test]
fn madt_has_one_enabled_lapic_per_vcpu_and_an_ioapic() {
    let mem = guest();
    let vcpus = 5;
    let found = tables(
        &mem,
        write_acpi_tables(&mem, vcpus, &machine(), &pci_layout()).unwrap(),
    );
    let madt = get(&found, "APIC");
    assert_eq!(u32_at(madt, 36), LAPIC_ADDR as u32);
    let (mut lapic_ids, mut ioapics) = (vec![], vec![]);
    let mut offset = 44;
    while offset < madt.len() {
        let (kind, len) = (madt[offset], usize::from(madt[offset + 1]));
        match kind {
            0 => {
                assert_eq!(u32_at(madt, offset + 4) & 1, 1, "enabled");
                lapic_ids.push(madt[offset + 3]);
            }
            1 => ioapics.push((
                madt[offset + 2],
                u32_at(madt, offset + 4),
                u32_at(madt, offset + 8),
            )),
            other => panic!("unexpected MADT entry type {other}"),
        }
        offset += len;
    }
    assert_eq!(offset, madt.len());
    assert_eq!(lapic_ids, (0..vcpus).collect::<Vec<_>>());
    assert_eq!(ioapics, [(0, IOAPIC_ADDR as u32, 0)]);
}

#[test]
fn dsdt_describes_serial_virtio_and_s5() {
    let mem = guest();
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 1, &machine(), &pci_layout()).unwrap(),
    );
    let dsdt = get(&found, "DSDT");
    assert!(contains(dsdt, b"_S5_\x12"), "\\_S5_ package");
    let s5 = dsdt.windows(5).position(|w| w == b"_S5_\x12").unwrap();
    assert!(contains(&dsdt[s5..s5 + 12], &[0x0a, 5]), "SLP_TYP 5");
    assert!(contains(dsdt, b"COM1"));
    // IO(Decode16, 0x3f8, 0x3f8, 1, 8) and Interrupt(consumer, edge, high, exclusive) 4.
    assert!(contains(
        dsdt,
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
    ));
    assert!(contains(dsdt, &[0x89, 0x06, 0x00, 0x03, 0x01, 4, 0, 0, 0]));
    let hid_count = dsdt
        .windows(VIRTIO_MMIO_HID.len())
        .filter(|w| *w == VIRTIO_MMIO_HID.as_bytes())
        .count();
    assert_eq!(hid_count, 3);
    for (i, d) in machine()
        .iter()
        .filter(|d| d.kind == DeviceKind::VirtioMmio)
        .enumerate()
    {
        let mut memory32 = vec![0x86, 0x09, 0x00, 0x01];
        memory32.extend_from_slice(&(d.base as u32).to_le_bytes());
        memory32.extend_from_slice(&(d.len as u32).to_le_bytes());
        assert!(contains(dsdt, &memory32), "registers of device {i}");
        let mut irq = vec![0x89, 0x06, 0x00, 0x03, 0x01];
        irq.extend_from_slice(&d.irq.unwrap().to_le_bytes());
        assert!(contains(dsdt, &irq), "interrupt of device {i}");
        assert!(contains(dsdt, format!("V{i:03X}").as_bytes()));
    }
}

#[test]
fn dsdt_describes_the_i8042_as_a_pnp0303_keyboard() {
    let mem = guest();
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 1, &machine(), &pci_layout()).unwrap(),
    );
    let dsdt = get(&found, "DSDT");
    let device = dsdt.windows(4).position(|w| w == b"PS2K").expect("PS2K");
    // The device's body up to the next device (COM1 precedes it).
    let body = &dsdt[device..];
    let body = &body[..body
        .windows(2)
        .position(|w| w == [0x5b, 0x82])
        .unwrap_or(body.len())];
    // _HID EISAID("PNP0303"): a DWord, "PNP" packed into 0x41d0, then 0x0303.
    assert!(contains(body, b"_HID\x0c\x41\xd0\x03\x03"));
    // IO(Decode16, 0x60, 0x60, 1, 1), IO(Decode16, 0x64, 0x64, 1, 1): one
    // byte each, as i8042_pnp_kbd_probe requires, then interrupt 1, edge.
    assert!(contains(
        body,
        &[0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01]
    ));
    assert!(contains(
        body,
        &[0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01]
    ));
    assert!(contains(body, &[0x89, 0x06, 0x00, 0x03, 0x01, 1, 0, 0, 0]));
    assert_eq!(dsdt.windows(4).filter(|w| *w == b"PS2K").count(), 1);
}

#[test]
fn machines_without_sleep_or_reset_registers() {
    let mem = guest();
    let devices = [pio(DeviceKind::Serial, 0x3f8, 8, Some(4))];
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 1, &devices, &pci_layout()).unwrap(),
    );
    let fadt = get(&found, "FACP");
    assert_eq!(u64_at(fadt, 248), 0, "no sleep control register");
    assert_eq!(u32_at(fadt, 112) & (1 << 10), 0, "no reset register");
    let iapc_boot_arch = u16::from_le_bytes([fadt[109], fadt[110]]);
    assert_eq!(iapc_boot_arch, IAPC_BOOT_ARCH, "no 8042");
    assert!(!contains(get(&found, "DSDT"), b"_S5_"));
    assert!(!contains(get(&found, "DSDT"), b"PNP0303"));
    assert!(!contains(get(&found, "DSDT"), b"PS2K"));
}

#[test]
fn bad_devices_are_config_errors() {
    let mem = guest();
    let no_irq = [virtio(0xd000_0000, None)];
    let high = [virtio(1 << 33, Some(5))];
    let two_i8042 = [
        pio(DeviceKind::I8042, 0x60, 5, Some(1)),
        pio(DeviceKind::I8042, 0x160, 5, Some(1)),
    ];
    let short_i8042 = [pio(DeviceKind::I8042, 0x60, 1, Some(1))];
    for devices in [&no_irq[..], &high[..], &two_i8042[..], &short_i8042[..]] {
        let err = write_acpi_tables(&mem, 1, devices, &pci_layout()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

#[test]
fn many_devices_still_fit_the_bios_area() {
    let mem = guest();
    let devices: Vec<DeviceInfo> = (0..19u32)
        .map(|i| {
            let base = 0xd000_0000 + u64::from(i) * 0x1000;
            virtio(base, Some(5 + i))
        })
        .collect();
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 254, &devices, &pci_layout()).unwrap(),
    );
    assert_eq!(found.len(), 3);
}
