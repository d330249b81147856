//! The PCI host bridge as x86 guests learn of it, through ACPI: the MCFG
//! table (where ECAM configuration space is), and in the DSDT the `PCI0`
//! root bridge (bus range, configuration ports, BAR windows, INTx routing)
//! and an `ECAM` motherboard-resources device reserving the ECAM window.
//! Built only when the machine's devices include a
//! [`DeviceKind::PciEcam`]; the windows and INTx lines come from its
//! [`PciLayout`].

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name,
    PackageBuilder, Path, ResourceTemplate, IO,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::Aml;

use super::acpi::OEM_ID;
use crate::{AddressSpace as Space, DeviceInfo, DeviceKind, Error, PciLayout, Result};

/// ECAM gives each bus 1 MiB: 32 devices × 8 functions × 4 KiB.
const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Slots on a PCI bus; `_PRT` routes all of them.
const SLOTS: u32 = 32;
/// INTA# to INTD#.
const PINS: u32 = 4;
/// tandem has one PCI segment.
const SEGMENT: u16 = 0;

/// The PCI host bridge of a machine: its ECAM window, its legacy
/// configuration ports if it has them, and where its BARs and INTx lines go.
pub struct PciHost<'a> {
    ecam: &'a DeviceInfo,
    config_ports: Option<&'a DeviceInfo>,
    layout: &'a PciLayout,
}

fn config_err(what: String) -> Error {
    Error::Config(format!(
        "PCI host bridge cannot be described in ACPI: {what}"
    ))
}

impl<'a> PciHost<'a> {
    /// The host bridge among `devices`, if there is a [`DeviceKind::PciEcam`].
    pub fn find(devices: &'a [DeviceInfo], layout: &'a PciLayout) -> Option<Self> {
        let ecam = devices.iter().find(|d| d.kind == DeviceKind::PciEcam)?;
        let config_ports = devices
            .iter()
            .find(|d| d.kind == DeviceKind::PciConfigPorts);
        Some(PciHost {
            ecam,
            config_ports,
            layout,
        })
    }

    /// The last bus the ECAM window covers (buses start at 0).
    fn last_bus(&self) -> Result<u8> {
        let len = self.ecam.len;
        let buses = len / ECAM_BUS_SIZE;
        if self.ecam.space != Space::Mmio
            || !len.is_multiple_of(ECAM_BUS_SIZE)
            || !(1..=256).contains(&buses)
        {
            return Err(config_err(format!(
                "ECAM window {:#x}+{len:#x} is not 1 to 256 whole buses of MMIO",
                self.ecam.base
            )));
        }
        Ok((buses - 1) as u8)
    }

    /// The ECAM window as a 32-bit base and length, for `Memory32Fixed`.
    /// Linux would also ignore an MCFG allocation above 4 GiB unless DMI
    /// dates the firmware 2010 or later, and tandem has no DMI.
    fn ecam_below_4g(&self) -> Result<(u32, u32)> {
        let end = self.ecam.base.checked_add(self.ecam.len);
        match (u32::try_from(self.ecam.base), u32::try_from(self.ecam.len)) {
            (Ok(base), Ok(len)) if end.is_some_and(|end| end <= 1 << 32) => Ok((base, len)),
            _ => Err(config_err(format!(
                "ECAM window at {:#x} is not below 4 GiB",
                self.ecam.base
            ))),
        }
    }

    /// The MCFG table: one allocation, segment 0, from bus 0 to the last
    /// bus the window covers.
    pub fn mcfg(&self) -> Result<Vec<u8>> {
        let mut mcfg = MCFG::new(OEM_ID, *b"TANDMCFG", 1);
        mcfg.add_ecam(self.ecam.base, SEGMENT, 0, self.last_bus()?);
        let mut bytes = Vec::new();
        mcfg.to_aml_bytes(&mut bytes);
        Ok(bytes)
    }

    /// `PCI0` and the `ECAM` reservation, to go in `\_SB_`.
    pub fn dsdt_devices(&self) -> Result<Vec<u8>> {
        let mut bytes = self.root_bridge()?;
        bytes.extend(self.ecam_reservation()?);
        Ok(bytes)
    }

    /// `PCI0`: a PCIe root bridge (PNP0A08, compatible with PCI's PNP0A03)
    /// for segment 0 from bus 0. No `_OSC`: the guest then keeps its hands
    /// off native hot-plug, AER and PME, none of which tandem has.
    ///
    /// Its `_CRS` holds the buses it decodes, the configuration ports it
    /// consumes, and the memory windows it forwards to devices (producer
    /// ranges: Linux assigns BARs inside them). There is no I/O window:
    /// virtio-pci places nothing in port space.
    fn root_bridge(&self) -> Result<Vec<u8>> {
        let (mmio32_first, mmio32_last) = self.mmio32_window()?;
        let mmio64 = &self.layout.mmio64;
        if mmio64.start >= mmio64.end {
            return Err(config_err(format!(
                "64-bit BAR window {mmio64:#x?} is empty"
            )));
        }
        let buses = AddressSpace::new_bus_number(0u16, u16::from(self.last_bus()?));
        let config_ports = self.config_ports()?;
        let mmio32 = AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            mmio32_first,
            mmio32_last,
            None,
        );
        let mmio64 = AddressSpace::new_memory(
            AddressSpaceCacheable::PreFetchable,
            true,
            mmio64.start,
            mmio64.end - 1,
            None,
        );
        let mut resources: Vec<&dyn Aml> = vec![&buses];
        if let Some(ports) = &config_ports {
            resources.push(ports);
        }
        resources.extend([&mmio32 as &dyn Aml, &mmio64]);
        let crs = ResourceTemplate::new(resources);

        let hid = EISAName::new("PNP0A08");
        let cid = EISAName::new("PNP0A03");
        let prt = self.routing();
        let mut bytes = Vec::new();
        Device::new(
            Path::new("PCI0"),
            vec![
                &Name::new("_HID".into(), &hid),
                &Name::new("_CID".into(), &cid),
                &Name::new("_SEG".into(), &aml::ZERO),
                &Name::new("_BBN".into(), &aml::ZERO),
                &Name::new("_UID".into(), &aml::ZERO),
                &Name::new("_CRS".into(), &crs),
                &Name::new("_PRT".into(), &prt),
            ],
        )
        .to_aml_bytes(&mut bytes);
        Ok(bytes)
    }

    /// The 32-bit BAR window's first and last address.
    fn mmio32_window(&self) -> Result<(u32, u32)> {
        let window = &self.layout.mmio32;
        let first = u32::try_from(window.start).ok();
        let last = u32::try_from(window.end.wrapping_sub(1)).ok();
        match (first, last) {
            (Some(first), Some(last)) if window.start < window.end => Ok((first, last)),
            _ => Err(config_err(format!(
                "32-bit BAR window {window:#x?} is empty or above 4 GiB"
            ))),
        }
    }

    /// The legacy configuration ports as an I/O descriptor, if the machine
    /// has them.
    fn config_ports(&self) -> Result<Option<IO>> {
        let Some(ports) = self.config_ports else {
            return Ok(None);
        };
        let port = u16::try_from(ports.base)
            .ok()
            .filter(|_| ports.space == Space::Pio);
        match (port, u8::try_from(ports.len)) {
            (Some(port), Ok(len)) => Ok(Some(IO::new(port, port, 1, len))),
            _ => Err(config_err(format!(
                "configuration ports {:#x}+{:#x} are not a short port-I/O range",
                ports.base, ports.len
            ))),
        }
    }

    /// `_PRT`: for every slot and pin, the GSI its INTx raises after the
    /// swizzle (slot `s`, pin `p` → `intx_irqs[(s + p) % 4]`). Entries are
    /// `{slot << 16 | 0xffff (any function), pin, 0, GSI}`: a source of 0
    /// names a GSI directly, with no link device. Linux takes such a GSI as
    /// level-triggered, active low.
    fn routing(&self) -> PackageBuilder {
        let mut prt = PackageBuilder::new();
        for slot in 0..SLOTS {
            for pin in 0..PINS {
                let address = (slot << 16) | 0xffff;
                let gsi = self.layout.intx_irqs[((slot + pin) % PINS) as usize];
                let mut entry = PackageBuilder::new();
                entry.add_element(&address);
                entry.add_element(&(pin as u8));
                entry.add_element(&aml::ZERO);
                entry.add_element(&gsi);
                prt.add_element(&entry);
            }
        }
        prt
    }

    /// A motherboard-resources device (PNP0C02) claiming the ECAM window.
    /// Linux trusts an MCFG window only if firmware reserved it: once ACPI
    /// is up it looks for it in PNP0C01/PNP0C02 `_CRS` (recent kernels no
    /// longer fall back to e820 there), before that (with working 0xcf8
    /// ports and no DMI date from 2016 on) in e820, which
    /// `layout::e820_map` covers. Both, so neither check drops ECAM.
    fn ecam_reservation(&self) -> Result<Vec<u8>> {
        let (base, len) = self.ecam_below_4g()?;
        let hid = EISAName::new("PNP0C02");
        let memory = Memory32Fixed::new(true, base, len);
        let crs = ResourceTemplate::new(vec![&memory]);
        let mut bytes = Vec::new();
        Device::new(
            Path::new("ECAM"),
            vec![
                &Name::new("_HID".into(), &hid),
                &Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut bytes);
        Ok(bytes)
    }
}
