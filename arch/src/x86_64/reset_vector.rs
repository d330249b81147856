//! A stand-in for the BIOS reset vector at 0xf000:fff0. On a
//! hardware-reduced ACPI machine without EFI, Linux's reboot falls through
//! to "BIOS" reboot: it drops to real mode and jumps there. Without
//! firmware that would run whatever bytes are in RAM; this stub instead
//! pulses the i8042 reset line, so every reboot (including `panic=` ones)
//! reaches the VMM as a reset request.

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::{AddressSpace, DeviceInfo, DeviceKind, Error, Result};

/// Physical address of the real-mode reset vector (0xf000:0xfff0).
pub const RESET_VECTOR: u64 = 0xf_fff0;
/// The i8042 command port is 4 past its base; 0xfe pulses the reset line.
pub const I8042_COMMAND_OFFSET: u64 = 4;
/// The i8042 command that pulses the reset line.
pub const I8042_RESET_COMMAND: u8 = 0xfe;

/// 16-bit code: `mov al, 0xfe; mov dx, port; out dx, al; 1: hlt; jmp 1b`.
pub fn reset_stub(port: u16) -> [u8; 9] {
    let [lo, hi] = port.to_le_bytes();
    [
        0xb0,
        I8042_RESET_COMMAND,
        0xba,
        lo,
        hi,
        0xee,
        0xf4,
        0xeb,
        0xfd,
    ]
}

/// Writes the stub when the machine has an i8042 to reset through.
pub fn write_reset_vector(mem: &GuestMemoryMmap, devices: &[DeviceInfo]) -> Result<()> {
    let Some(i8042) = devices
        .iter()
        .find(|d| d.kind == DeviceKind::I8042 && d.space == AddressSpace::Pio)
    else {
        return Ok(());
    };
    let port = u16::try_from(i8042.base + I8042_COMMAND_OFFSET)
        .map_err(|_| Error::Config(format!("i8042 at {:#x} is not a port", i8042.base)))?;
    mem.write_slice(&reset_stub(port), GuestAddress(RESET_VECTOR))
        .map_err(|e| Error::GuestMemory(format!("reset vector: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_fits_below_1_mib_and_targets_the_command_port() {
        let stub = reset_stub(0x64);
        assert!(RESET_VECTOR + stub.len() as u64 <= 0x10_0000);
        assert_eq!(&stub[..2], &[0xb0, 0xfe], "mov al, 0xfe");
        assert_eq!(&stub[2..5], &[0xba, 0x64, 0x00], "mov dx, 0x64");
        assert_eq!(stub[5], 0xee, "out dx, al");
        assert_eq!(stub[8] as i8, -3, "jmp back to hlt");
    }

    #[test]
    fn written_only_with_an_i8042() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_reset_vector(&mem, &[]).unwrap();
        let byte: u8 = mem.read_obj(GuestAddress(RESET_VECTOR)).unwrap();
        assert_eq!(byte, 0);
        let i8042 = DeviceInfo {
            kind: DeviceKind::I8042,
            space: AddressSpace::Pio,
            base: 0x60,
            len: 5,
            irq: None,
        };
        write_reset_vector(&mem, &[i8042]).unwrap();
        let mut code = [0u8; 9];
        mem.read_slice(&mut code, GuestAddress(RESET_VECTOR))
            .unwrap();
        assert_eq!(code, reset_stub(0x64));
    }
}
