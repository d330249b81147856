//! The console UART: a 16550 (vm-superio's model) behind a [`BusDevice`],
//! with host input pushed into its receive FIFO and guest output handed to
//! a [`ConsoleOutput`], which never blocks the vCPU writing the register:
//! a host that stops reading costs output, not a stalled guest or VMM.
//!
//! Registers are one byte apart, so the same device serves a port I/O base
//! on x86 and an MMIO base on aarch64. Its registers and receive FIFO are
//! saved and restored with snapshots ([`SerialState`]).

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as UartError, SerialEvents, SerialState as UartState};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ConsoleOutput;
use crate::{BusDevice, IrqTrigger, LogLimit};

/// Guest register writes the UART failed on (an interrupt not raised).
static FAILED_WRITE: LogLimit = LogLimit::new();

/// Number of byte-wide registers a 16550 decodes.
pub const SERIAL_REGISTERS: u64 = 8;

/// Where the guest's output goes: a buffer that never blocks.
pub type SerialOutput = ConsoleOutput;

/// Signals when the guest has drained the receive FIFO, so the VMM can push
/// host input it could not fit earlier.
struct RxDrained {
    evt: EventFd,
}

impl SerialEvents for RxDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A counter already at its maximum still leaves the fd readable.
        let _ = self.evt.write(1);
    }
}

/// A 16550 UART wired to an interrupt line and an output writer.
pub struct Serial {
    uart: vm_superio::Serial<IrqTrigger, Arc<RxDrained>, SerialOutput>,
}

/// What the guest can observe of the UART: its registers and the bytes
/// waiting in its receive FIFO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the 16550's register names
pub struct SerialState {
    pub divisor_low: u8,
    pub divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub rx_fifo: Vec<u8>,
}

impl Serial {
    /// A UART raising `irq` and writing guest output to `out`.
    pub fn new(irq: IrqTrigger, out: SerialOutput) -> io::Result<Self> {
        let events = RxDrained {
            evt: EventFd::new(EFD_NONBLOCK)?,
        };
        Ok(Self {
            uart: vm_superio::Serial::with_events(irq, Arc::new(events), out),
        })
    }

    /// The registers and receive FIFO, for a snapshot.
    pub fn state(&self) -> SerialState {
        let s = self.uart.state();
        SerialState {
            divisor_low: s.baud_divisor_low,
            divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            rx_fifo: s.in_buffer,
        }
    }

    /// Takes a snapshot's registers and FIFO, keeping this UART's
    /// interrupt line, events and output. A FIFO longer than a 16550's is
    /// refused.
    pub fn restore(&mut self, state: &SerialState) -> Result<(), String> {
        let saved = UartState {
            baud_divisor_low: state.divisor_low,
            baud_divisor_high: state.divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.rx_fifo.clone(),
        };
        let uart = vm_superio::Serial::from_state(
            &saved,
            self.uart.interrupt_evt().clone(),
            self.uart.events().clone(),
            self.uart.writer().clone(),
        )
        .map_err(|e| format!("serial: {e:?}"))?;
        self.uart = uart;
        Ok(())
    }

    /// Pushes host input into the receive FIFO and raises the interrupt if
    /// the guest enabled it. Returns how many bytes fit: the caller keeps
    /// the rest and retries once [`Self::rx_drained_event`] fires.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(accepted) => accepted,
            Err(UartError::FullFifo) => 0,
            // The bytes are queued; only the interrupt was lost.
            Err(UartError::Trigger(e)) => {
                log::warn!("serial: cannot raise the receive interrupt: {e}");
                room
            }
            Err(UartError::IOError(e)) => {
                log::warn!("serial: input not queued: {e}");
                0
            }
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Becomes readable each time the guest empties the receive FIFO.
    pub fn rx_drained_event(&self) -> &EventFd {
        &self.uart.events().evt
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match data {
            [byte] if offset < SERIAL_REGISTERS => *byte = self.uart.read(offset as u8),
            _ => log::debug!("serial: ignored {}-byte read at {offset:#x}", data.len()),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let &[value] = data else {
            log::debug!("serial: ignored {}-byte write at {offset:#x}", data.len());
            return;
        };
        if offset >= SERIAL_REGISTERS {
            log::debug!("serial: ignored write at {offset:#x}");
            return;
        }
        // Output cannot fail (ConsoleOutput drops and counts instead); an
        // interrupt that cannot be raised is all that is left to report.
        if let Err(e) = self.uart.write(offset as u8, value) {
            FAILED_WRITE.warn(format_args!("serial: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::console_output::tests::Parked;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const THR: u64 = 0;
    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const IER_RX_DATA: u8 = 0x01;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;
    const IIR_RX_DATA: u8 = 0x04;
    const MCR_LOOPBACK: u8 = 0x10;
    const FIFO_SIZE: usize = 64;

    /// A buffered writer the test can inspect after handing it to the UART:
    /// bytes become visible only once flushed, like a terminal's.
    #[derive(Clone, Default)]
    struct SharedBuf {
        flushed: Arc<Mutex<Vec<u8>>>,
        pending: Vec<u8>,
    }

    impl SharedBuf {
        fn flushed(&self) -> Vec<u8> {
            self.flushed.lock().unwrap().clone()
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.pending.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushed.lock().unwrap().append(&mut self.pending);
            Ok(())
        }
    }

    /// A writer whose reader went away.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What the guest sent, once the output buffer has passed it on.
    struct Sent {
        sink: SharedBuf,
        output: ConsoleOutput,
    }

    impl Sent {
        fn flushed(&self) -> Vec<u8> {
            assert!(self.output.flush_within(Duration::from_secs(1)));
            self.sink.flushed()
        }
    }

    fn serial() -> (Serial, IrqTrigger, Sent) {
        let irq = IrqTrigger::new().unwrap();
        let sink = SharedBuf::default();
        let output = ConsoleOutput::new(Box::new(sink.clone())).unwrap();
        let serial = Serial::new(irq.clone(), output.clone()).unwrap();
        (serial, irq, Sent { sink, output })
    }

    fn read_reg(serial: &mut Serial, offset: u64) -> u8 {
        let mut byte = [0xaa];
        serial.read(offset, &mut byte);
        byte[0]
    }

    /// Interrupts raised since the last call (0 if none).
    fn irq_count(irq: &IrqTrigger) -> u64 {
        irq.event_fd().read().unwrap_or(0)
    }

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let (mut serial, _, out) = serial();
        serial.write(THR, b"h");
        assert_eq!(out.flushed(), b"h", "written and flushed");
        serial.write(THR, b"i");
        assert_eq!(out.flushed(), b"hi");
        assert_ne!(read_reg(&mut serial, LSR) & LSR_THR_EMPTY, 0);
    }

    #[test]
    fn input_is_readable_and_interrupts_when_enabled() {
        let (mut serial, irq, _) = serial();
        assert_eq!(serial.enqueue_input(b"ab"), 2);
        assert_eq!(irq_count(&irq), 0, "receive interrupt still disabled");
        assert_ne!(read_reg(&mut serial, LSR) & LSR_DATA_READY, 0);

        serial.write(IER, &[IER_RX_DATA]);
        assert!(irq_count(&irq) > 0, "enabling with data pending asserts it");
        assert_eq!(read_reg(&mut serial, IIR) & 0x0f, IIR_RX_DATA);

        assert_eq!(read_reg(&mut serial, RBR), b'a');
        assert_eq!(serial.rx_drained_event().read().ok(), None);
        assert_eq!(read_reg(&mut serial, RBR), b'b');
        assert_eq!(read_reg(&mut serial, LSR) & LSR_DATA_READY, 0);
        assert_eq!(serial.rx_drained_event().read().unwrap(), 1);

        assert_eq!(serial.enqueue_input(b"c"), 1);
        assert_eq!(irq_count(&irq), 1, "new input with IER set interrupts");
    }

    #[test]
    fn full_fifo_accepts_only_what_fits() {
        let (mut serial, _, _) = serial();
        let input = [b'x'; FIFO_SIZE + 10];
        assert_eq!(serial.enqueue_input(&input), FIFO_SIZE);
        assert_eq!(serial.input_capacity(), 0);
        assert_eq!(serial.enqueue_input(b"y"), 0);
        assert_eq!(serial.enqueue_input(&[]), 0);
        read_reg(&mut serial, RBR);
        assert_eq!(serial.enqueue_input(b"yz"), 1);
    }

    #[test]
    fn loopback_input_is_refused_not_lost() {
        let (mut serial, _, _) = serial();
        serial.write(MCR, &[MCR_LOOPBACK]);
        assert_eq!(serial.enqueue_input(b"a"), 0);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_ignored() {
        let (mut serial, _, out) = serial();
        serial.write(LCR, &[0x03]);
        serial.write(LCR, &[0x80, 0x80]);
        serial.write(THR, b"abcd");
        serial.write(SERIAL_REGISTERS, &[0x80]);
        assert_eq!(read_reg(&mut serial, LCR), 0x03);
        assert!(out.flushed().is_empty());

        let mut wide = [0xffu8; 4];
        serial.read(LSR, &mut wide);
        assert_eq!(wide, [0; 4]);
        assert_eq!(read_reg(&mut serial, 0x100), 0);
    }

    #[test]
    fn broken_output_does_not_stop_the_uart() {
        let irq = IrqTrigger::new().unwrap();
        let output = ConsoleOutput::new(Box::new(Broken)).unwrap();
        let mut serial = Serial::new(irq, output.clone()).unwrap();
        serial.write(THR, b"a");
        serial.write(THR, b"b");
        serial.write(LCR, &[0x1b]);
        assert_eq!(read_reg(&mut serial, LCR), 0x1b);
        assert!(output.flush_within(Duration::from_secs(1)));
        assert_eq!(output.dropped_bytes(), 2);
    }

    #[test]
    fn a_stuck_host_reader_never_blocks_the_guest() {
        let irq = IrqTrigger::new().unwrap();
        let output = ConsoleOutput::with_capacity(Box::new(Parked), 1024).unwrap();
        let mut serial = Serial::new(irq, output.clone()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            for i in 0..5000 {
                let started = Instant::now();
                serial.write(THR, &[b'a' + (i % 26) as u8]);
                slowest = slowest.max(started.elapsed());
            }
            let _ = done.send(slowest);
        });
        let slowest = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("a THR write blocked on the host writer");
        // A blocked write would never return (the reader is parked for
        // good); 2 s only leaves room for a loaded machine's scheduling
        // (250 ms failed under qemu-user with the load at 10).
        assert!(slowest < Duration::from_secs(2), "{slowest:?}");
        // All but what the buffer (and the one write in progress) holds.
        assert!(output.dropped_bytes() >= 5000 - 2 * 1024);
    }

    #[test]
    fn a_restored_uart_has_the_saved_registers_and_fifo() {
        let (mut saved, _irq, _sent) = serial();
        saved.write(LCR, &[0x03]);
        saved.write(IER, &[IER_RX_DATA]);
        saved.write(7, &[0x5a]); // scratch
        assert_eq!(saved.enqueue_input(b"abc"), 3);
        let state = saved.state();
        assert_eq!(state.rx_fifo, b"abc");

        let (mut restored, irq, _sent) = serial();
        restored.restore(&state).unwrap();
        assert_eq!(restored.state(), state);
        assert_eq!(read_reg(&mut restored, LCR), 0x03);
        assert_eq!(read_reg(&mut restored, 7), 0x5a);
        assert_eq!(
            read_reg(&mut restored, LSR) & LSR_DATA_READY,
            LSR_DATA_READY
        );
        let bytes: Vec<u8> = (0..3).map(|_| read_reg(&mut restored, RBR)).collect();
        assert_eq!(bytes, b"abc");
        // The restored UART raises its own line, not the saved one's.
        restored.enqueue_input(b"d");
        assert!(irq.event_fd().read().is_ok());

        let too_long = SerialState {
            rx_fifo: vec![0; FIFO_SIZE + 1],
            ..state
        };
        assert!(restored.restore(&too_long).is_err());
    }
}
