//! The PCI host bridge in the ACPI tables, read back from guest memory as
//! a guest would: MCFG's allocation, `PCI0`'s identity, `_CRS` and `_PRT`
//! decoded from the DSDT's AML, the ECAM reservation, and none of it
//! without a [`DeviceKind::PciEcam`].

use super::tests::{get, guest, machine, pci_layout, pio, tables, u32_at, u64_at};
use super::*;
use crate::x86_64::aml_reader::{self, eisa_id, Object, Resource, Value};
use crate::x86_64::layout::{PCI_ECAM, PCI_INTX_IRQS, PCI_MMIO32};

fn ecam() -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::PciEcam,
        space: AddressSpace::Mmio,
        base: PCI_ECAM.start,
        len: PCI_ECAM.end - PCI_ECAM.start,
        irq: None,
    }
}

fn config_ports() -> DeviceInfo {
    pio(DeviceKind::PciConfigPorts, 0xcf8, 8, None)
}

/// The usual machine (virtio-mmio devices included) with a host bridge.
fn pci_machine() -> Vec<DeviceInfo> {
    let mut devices = machine();
    devices.extend([ecam(), config_ports()]);
    devices
}

/// The tables for `devices`, with the DSDT's AML decoded.
fn tables_for(devices: &[DeviceInfo]) -> (Vec<(String, Vec<u8>)>, Vec<Object>) {
    let mem = guest();
    let found = tables(
        &mem,
        write_acpi_tables(&mem, 1, devices, &pci_layout()).unwrap(),
    );
    let aml = aml_reader::parse(&get(&found, "DSDT")[36..]);
    (found, aml)
}

fn integer(body: &[Object], name: &str) -> u64 {
    match aml_reader::name(body, name) {
        Some(Value::Integer(value)) => *value,
        other => panic!("{name}: {other:?}"),
    }
}

fn crs(body: &[Object]) -> Vec<Resource> {
    match aml_reader::name(body, "_CRS") {
        Some(Value::Buffer(bytes)) => aml_reader::resources(bytes),
        other => panic!("_CRS: {other:?}"),
    }
}

#[test]
fn mcfg_has_one_allocation_for_bus_0_at_the_ecam_base() {
    let (found, _) = tables_for(&pci_machine());
    let sigs: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
    // `tables` has checked every checksum, MCFG's included.
    assert_eq!(sigs, ["FACP", "APIC", "MCFG", "DSDT"]);
    let mcfg = get(&found, "MCFG");
    assert_eq!(&mcfg[..4], b"MCFG");
    assert_eq!(
        u32_at(mcfg, 4),
        60,
        "header, 8 reserved bytes, one allocation"
    );
    assert_eq!(mcfg.len(), 60);
    assert_eq!(mcfg[8], 1, "revision");
    assert_eq!(&mcfg[10..16], &OEM_ID);
    assert_eq!(u64_at(mcfg, 36), 0, "reserved");
    assert_eq!(u64_at(mcfg, 44), 0xe000_0000, "ECAM base");
    assert_eq!(u16::from_le_bytes([mcfg[52], mcfg[53]]), 0, "segment");
    assert_eq!((mcfg[54], mcfg[55]), (0, 0), "buses 0-0");
    assert_eq!(u32_at(mcfg, 56), 0, "reserved");
}

#[test]
fn pci0_is_a_pcie_root_bridge_for_segment_0_bus_0() {
    let (_, aml) = tables_for(&pci_machine());
    let Some(Object::Scope(scope, system_bus)) =
        aml.iter().find(|o| matches!(o, Object::Scope(..)))
    else {
        panic!("no scope in {aml:?}")
    };
    assert_eq!(scope, "\\_SB_");
    let pci0 = aml_reader::device(system_bus, "PCI0").expect("PCI0 in \\_SB_");
    assert_eq!(integer(pci0, "_HID"), eisa_id("PNP0A08"));
    assert_eq!(integer(pci0, "_CID"), eisa_id("PNP0A03"));
    assert_eq!(eisa_id("PNP0A03"), 0x030a_d041, "the reader's EISA ID");
    assert_eq!(integer(pci0, "_SEG"), 0);
    assert_eq!(integer(pci0, "_BBN"), 0);
    assert_eq!(integer(pci0, "_UID"), 0);
    assert!(aml_reader::name(pci0, "_OSC").is_none());
}

#[test]
fn pci0_crs_has_the_buses_config_ports_and_bar_windows() {
    let (_, aml) = tables_for(&pci_machine());
    let pci0 = aml_reader::device(&aml, "PCI0").unwrap();
    let mmio64 = pci_layout().mmio64;
    assert_eq!(mmio64, (4 << 30)..(8 << 30), "128 MiB: right above 4 GiB");
    let window = |width, type_flags, range: std::ops::Range<u64>| Resource::Address {
        width,
        kind: 0,
        producer: true,
        type_flags,
        min: range.start,
        max: range.end - 1,
        translation: 0,
        len: range.end - range.start,
    };
    assert_eq!(
        crs(pci0),
        [
            Resource::Address {
                width: 16,
                kind: 2,
                producer: true,
                type_flags: 0,
                min: 0,
                max: 0,
                translation: 0,
                len: 1,
            },
            Resource::Io {
                min: 0xcf8,
                max: 0xcf8,
                alignment: 1,
                len: 8
            },
            // Writable, not cacheable; writable, prefetchable.
            window(32, 0b001, PCI_MMIO32),
            window(64, 0b111, mmio64),
        ]
    );
}

#[test]
fn config_ports_only_when_the_machine_has_them() {
    let mut devices = machine();
    devices.push(ecam());
    let (_, aml) = tables_for(&devices);
    let resources = crs(aml_reader::device(&aml, "PCI0").unwrap());
    assert_eq!(resources.len(), 3);
    assert!(!resources.iter().any(|r| matches!(r, Resource::Io { .. })));
}

#[test]
fn prt_routes_every_slot_and_pin_through_the_swizzle() {
    let (_, aml) = tables_for(&pci_machine());
    let pci0 = aml_reader::device(&aml, "PCI0").unwrap();
    let Some(Value::Package(entries)) = aml_reader::name(pci0, "_PRT") else {
        panic!("_PRT is not a package")
    };
    assert_eq!(entries.len(), 128);
    let mut routed = Vec::new();
    for entry in entries {
        let Value::Package(fields) = entry else {
            panic!("entry {entry:?}")
        };
        let [Value::Integer(address), Value::Integer(pin), Value::Integer(source), Value::Integer(gsi)] =
            fields.as_slice()
        else {
            panic!("entry {fields:?} is not four integers")
        };
        assert_eq!(address & 0xffff, 0xffff, "any function");
        assert_eq!(*source, 0, "a GSI, no link device");
        let slot = address >> 16;
        assert!(slot < 32 && *pin < 4, "{address:#x} pin {pin}");
        assert_eq!(
            u64::from(PCI_INTX_IRQS[((slot + pin) % 4) as usize]),
            *gsi,
            "slot {slot} pin {pin}"
        );
        routed.push((slot, *pin));
    }
    routed.sort();
    routed.dedup();
    assert_eq!(routed.len(), 128, "each slot and pin once");
    // The swizzle spreads slot 0's INTA and slot 1's INTD onto one line.
    assert_eq!(PCI_INTX_IRQS[(1 + 3) % 4], PCI_INTX_IRQS[0]);
}

#[test]
fn ecam_is_reserved_by_a_motherboard_resources_device() {
    let (_, aml) = tables_for(&pci_machine());
    let reservation = aml_reader::device(&aml, "ECAM").expect("ECAM device");
    assert_eq!(integer(reservation, "_HID"), eisa_id("PNP0C02"));
    assert_eq!(
        crs(reservation),
        [Resource::Memory32Fixed {
            writable: true,
            base: 0xe000_0000,
            len: 1 << 20
        }]
    );
}

#[test]
fn the_whole_dsdt_still_describes_the_other_devices() {
    let (_, aml) = tables_for(&pci_machine());
    assert_eq!(
        aml_reader::device_names(&aml),
        ["COM1", "PS2K", "V000", "V001", "V002", "PCI0", "ECAM"]
    );
    let com1 = aml_reader::device(&aml, "COM1").unwrap();
    assert_eq!(integer(com1, "_HID"), eisa_id("PNP0501"));
    assert!(crs(com1).contains(&Resource::Interrupt { flags: 3, gsi: 4 }));
}

#[test]
fn nothing_pci_without_an_ecam_device() {
    // Configuration ports alone do not make a host bridge.
    let mut devices = machine();
    devices.push(config_ports());
    let (found, aml) = tables_for(&devices);
    let sigs: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sigs, ["FACP", "APIC", "DSDT"]);
    let names = aml_reader::device_names(&aml);
    assert!(
        !names.iter().any(|n| n == "PCI0" || n == "ECAM"),
        "{names:?}"
    );
}

#[test]
fn a_host_bridge_that_cannot_be_described_is_a_config_error() {
    let mem = guest();
    let check = |devices: &[DeviceInfo], layout: &PciLayout, expected: &str| {
        let err = write_acpi_tables(&mem, 1, devices, layout)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    };
    let layout = pci_layout();
    let mut ragged = ecam();
    ragged.len += 0x1000;
    check(&[ragged], &layout, "whole buses");
    let mut high = ecam();
    high.base = 1 << 32;
    check(&[high], &layout, "not below 4 GiB");
    let mut ports = config_ports();
    ports.space = AddressSpace::Mmio;
    check(&[ecam(), ports], &layout, "configuration ports");
    let mut above = layout.clone();
    above.mmio32 = (4 << 30)..(5 << 30);
    check(&[ecam()], &above, "32-bit BAR window");
    let mut empty = layout.clone();
    empty.mmio64 = empty.mmio64.start..empty.mmio64.start;
    check(&[ecam()], &empty, "64-bit BAR window");
}

#[test]
fn a_larger_ecam_window_covers_more_buses() {
    let mut wide = ecam();
    wide.len = 4 << 20;
    let (found, aml) = tables_for(&[wide]);
    assert_eq!(get(&found, "MCFG")[55], 3, "buses 0-3");
    let resources = crs(aml_reader::device(&aml, "PCI0").unwrap());
    assert!(
        matches!(
            resources[0],
            Resource::Address {
                kind: 2,
                min: 0,
                max: 3,
                len: 4,
                ..
            }
        ),
        "{resources:?}"
    );
}
