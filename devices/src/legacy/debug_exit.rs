//! An isa-debug-exit style port: a guest write of `v` ends the run with
//! process exit status `(v << 1) | 1`, so test kernels (kvm-unit-tests)
//! report pass or fail without a power-off path. The write at offset 0 of
//! 1, 2 or 4 bytes counts; anything else is ignored. Reads return zero.

use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal};

/// Bytes the device decodes: one 32-bit port.
pub const DEBUG_EXIT_LEN: u64 = 4;

/// The exit port, reporting the value written through an [`ExitSignal`].
pub struct DebugExit {
    exit: Arc<ExitSignal>,
}

impl DebugExit {
    /// A port that raises [`ExitReason::DebugExit`] on `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || !matches!(data.len(), 1 | 2 | 4) {
            log::debug!("debug-exit: ignored write {data:x?} at {offset:#x}");
            return;
        }
        let mut bytes = [0u8; 4];
        bytes[..data.len()].copy_from_slice(data);
        self.exit
            .raise(ExitReason::DebugExit(u32::from_le_bytes(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> (DebugExit, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        (DebugExit::new(exit.clone()), exit)
    }

    #[test]
    fn writes_of_each_width_end_the_run_with_their_value() {
        for (data, value) in [
            (&[0x05][..], 5),
            (&[0x34, 0x12][..], 0x1234),
            (&[0x78, 0x56, 0x34, 0x12][..], 0x1234_5678),
        ] {
            let (mut dev, exit) = port();
            dev.write(0, data);
            assert_eq!(exit.reason(), Some(ExitReason::DebugExit(value)));
        }
    }

    #[test]
    fn other_offsets_and_widths_are_ignored() {
        let (mut dev, exit) = port();
        dev.write(1, &[1]);
        dev.write(0, &[1, 2, 3]);
        dev.write(0, &[]);
        assert_eq!(exit.reason(), None);
        let mut data = [0xff; 4];
        dev.read(0, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn exit_status_is_the_value_shifted_with_the_low_bit_set() {
        assert_eq!(ExitReason::DebugExit(0).exit_status(), Some(1));
        assert_eq!(ExitReason::DebugExit(1).exit_status(), Some(3));
        assert_eq!(ExitReason::DebugExit(0x3f).exit_status(), Some(0x7f));
        // The shell sees the low 8 bits, as with QEMU's isa-debug-exit.
        assert_eq!(ExitReason::DebugExit(0x80).exit_status(), Some(1));
        assert_eq!(ExitReason::DebugExit(u32::MAX).exit_status(), Some(0xff));
        assert_eq!(ExitReason::PowerOff.exit_status(), None);
    }
}
