//! Where a configuration access goes: ECAM (PCIe's memory-mapped
//! configuration window, 4 KiB per function) and the legacy x86 ports
//! 0xCF8 (address) / 0xCFC..0xCFF (data).

/// One function's register, as an access names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
    /// Register offset in the function's space, 0..4096.
    pub register: u16,
}

impl EcamAddress {
    /// The address of byte `offset` of an ECAM window (bus 0 at its base).
    pub fn from_ecam_offset(offset: u64) -> Self {
        Self {
            bus: (offset >> 20) as u8,
            device: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 0x7) as u8,
            register: (offset & 0xfff) as u16,
        }
    }

    /// The address a data-port access selects: `cf8` is what the guest
    /// last wrote to 0xCF8, `port_offset` which of 0xCFC..0xCFF it used.
    /// None when the enable bit is clear (the access goes nowhere).
    pub fn from_cf8(cf8: u32, port_offset: u8) -> Option<Self> {
        if cf8 & (1 << 31) == 0 {
            return None;
        }
        Some(Self {
            bus: (cf8 >> 16) as u8,
            device: ((cf8 >> 11) & 0x1f) as u8,
            function: ((cf8 >> 8) & 0x7) as u8,
            register: (cf8 & 0xfc) as u16 + u16::from(port_offset & 3),
        })
    }

    /// Where this register sits in an ECAM window.
    pub fn ecam_offset(self) -> u64 {
        u64::from(self.bus) << 20
            | u64::from(self.device) << 15
            | u64::from(self.function) << 12
            | u64::from(self.register)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecam_offsets_decode_and_encode_back() {
        let address = EcamAddress::from_ecam_offset(0x0012_b0fc);
        assert_eq!(
            address,
            EcamAddress {
                bus: 1,
                device: 5,
                function: 3,
                register: 0xfc
            }
        );
        assert_eq!(address.ecam_offset(), 0x0012_b0fc);
        for offset in [0, 0xfff, 0x1000, 0x7fff, 0x8000, 0xff_ffff, 0xfff_ffff] {
            assert_eq!(EcamAddress::from_ecam_offset(offset).ecam_offset(), offset);
        }
    }

    #[test]
    fn legacy_ports_need_the_enable_bit_and_add_the_byte_lane() {
        assert_eq!(EcamAddress::from_cf8(0x0000_2810, 0), None);
        let address = EcamAddress::from_cf8(0x8000_2813, 2).unwrap();
        assert_eq!(
            address,
            EcamAddress {
                bus: 0,
                device: 5,
                function: 0,
                register: 0x12
            }
        );
        let address = EcamAddress::from_cf8(0x8001_0f3c, 1).unwrap();
        assert_eq!(
            (
                address.bus,
                address.device,
                address.function,
                address.register
            ),
            (1, 1, 7, 0x3d)
        );
    }
}
