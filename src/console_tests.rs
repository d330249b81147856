//! Host input against a guest that does not read it: bounded, nothing lost,
//! and the drained-FIFO event taken so the main loop does not spin.

use super::*;
use devices::{BusDevice, IrqTrigger};

const RBR: u64 = 0;
const FIFO_SIZE: usize = 64;

fn uart_input() -> (ConsoleInput, Arc<Mutex<Serial>>) {
    let out = ConsoleOutput::new(Box::new(io::sink())).unwrap();
    let serial = Serial::new(IrqTrigger::new().unwrap(), out).unwrap();
    let serial = Arc::new(Mutex::new(serial));
    (ConsoleInput::new(InputTarget::Uart(serial.clone())), serial)
}

/// Reads like the main loop does: while there is room and input.
fn read_all(console: &mut ConsoleInput, source: &mut &[u8]) {
    while console.accepts_input() && !source.is_empty() {
        assert_eq!(console.read_from(source).unwrap(), InputEvent::Queued);
    }
}

fn guest_reads(serial: &Mutex<Serial>, count: usize) -> Vec<u8> {
    let mut serial = serial.lock().unwrap();
    let mut bytes = vec![0u8; count];
    for byte in &mut bytes {
        serial.read(RBR, std::slice::from_mut(byte));
    }
    bytes
}

#[test]
fn input_the_guest_does_not_read_stays_bounded() {
    let (mut console, serial) = uart_input();
    let input: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut source = input.as_slice();
    read_all(&mut console, &mut source);
    assert!(console.pending.len() <= MAX_PENDING_INPUT);
    assert!(!console.accepts_input());
    // Not read is not lost: it waits in stdin.
    let taken = input.len() - source.len();
    assert_eq!(taken, FIFO_SIZE + console.pending.len());

    // The guest drains its FIFO: pending input moves in, reading resumes.
    assert_eq!(guest_reads(&serial, FIFO_SIZE), input[..FIFO_SIZE]);
    console.rx_drained();
    assert!(console.accepts_input());
    read_all(&mut console, &mut source);
    assert!(console.pending.len() <= MAX_PENDING_INPUT);
    assert_eq!(
        guest_reads(&serial, FIFO_SIZE),
        input[FIFO_SIZE..][..FIFO_SIZE]
    );
}

#[test]
fn escapes_cannot_push_input_past_the_bound() {
    // Ctrl-A before another byte passes both, and one held across reads
    // comes out with the next byte: the filter can give more than it got.
    let (mut console, _serial) = uart_input();
    let input = b"\x01z".repeat(1 << 16);
    let mut source = &input[1..];
    read_all(&mut console, &mut source);
    assert!(console.pending.len() <= MAX_PENDING_INPUT);
    assert!(MAX_PENDING_INPUT - console.pending.len() < 3);
}

#[test]
fn a_drained_fifo_wakes_the_main_loop_once() {
    let (mut console, serial) = uart_input();
    console.read_from(&mut &b"ab"[..]).unwrap();
    guest_reads(&serial, 2);
    console.rx_drained();
    let serial = serial.lock().unwrap();
    assert!(serial.rx_drained_event().read().is_err(), "still readable");
}

#[test]
fn quit_and_end_of_input_are_reported() {
    let (mut console, serial) = uart_input();
    let quit = console.read_from(&mut &b"ok\x01x"[..]).unwrap();
    assert_eq!(quit, InputEvent::Quit);
    assert_eq!(guest_reads(&serial, 2), b"ok");
    assert_eq!(
        console.read_from(&mut &b""[..]).unwrap(),
        InputEvent::Closed
    );
}

#[test]
fn virtio_input_always_has_room() {
    let out = ConsoleOutput::new(Box::new(io::sink())).unwrap();
    let device = devices::virtio::Console::new(out).unwrap();
    let mut console = ConsoleInput::new(InputTarget::Virtio(device.input_sink()));
    let input = vec![b'v'; 10_000];
    read_all(&mut console, &mut input.as_slice());
    assert!(console.accepts_input());
    assert!(console.pending.is_empty());
}
