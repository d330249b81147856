//! A PCI bus: up to 32 single-function devices on bus 0, found by their
//! configuration accesses. Anything else — another bus, a function other
//! than 0, an empty slot — reads as all-ones (vendor id 0xffff: "nothing
//! here") and ignores writes, as on real hardware.

use crate::config::{ConfigSpace, ConfigWrite};
use crate::ecam::EcamAddress;

/// Slots on a bus.
pub const SLOTS: usize = 32;

/// What a bus needs of a function: its configuration space.
pub trait PciFunction: Send {
    /// A configuration read (the access checked by [`ConfigSpace::read`]).
    fn read_config(&self, register: u16, data: &mut [u8]);
    /// A configuration write; the function acts on what it changed.
    fn write_config(&mut self, register: u16, data: &[u8]) -> ConfigWrite;
}

/// A function that is nothing but its configuration space (a host bridge).
impl PciFunction for ConfigSpace {
    fn read_config(&self, register: u16, data: &mut [u8]) {
        self.read(register, data);
    }

    fn write_config(&mut self, register: u16, data: &[u8]) -> ConfigWrite {
        self.write(register, data)
    }
}

/// Bus 0 and its devices.
#[derive(Default)]
pub struct PciBus {
    slots: Vec<Option<Box<dyn PciFunction>>>,
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    /// Puts `function` in the first free slot; returns the slot, or None
    /// when all 32 are taken.
    pub fn add(&mut self, function: Box<dyn PciFunction>) -> Option<u8> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(function);
        Some(slot as u8)
    }

    /// A configuration read at `address`.
    pub fn read(&self, address: EcamAddress, data: &mut [u8]) {
        match self.function(address) {
            Some(function) => function.read_config(address.register, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write at `address`; says what it changed in the
    /// function there (and which slot that is).
    pub fn write(&mut self, address: EcamAddress, data: &[u8]) -> Option<(u8, ConfigWrite)> {
        let slot = address.device;
        let function = self.function_mut(address)?;
        Some((slot, function.write_config(address.register, data)))
    }

    fn function(&self, address: EcamAddress) -> Option<&dyn PciFunction> {
        let present = address.bus == 0 && address.function == 0;
        present
            .then(|| self.slots.get(usize::from(address.device))?.as_deref())
            .flatten()
    }

    fn function_mut(&mut self, address: EcamAddress) -> Option<&mut Box<dyn PciFunction>> {
        if address.bus != 0 || address.function != 0 {
            return None;
        }
        self.slots.get_mut(usize::from(address.device))?.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Header, COMMAND_MEMORY};

    fn host_bridge() -> ConfigSpace {
        ConfigSpace::new(Header {
            vendor_id: 0x1b36,
            device_id: 0x0008,
            class_code: 0x06_0000,
            ..Header::default()
        })
    }

    fn read32(bus: &PciBus, device: u8, function: u8, register: u16) -> u32 {
        let mut data = [0; 4];
        let address = EcamAddress {
            bus: 0,
            device,
            function,
            register,
        };
        bus.read(address, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn devices_answer_in_their_slots_and_empty_ones_read_all_ones() {
        let mut bus = PciBus::new();
        assert_eq!(bus.add(Box::new(host_bridge())), Some(0));
        assert_eq!(read32(&bus, 0, 0, 0), 0x0008_1b36);
        assert_eq!(read32(&bus, 0, 0, 8) >> 8, 0x06_0000);
        assert_eq!(read32(&bus, 1, 0, 0), u32::MAX, "empty slot");
        assert_eq!(
            read32(&bus, 0, 1, 0),
            u32::MAX,
            "function 1 of a single-function device"
        );
        let other_bus = EcamAddress {
            bus: 1,
            device: 0,
            function: 0,
            register: 0,
        };
        let mut data = [0; 4];
        bus.read(other_bus, &mut data);
        assert_eq!(data, [0xff; 4]);
    }

    #[test]
    fn writes_reach_the_function_and_report_changes() {
        let mut bus = PciBus::new();
        bus.add(Box::new(host_bridge()));
        let command = EcamAddress {
            bus: 0,
            device: 0,
            function: 0,
            register: 4,
        };
        let change = bus.write(command, &[COMMAND_MEMORY as u8, 0]);
        assert_eq!(
            change,
            Some((
                0,
                ConfigWrite::Command {
                    old: 0,
                    new: COMMAND_MEMORY
                }
            ))
        );
        assert_eq!(
            bus.write(
                EcamAddress {
                    device: 3,
                    ..command
                },
                &[2, 0]
            ),
            None
        );
        assert_eq!(
            bus.write(
                EcamAddress {
                    function: 2,
                    ..command
                },
                &[2, 0]
            ),
            None
        );
    }

    #[test]
    fn a_full_bus_refuses_a_33rd_device() {
        let mut bus = PciBus::new();
        for slot in 0..32 {
            assert_eq!(bus.add(Box::new(host_bridge())), Some(slot));
        }
        assert_eq!(bus.add(Box::new(host_bridge())), None);
    }
}
