//! What a snapshot keeps of the i8042 ([`I8042State`]): the command byte,
//! the keyboard's scanning and scancode set, and the bytes waiting to be
//! read. A command waiting for its parameter byte is not kept: the
//! restored controller takes the next write as a new command, as after a
//! lost byte on real hardware.

use serde::{Deserialize, Serialize};

use super::{I8042, OUTPUT_CAPACITY};

/// The i8042's saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// The controller's command byte (interrupts, translation, disables).
    pub command_byte: u8,
    /// Replies and scancodes not read yet, oldest first.
    pub output: Vec<u8>,
    /// What the data port reads when nothing waits.
    pub last_read: u8,
    /// Whether the keyboard sends scancodes.
    pub kbd_scanning: bool,
    /// The keyboard's scancode set (1, 2 or 3).
    pub kbd_scancode_set: u8,
}

impl I8042 {
    /// The state to save; the VM is paused.
    pub fn state(&self) -> I8042State {
        I8042State {
            command_byte: self.command_byte,
            output: self.output.iter().copied().collect(),
            last_read: self.last_read,
            kbd_scanning: self.kbd_scanning,
            kbd_scancode_set: self.kbd_scancode_set,
        }
    }

    /// Takes the state [`Self::state`] saved, refusing one no controller
    /// could be in.
    pub fn restore(&mut self, state: &I8042State) -> Result<(), String> {
        if state.output.len() > OUTPUT_CAPACITY {
            return Err(format!(
                "i8042: {} bytes waiting, the buffer holds {OUTPUT_CAPACITY}",
                state.output.len()
            ));
        }
        if !(1..=3).contains(&state.kbd_scancode_set) {
            return Err(format!("i8042: scancode set {}", state.kbd_scancode_set));
        }
        self.command_byte = state.command_byte;
        self.output = state.output.iter().copied().collect();
        self.last_read = state.last_read;
        self.kbd_scanning = state.kbd_scanning;
        self.kbd_scancode_set = state.kbd_scancode_set;
        self.last_write_was_command = false;
        self.param = None;
        self.kbd_param = None;
        Ok(())
    }
}
