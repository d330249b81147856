//! The PCIe host bridge: bus 0 with the bridge itself at 00.0 and the
//! virtio-pci functions in slots 1 and up, reached through the ECAM
//! window ([`PciHost`] on the MMIO bus) and, on x86, the legacy
//! 0xcf8/0xcfc port pair ([`ConfigPorts`] on the port bus). A
//! configuration write to a function is followed by its wiring
//! (BAR0, ioeventfds, MSI routes: [`VirtioFunction::config_written`]).
//!
//! The bridge's ids are 1b36:0008, the generic "PCIe host bridge" QEMU
//! gives its ECAM machines: guests bind nothing to it and apply no
//! quirks, and arm64 and x86 Linux both know it by name.
//!
//! Locking: a port access locks the ports, then the host; the host locks
//! a function only for the configuration access itself, and updates the
//! BAR map after releasing it (see src/pci_bars.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use devices::BusDevice;
use pci::bus::SLOTS;
use pci::{ConfigSpace, EcamAddress, Header, PciBus};

use crate::pci_bars::BarMap;
use crate::pci_function::VirtioFunction;
use crate::vm_wiring::VmWiring;

/// The host bridge's vendor id (see the module doc).
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
/// The host bridge's device id.
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;
/// Class 06/00/00: bridge, host bridge.
const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

/// Bus 0 and how its functions are wired.
pub struct PciHost {
    bus: PciBus,
    functions: BTreeMap<u8, VirtioFunction>,
    bars: Arc<BarMap>,
    vm: Arc<dyn VmWiring>,
}

impl PciHost {
    /// A bus with only the host bridge on it, whose functions' BARs go
    /// on `bars` and ioeventfds on `vm`.
    pub fn new(vm: Arc<dyn VmWiring>, bars: Arc<BarMap>) -> Self {
        let mut bus = PciBus::new();
        let bridge = ConfigSpace::new(Header {
            vendor_id: HOST_BRIDGE_VENDOR,
            device_id: HOST_BRIDGE_DEVICE,
            class_code: HOST_BRIDGE_CLASS,
            ..Header::default()
        });
        bus.add(Box::new(bridge));
        Self {
            bus,
            functions: BTreeMap::new(),
            bars,
            vm,
        }
    }

    /// The slot the next function gets, if one is free.
    pub fn next_slot(&self) -> Option<u8> {
        let slot = self.functions.len() + 1;
        (slot < SLOTS).then_some(slot as u8)
    }

    /// Puts `function` in [`Self::next_slot`].
    pub fn add(&mut self, function: VirtioFunction) -> Result<u8> {
        let Some(slot) = self.bus.add(function.config_function()) else {
            bail!("all {SLOTS} PCI slots are taken");
        };
        self.functions.insert(slot, function);
        Ok(slot)
    }

    /// The function in `slot`, for tests and statistics.
    pub fn function(&self, slot: u8) -> Option<&VirtioFunction> {
        self.functions.get(&slot)
    }

    /// A configuration read.
    pub fn read_config(&self, address: EcamAddress, data: &mut [u8]) {
        self.bus.read(address, data);
    }

    /// A configuration write, and what it changed followed.
    pub fn write_config(&mut self, address: EcamAddress, data: &[u8]) {
        let Some((slot, change)) = self.bus.write(address, data) else {
            return;
        };
        if let Some(function) = self.functions.get_mut(&slot) {
            function.config_written(change, &self.bars, &*self.vm);
        }
    }
}

/// The ECAM window (bus 0's 1 MiB).
impl BusDevice for PciHost {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.read_config(EcamAddress::from_ecam_offset(offset), data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.write_config(EcamAddress::from_ecam_offset(offset), data);
    }
}

/// x86's configuration mechanism #1: the address at 0xcf8 (a dword),
/// the data at 0xcfc..0xcff.
pub struct ConfigPorts {
    address: u32,
    host: Arc<Mutex<PciHost>>,
}

/// Offset of the data ports from 0xcf8.
const DATA: u64 = 4;

impl ConfigPorts {
    /// The ports of `host`.
    pub fn new(host: Arc<Mutex<PciHost>>) -> Self {
        Self { address: 0, host }
    }

    fn host(&self) -> std::sync::MutexGuard<'_, PciHost> {
        self.host.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BusDevice for ConfigPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (DATA.., _) => match EcamAddress::from_cf8(self.address, (offset - DATA) as u8) {
                Some(address) => self.host().read_config(address, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => self.address = u32::from_le_bytes(data.try_into().unwrap()),
            (DATA.., _) => {
                if let Some(address) = EcamAddress::from_cf8(self.address, (offset - DATA) as u8) {
                    self.host().write_config(address, data);
                }
            }
            // 0xcf9 is a PC's reset control register: not modelled.
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "pci_host_tests.rs"]
mod tests;
