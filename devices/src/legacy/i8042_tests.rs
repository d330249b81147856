//! The i8042 driven the way Linux's i8042 and atkbd drivers drive it.

use super::*;

struct Guest {
    dev: I8042,
    exit: Arc<ExitSignal>,
    irq: IrqTrigger,
}

impl Guest {
    fn new() -> Self {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let irq = IrqTrigger::new().unwrap();
        let dev = I8042::new(exit.clone(), irq.clone());
        Self { dev, exit, irq }
    }

    fn status(&mut self) -> u8 {
        let mut data = [0xff];
        self.dev.read(COMMAND_OFFSET, &mut data);
        data[0]
    }

    fn command(&mut self, command: u8) {
        self.dev.write(COMMAND_OFFSET, &[command]);
    }

    fn data(&mut self, byte: u8) {
        self.dev.write(DATA_OFFSET, &[byte]);
    }

    /// Reads while the status register says a byte is waiting.
    fn drain(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.status() & STS_OBF != 0 {
            let mut data = [0];
            self.dev.read(DATA_OFFSET, &mut data);
            bytes.push(data[0]);
        }
        bytes
    }

    /// Linux's __i8042_command: the command, its parameters, its replies.
    fn i8042_command(&mut self, command: u8, params: &[u8]) -> Vec<u8> {
        self.command(command);
        params.iter().for_each(|&p| self.data(p));
        self.drain()
    }

    /// libps2's ps2_command: bytes to the keyboard, each answered.
    fn ps2_command(&mut self, bytes: &[u8]) -> Vec<u8> {
        bytes.iter().for_each(|&b| self.data(b));
        self.drain()
    }

    /// Interrupts raised since the last call.
    fn irqs(&self) -> u64 {
        self.irq.event_fd().read().unwrap_or(0)
    }

    /// i8042_controller_init then i8042_enable_kbd_port.
    fn enable_keyboard(&mut self) {
        let ctr = self.i8042_command(CMD_READ_CB, &[])[0];
        let ctr = (ctr | CB_KBD_DISABLED) & !CB_KBD_INT;
        self.i8042_command(CMD_WRITE_CB, &[ctr]);
        self.i8042_command(CMD_WRITE_CB, &[(ctr & !CB_KBD_DISABLED) | CB_KBD_INT]);
    }
}

#[test]
fn linux_probe_sequence() {
    let mut g = Guest::new();
    assert_eq!(g.drain(), [], "i8042_flush finds nothing");
    assert_eq!(g.status() & (STS_UNLOCKED | CB_SYS), STS_UNLOCKED | CB_SYS);
    // i8042_platform_init: A20 through the output port, then a null command.
    assert_eq!(g.i8042_command(CMD_WRITE_OUTPUT_PORT, &[0xdf]), []);
    assert_eq!(g.i8042_command(0xff, &[]), []);
    assert_eq!(g.i8042_command(CMD_SELF_TEST, &[]), [SELF_TEST_OK]);
    // Two equal CTR reads, then a write read back unchanged.
    let ctr = g.i8042_command(CMD_READ_CB, &[]);
    assert_eq!(ctr, [INITIAL_COMMAND_BYTE]);
    assert_eq!(g.i8042_command(CMD_READ_CB, &[]), ctr);
    assert_ne!(ctr[0] & CB_TRANSLATE, 0, "Linux keeps translation on");
    assert_eq!(g.i8042_command(CMD_WRITE_CB, &[0x45]), []);
    assert_eq!(g.i8042_command(CMD_READ_CB, &[]), [0x45]);
    assert_eq!(g.i8042_command(CMD_KBD_TEST, &[]), [0x00]);
    // i8042_check_aux: the loopback goes unanswered, the test fails.
    assert_eq!(g.i8042_command(CMD_WRITE_AUX_BUFFER, &[0x5a]), []);
    let aux = g.i8042_command(CMD_AUX_TEST, &[]);
    assert!(aux[0] != 0 && aux[0] != 0xfa && aux[0] != 0xff, "{aux:x?}");
    g.i8042_command(CMD_AUX_DISABLE, &[]);
    assert_ne!(g.i8042_command(CMD_READ_CB, &[])[0] & CB_AUX_DISABLED, 0);
    g.i8042_command(CMD_AUX_ENABLE, &[]);
    assert_eq!(g.i8042_command(CMD_READ_CB, &[])[0] & CB_AUX_DISABLED, 0);
    g.i8042_command(CMD_KBD_DISABLE, &[]);
    assert_ne!(g.i8042_command(CMD_READ_CB, &[])[0] & CB_KBD_DISABLED, 0);
    g.i8042_command(CMD_KBD_ENABLE, &[]);
    assert_eq!(g.i8042_command(CMD_READ_CB, &[])[0] & CB_KBD_DISABLED, 0);
    assert_eq!(g.exit.reason(), None);
}

#[test]
fn atkbd_commands_are_acknowledged() {
    let mut g = Guest::new();
    g.enable_keyboard();
    // Translated: the second ID byte 83 reads 41, set 2 reads 41.
    assert_eq!(g.ps2_command(&[KBD_GET_ID]), [KBD_ACK, 0xab, 0x41]);
    assert_eq!(g.ps2_command(&[KBD_DISABLE]), [KBD_ACK]);
    assert_eq!(g.ps2_command(&[KBD_SET_LEDS, 0]), [KBD_ACK, KBD_ACK]);
    assert_eq!(g.ps2_command(&[KBD_TYPEMATIC, 0]), [KBD_ACK, KBD_ACK]);
    assert_eq!(g.ps2_command(&[KBD_ENABLE]), [KBD_ACK]);
    assert_eq!(
        g.ps2_command(&[KBD_SCANCODE_SET, 0]),
        [KBD_ACK, KBD_ACK, 0x41]
    );
    assert_eq!(g.ps2_command(&[KBD_RESET]), [KBD_ACK, KBD_BAT_OK]);
    assert_eq!(g.ps2_command(&[KBD_ECHO]), [KBD_ECHO]);
    assert_eq!(g.ps2_command(&[0x42]), [KBD_RESEND], "not a command");
    // A command where a parameter was due is taken as a command.
    assert_eq!(
        g.ps2_command(&[KBD_SET_LEDS, KBD_ENABLE]),
        [KBD_ACK, KBD_ACK]
    );
    // i8042.direct: untranslated replies.
    let ctr = g.i8042_command(CMD_READ_CB, &[])[0];
    g.i8042_command(CMD_WRITE_CB, &[ctr & !CB_TRANSLATE]);
    assert_eq!(g.ps2_command(&[KBD_GET_ID]), [KBD_ACK, 0xab, 0x83]);
    assert_eq!(g.ps2_command(&[KBD_SCANCODE_SET, 0]), [KBD_ACK, KBD_ACK, 2]);
    assert_eq!(g.ps2_command(&[KBD_SCANCODE_SET, 9]), [KBD_ACK, KBD_RESEND]);
}

#[test]
fn output_buffer_order_and_status_bits() {
    let mut g = Guest::new();
    assert_eq!(g.status(), STS_UNLOCKED | CB_SYS);
    g.command(CMD_SELF_TEST);
    assert_eq!(g.status(), STS_UNLOCKED | CB_SYS | STS_CMD | STS_OBF);
    g.command(CMD_KBD_TEST);
    g.data(KBD_ECHO);
    assert_eq!(
        g.status() & (STS_CMD | 0x02 | 0x20),
        0,
        "data write; no IBF, AUX OBF"
    );
    assert_eq!(g.drain(), [SELF_TEST_OK, 0x00, KBD_ECHO]);
    let mut stale = [0];
    g.dev.read(DATA_OFFSET, &mut stale);
    assert_eq!(stale, [KBD_ECHO], "an empty buffer repeats the last byte");
    let mut wide = [0xff; 2];
    g.dev.read(DATA_OFFSET, &mut wide);
    assert_eq!(wide, [0, 0]);
    g.command(CMD_WRITE_KBD_BUFFER);
    g.data(0x1c);
    assert_eq!(g.drain(), [0x1c]);
}

#[test]
fn irq_only_while_the_keyboard_interrupt_is_enabled() {
    let mut g = Guest::new();
    g.i8042_command(CMD_SELF_TEST, &[]);
    assert_eq!(g.irqs(), 0, "firmware left the interrupt off");
    g.enable_keyboard();
    g.irqs();
    g.data(KBD_GET_ID);
    assert_eq!(g.irqs(), 1, "one edge for the first byte");
    assert_eq!(g.drain().len(), 3);
    assert_eq!(g.irqs(), 2, "one edge for each byte that followed");
    // Enabling the interrupt with a byte waiting signals it.
    let ctr = g.i8042_command(CMD_READ_CB, &[])[0];
    g.i8042_command(CMD_WRITE_CB, &[ctr & !CB_KBD_INT]);
    g.irqs();
    g.data(KBD_ECHO);
    assert_eq!(g.irqs(), 0);
    g.command(CMD_WRITE_CB);
    g.data(ctr);
    assert_eq!(g.irqs(), 1);
    assert_eq!(g.drain(), [KBD_ECHO]);
}

#[test]
fn ctrl_alt_del_needs_an_enabled_keyboard() {
    let mut g = Guest::new();
    assert!(!g.dev.send_ctrl_alt_del(), "no driver yet");
    assert_eq!(g.drain(), []);
    g.enable_keyboard();
    g.irqs();
    assert!(g.dev.send_ctrl_alt_del());
    assert_eq!(g.irqs(), 1);
    let expected = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];
    assert_eq!(g.drain(), expected);
    // The keyboard disabled by atkbd, or the port by i8042.
    g.ps2_command(&[KBD_DISABLE]);
    assert!(!g.dev.send_ctrl_alt_del());
    g.ps2_command(&[KBD_ENABLE]);
    g.i8042_command(CMD_KBD_DISABLE, &[]);
    assert!(!g.dev.send_ctrl_alt_del());
    g.i8042_command(CMD_KBD_ENABLE, &[]);
    // Untranslated, the set 2 sequence as is.
    let ctr = g.i8042_command(CMD_READ_CB, &[])[0];
    g.i8042_command(CMD_WRITE_CB, &[ctr & !CB_TRANSLATE]);
    assert!(g.dev.send_ctrl_alt_del());
    assert_eq!(g.drain(), CTRL_ALT_DEL_SET2);
    g.ps2_command(&[KBD_SCANCODE_SET, 3]);
    assert!(!g.dev.send_ctrl_alt_del(), "only set 2 is typed");
}

#[test]
fn the_output_buffer_is_bounded() {
    let mut g = Guest::new();
    g.enable_keyboard();
    for _ in 0..100 {
        g.data(KBD_ECHO);
    }
    assert_eq!(g.dev.dropped(), 100 - OUTPUT_CAPACITY as u64);
    assert!(!g.dev.send_ctrl_alt_del(), "no room: nothing half-typed");
    assert_eq!(g.drain(), [KBD_ECHO; OUTPUT_CAPACITY]);
    for _ in 0..OUTPUT_CAPACITY - 4 {
        g.data(KBD_ECHO);
    }
    assert!(!g.dev.send_ctrl_alt_del(), "8 bytes do not fit in 4");
    assert_eq!(g.drain().len(), OUTPUT_CAPACITY - 4);
    assert!(g.dev.send_ctrl_alt_del());
}

#[test]
fn a_guest_pulsing_reset_again_and_again_leaves_few_lines() {
    let mut g = Guest::new();
    let log = crate::test_log::Capture::start();
    for _ in 0..10_000 {
        // What `rep outsb` does in one exit, before the VMM stops the vCPU.
        g.command(CMD_RESET_CPU);
        g.i8042_command(CMD_WRITE_OUTPUT_PORT, &[0xfe]);
    }
    crate::test_log::assert_few(&log.lines_here(), "resets");
}

#[test]
fn reset_line_ends_the_run() {
    let mut g = Guest::new();
    g.command(CMD_RESET_CPU);
    assert_eq!(g.exit.reason(), Some(ExitReason::Reset));
    assert_eq!(g.exit.event_fd().read().unwrap(), 1);

    let mut g = Guest::new();
    g.i8042_command(CMD_WRITE_OUTPUT_PORT, &[0xfe]);
    assert_eq!(
        g.exit.reason(),
        Some(ExitReason::Reset),
        "output port bit 0"
    );

    let mut g = Guest::new();
    g.data(CMD_RESET_CPU);
    g.dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU, 0]);
    g.dev.write(COMMAND_OFFSET, &[]);
    assert_eq!(g.exit.reason(), None, "only the command port, one byte");
}

#[test]
fn a_saved_controller_comes_back_with_its_command_byte_and_waiting_bytes() {
    let mut g = Guest::new();
    g.i8042_command(CMD_WRITE_CB, &[CB_KBD_INT | CB_SYS]);
    // A reply left unread: the self test's 0x55.
    g.command(CMD_SELF_TEST);
    let saved = g.dev.state();
    assert_eq!(saved.output, [0x55]);

    let mut restored = Guest::new();
    restored.dev.restore(&saved).unwrap();
    assert_eq!(restored.drain(), [0x55]);
    assert_eq!(
        restored.i8042_command(CMD_READ_CB, &[]),
        [CB_KBD_INT | CB_SYS]
    );
    assert_eq!(
        restored.dev.state().kbd_scancode_set,
        saved.kbd_scancode_set
    );

    let too_long = I8042State {
        output: vec![0; OUTPUT_CAPACITY + 1],
        ..saved.clone()
    };
    assert!(Guest::new()
        .dev
        .restore(&too_long)
        .unwrap_err()
        .contains("bytes waiting"));
    let bad_set = I8042State {
        kbd_scancode_set: 7,
        ..saved
    };
    assert!(Guest::new()
        .dev
        .restore(&bad_set)
        .unwrap_err()
        .contains("scancode set"));
}
