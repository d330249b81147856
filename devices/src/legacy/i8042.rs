//! A minimal i8042 keyboard controller: just enough for Linux to reset the
//! machine through it. The status register always reads 0 (buffers empty),
//! so the guest's wait-for-ready loops finish, and the "pulse reset line"
//! command ends the run.

use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal};

/// Offset of the data port (0x60) from the device base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (0x64) from the device base.
pub const COMMAND_OFFSET: u64 = 4;
/// Bytes the device decodes from its base (0x60..=0x64).
pub const I8042_LEN: u64 = 5;
/// Command pulsing the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 reset line, reporting resets through an [`ExitSignal`].
pub struct I8042 {
    exit: Arc<ExitSignal>,
}

impl I8042 {
    /// A controller that raises [`ExitReason::Reset`] on `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // No keyboard data, input and output buffers empty.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (COMMAND_OFFSET, [CMD_RESET_CPU]) => {
                log::info!("i8042: guest pulsed the reset line");
                self.exit.raise(ExitReason::Reset);
            }
            _ => log::debug!("i8042: ignored write {data:x?} at {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i8042() -> (I8042, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        (I8042::new(exit.clone()), exit)
    }

    #[test]
    fn reset_command_raises_reset() {
        let (mut dev, exit) = i8042();
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
        assert_eq!(exit.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn other_writes_do_nothing() {
        let (mut dev, exit) = i8042();
        dev.write(COMMAND_OFFSET, &[0x20]); // read controller config
        dev.write(COMMAND_OFFSET, &[0xad]); // disable keyboard
        dev.write(DATA_OFFSET, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
        dev.write(COMMAND_OFFSET, &[]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn status_and_data_read_as_empty() {
        let (mut dev, _) = i8042();
        for offset in [DATA_OFFSET, COMMAND_OFFSET] {
            let mut data = [0xff; 2];
            dev.read(offset, &mut data);
            assert_eq!(data, [0, 0]);
        }
    }
}
