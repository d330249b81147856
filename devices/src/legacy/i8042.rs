//! An i8042 keyboard controller with a PS/2 keyboard on its first port and
//! nothing on the second: enough for Linux's i8042 and atkbd drivers to
//! probe and bind a keyboard, so that the VMM can type Ctrl+Alt+Del
//! ([`I8042::send_ctrl_alt_del`]). The "pulse reset line" command (and an
//! output-port write clearing bit 0) ends the run as a reset.
//!
//! Writes are handled at once, so the input buffer is never full. Replies
//! wait in a bounded output buffer; each byte that becomes readable raises
//! IRQ 1 (an edge) while the command byte enables the keyboard interrupt.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal, IrqTrigger, LogLimit};

/// Offset of the data port (0x60) from the device base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (0x64) from the device base.
pub const COMMAND_OFFSET: u64 = 4;
/// Bytes the device decodes from its base (0x60..=0x64).
pub const I8042_LEN: u64 = 5;
/// Bytes the output buffer holds; later ones are dropped and counted.
pub const OUTPUT_CAPACITY: usize = 16;

// Status register. IBF (bit 1) and AUX OBF (bit 5) always read 0; bit 2
// mirrors the command byte's SYS flag; bit 3 says the last write went to
// the command port; bit 4 says the keyboard is not inhibited (Linux warns
// "Keylock active" otherwise).
const STS_OBF: u8 = 0x01;
const STS_CMD: u8 = 0x08;
const STS_UNLOCKED: u8 = 0x10;
// Command byte ("CTR" in Linux).
const CB_KBD_INT: u8 = 0x01;
const CB_SYS: u8 = 0x04;
const CB_KBD_DISABLED: u8 = 0x10;
const CB_AUX_DISABLED: u8 = 0x20;
const CB_TRANSLATE: u8 = 0x40;
/// What firmware leaves: POST passed, translation on, both ports disabled.
const INITIAL_COMMAND_BYTE: u8 = CB_TRANSLATE | CB_AUX_DISABLED | CB_KBD_DISABLED | CB_SYS;
// Controller commands (port 0x64).
const CMD_READ_CB: u8 = 0x20;
const CMD_WRITE_CB: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;
const SELF_TEST_OK: u8 = 0x55;
/// "Clock line stuck low": Linux's i8042_check_aux gives up on the aux port.
const AUX_TEST_FAILED: u8 = 0x01;
// Keyboard commands (port 0x60) and replies.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_GET_ID: u8 = 0xf2;
const KBD_TYPEMATIC: u8 = 0xf3;
const KBD_ENABLE: u8 = 0xf4;
const KBD_DISABLE: u8 = 0xf5;
const KBD_SET_DEFAULT: u8 = 0xf6;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ID: [u8; 2] = [0xab, 0x83];
/// Set 2 release prefix; a translating controller folds it into bit 7.
const SET2_RELEASE: u8 = 0xf0;
/// Ctrl, Alt, Delete pressed, then released in reverse order, in scan code
/// set 2: 14, 11, E0 71; E0 F0 71, F0 11, F0 14.
const CTRL_ALT_DEL_SET2: [u8; 11] = [
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
];

/// What a translating i8042 turns a set 2 byte from the keyboard into, for
/// the bytes this keyboard sends. Bytes from 0x80 pass through (ACK, BAT,
/// the E0 prefix, the first ID byte) except 0x83, the second ID byte.
fn translate(byte: u8) -> u8 {
    match byte {
        0x01 => 0x43, // scan code set numbers (reply to F0 00)
        0x02 => 0x41,
        0x03 => 0x3f,
        0x11 => 0x38, // left Alt
        0x14 => 0x1d, // left Ctrl
        0x71 => 0x53, // Delete (after E0)
        0x83 => 0x41, // keyboard ID AB 83 reads AB 41
        other => other,
    }
}

/// A data-port byte the controller takes as the parameter of a command.
enum Param {
    CommandByte,
    OutputPort,
    KbdBuffer,
    /// For the absent aux device: swallowed.
    Aux,
}

/// The controller, its keyboard, and the reset line.
pub struct I8042 {
    exit: Arc<ExitSignal>,
    irq: IrqTrigger,
    command_byte: u8,
    last_write_was_command: bool,
    output: VecDeque<u8>,
    /// What the data port reads when the buffer is empty (the stale byte).
    last_read: u8,
    dropped: u64,
    param: Option<Param>,
    /// A keyboard command waiting for its parameter byte.
    kbd_param: Option<u8>,
    kbd_scanning: bool,
    kbd_scancode_set: u8,
}

impl I8042 {
    /// A controller that raises IRQ 1 through `irq` and reports resets as
    /// [`ExitReason::Reset`] on `exit`.
    pub fn new(exit: Arc<ExitSignal>, irq: IrqTrigger) -> Self {
        Self {
            exit,
            irq,
            command_byte: INITIAL_COMMAND_BYTE,
            last_write_was_command: false,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
            last_read: 0,
            dropped: 0,
            param: None,
            kbd_param: None,
            kbd_scanning: true, // as a keyboard after power-on
            kbd_scancode_set: 2,
        }
    }

    /// Types Ctrl+Alt+Del. Linux leaves translation on (i8042_controller_init
    /// keeps the firmware's XLATE bit), so the guest reads set 1 codes
    /// 1D 38 E0 53 and releases E0 D3 B8 9D: atkbd marks the port
    /// SERIO_8042_XL and maps them back through atkbd_unxlate_table to the
    /// set 2 keymap, KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE. The VT keymap
    /// binds Ctrl+Alt+Delete to Boot, which calls ctrl_alt_del() (SIGINT to
    /// init). With translation off (i8042.direct) the set 2 bytes go as they
    /// are. False, and nothing queued, unless the guest enabled the keyboard
    /// port and its interrupt, the keyboard scans in set 2 and the whole
    /// sequence fits the buffer.
    pub fn send_ctrl_alt_del(&mut self) -> bool {
        let port = self.command_byte & (CB_KBD_DISABLED | CB_KBD_INT);
        if port != CB_KBD_INT || !self.kbd_scanning {
            log::warn!("i8042: Ctrl+Alt+Del not sent: the guest has not enabled the keyboard");
            return false;
        }
        if self.kbd_scancode_set != 2 {
            log::warn!(
                "i8042: Ctrl+Alt+Del not sent: the guest chose scan code set {}",
                self.kbd_scancode_set
            );
            return false;
        }
        let bytes = self.as_guest_reads(&CTRL_ALT_DEL_SET2);
        if OUTPUT_CAPACITY - self.output.len() < bytes.len() {
            log::warn!("i8042: Ctrl+Alt+Del not sent: the guest is not reading the keyboard");
            return false;
        }
        self.push(&bytes);
        true
    }

    /// Output bytes dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Set 2 bytes as the guest reads them through the controller.
    fn as_guest_reads(&self, set2: &[u8]) -> Vec<u8> {
        if self.command_byte & CB_TRANSLATE == 0 {
            return set2.to_vec();
        }
        let mut release = 0;
        let mut out = Vec::with_capacity(set2.len());
        for &byte in set2 {
            if byte == SET2_RELEASE {
                release = 0x80;
            } else {
                out.push(translate(byte) | release);
                release = 0;
            }
        }
        out
    }

    fn push(&mut self, bytes: &[u8]) {
        let was_empty = self.output.is_empty();
        for &byte in bytes {
            if self.output.len() < OUTPUT_CAPACITY {
                self.output.push_back(byte);
            } else {
                self.dropped += 1;
                log::debug!("i8042: output buffer full, dropped {byte:#04x}");
            }
        }
        if was_empty && !self.output.is_empty() {
            self.interrupt();
        }
    }

    /// Signals that a byte became readable, if the guest wants to know.
    fn interrupt(&self) {
        if self.command_byte & CB_KBD_INT != 0 {
            if let Err(e) = self.irq.trigger() {
                log::warn!("i8042: cannot raise IRQ 1: {e}");
            }
        }
    }

    fn reply(&mut self, set2: &[u8]) {
        let bytes = self.as_guest_reads(set2);
        self.push(&bytes);
    }

    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.output.pop_front() {
            self.last_read = byte;
            // The next byte moves into the one-byte output register.
            if !self.output.is_empty() {
                self.interrupt();
            }
        }
        self.last_read
    }

    fn status(&self) -> u8 {
        let mut status = STS_UNLOCKED | (self.command_byte & CB_SYS);
        if !self.output.is_empty() {
            status |= STS_OBF;
        }
        if self.last_write_was_command {
            status |= STS_CMD;
        }
        status
    }

    fn reset(&self, how: &str) {
        // The guest may go on pulsing it until its vCPU is stopped.
        static RESETS: LogLimit = LogLimit::new();
        RESETS.info(format_args!("i8042: guest {how}"));
        self.exit.raise(ExitReason::Reset);
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.param = None;
        match command {
            CMD_READ_CB => self.push(&[self.command_byte]),
            CMD_WRITE_CB => self.param = Some(Param::CommandByte),
            CMD_AUX_DISABLE => self.command_byte |= CB_AUX_DISABLED,
            CMD_AUX_ENABLE => self.command_byte &= !CB_AUX_DISABLED,
            CMD_AUX_TEST => self.push(&[AUX_TEST_FAILED]),
            CMD_SELF_TEST => {
                self.command_byte |= CB_SYS;
                self.push(&[SELF_TEST_OK]);
            }
            CMD_KBD_TEST => self.push(&[0x00]),
            CMD_KBD_DISABLE => self.command_byte |= CB_KBD_DISABLED,
            CMD_KBD_ENABLE => self.command_byte &= !CB_KBD_DISABLED,
            CMD_WRITE_OUTPUT_PORT => self.param = Some(Param::OutputPort),
            CMD_WRITE_KBD_BUFFER => self.param = Some(Param::KbdBuffer),
            CMD_WRITE_AUX_BUFFER | CMD_WRITE_AUX => self.param = Some(Param::Aux),
            CMD_RESET_CPU => self.reset("pulsed the reset line"),
            _ => log::debug!("i8042: ignored command {command:#04x}"),
        }
    }

    fn write_data(&mut self, byte: u8) {
        self.last_write_was_command = false;
        match self.param.take() {
            Some(Param::CommandByte) => {
                let irq_enabled = byte & !self.command_byte & CB_KBD_INT != 0;
                self.command_byte = byte;
                if irq_enabled && !self.output.is_empty() {
                    self.interrupt();
                }
            }
            Some(Param::OutputPort) if byte & 1 == 0 => self.reset("cleared the reset line"),
            Some(Param::OutputPort) => {} // A20 and the rest: nothing to model
            Some(Param::KbdBuffer) => self.push(&[byte]),
            Some(Param::Aux) => log::debug!("i8042: no aux device for {byte:#04x}"),
            None => self.keyboard_write(byte),
        }
    }

    /// A byte for the keyboard. Every parameter is below 0x80, so a byte
    /// from 0x80 is a new command even where a parameter was due.
    fn keyboard_write(&mut self, byte: u8) {
        if let Some(command) = self.kbd_param.take().filter(|_| byte < 0x80) {
            return match (command, byte) {
                (KBD_SCANCODE_SET, 0) => self.reply(&[KBD_ACK, self.kbd_scancode_set]),
                (KBD_SCANCODE_SET, 1..=3) => {
                    self.kbd_scancode_set = byte;
                    self.reply(&[KBD_ACK]);
                }
                (KBD_SCANCODE_SET, _) => self.reply(&[KBD_RESEND]),
                _ => self.reply(&[KBD_ACK]), // LED state, typematic rate
            };
        }
        match byte {
            KBD_SET_LEDS | KBD_TYPEMATIC | KBD_SCANCODE_SET => {
                self.kbd_param = Some(byte);
                self.reply(&[KBD_ACK]);
            }
            KBD_ECHO => self.reply(&[KBD_ECHO]),
            KBD_GET_ID => self.reply(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_ENABLE | KBD_DISABLE | KBD_SET_DEFAULT => {
                self.kbd_scanning = byte != KBD_DISABLE;
                self.reply(&[KBD_ACK]);
            }
            KBD_RESET => {
                self.kbd_scanning = true;
                self.kbd_scancode_set = 2;
                self.reply(&[KBD_ACK, KBD_BAT_OK]);
            }
            _ => self.reply(&[KBD_RESEND]),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [byte] = data else {
            data.fill(0);
            return;
        };
        *byte = match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (DATA_OFFSET, [byte]) => self.write_data(*byte),
            (COMMAND_OFFSET, [command]) => self.write_command(*command),
            _ => log::debug!("i8042: ignored write {data:x?} at {offset:#x}"),
        }
    }
}

#[cfg(test)]
#[path = "i8042_tests.rs"]
mod tests;

#[path = "i8042_state.rs"]
mod state;
pub use state::I8042State;
