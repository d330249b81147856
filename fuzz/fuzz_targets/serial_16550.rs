//! Feeds the 16550 UART (devices/src/legacy/serial.rs, vm-superio's
//! model) with a sequence of register reads and writes of any width and
//! offset, interleaved with host input pushed into its receive FIFO, as a
//! guest driver and the VMM's stdin would.
//!
//! Checks: input accepted never exceeds what was offered or the free FIFO
//! space; out-of-range and wide accesses read as zero.
#![no_main]

use arbitrary::Arbitrary;
use devices::legacy::Serial;
use devices::{BusDevice, IrqTrigger};
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::console_output;

#[derive(Arbitrary, Debug)]
enum Op {
    Read { offset: u8, wide: bool },
    Write { offset: u8, value: u8 },
    WriteWide { offset: u8, data: Vec<u8> },
    Input(Vec<u8>),
}

fuzz_target!(|ops: Vec<Op>| {
    let irq = IrqTrigger::new().expect("eventfd");
    let mut serial = Serial::new(irq, console_output()).expect("serial");
    for op in ops.iter().take(256) {
        match op {
            Op::Read { offset, wide } => {
                let mut data = vec![0xa5u8; if *wide { 4 } else { 1 }];
                let offset = u64::from(*offset % 16);
                serial.read(offset, &mut data);
                if *wide || offset >= 8 {
                    assert!(data.iter().all(|&b| b == 0), "ignored read must be zero");
                }
            }
            Op::Write { offset, value } => serial.write(u64::from(*offset % 16), &[*value]),
            Op::WriteWide { offset, data } => {
                serial.write(u64::from(*offset % 16), &data[..data.len().min(8)])
            }
            Op::Input(bytes) => {
                let room = serial.input_capacity();
                let accepted = serial.enqueue_input(bytes);
                assert!(accepted <= bytes.len() && accepted <= room);
            }
        }
    }
});
