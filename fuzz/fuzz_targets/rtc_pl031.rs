//! Feeds the PL031 real-time clock (devices/src/legacy/rtc_pl031.rs,
//! vm-superio's model) with a sequence of reads and writes of any width at
//! any offset of its 4 KiB window and past it, as a guest would.
//!
//! Checks: accesses that are not aligned 32-bit ones inside the window
//! read as zero; the PrimeCell ID registers keep their values.
#![no_main]

use arbitrary::Arbitrary;
use devices::legacy::Pl031;
use devices::{BusDevice, IrqTrigger};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Read { offset: u16, len: u8 },
    Write { offset: u16, data: Vec<u8> },
    Write32 { register: u8, value: u32 },
}

/// AMBA PrimeCell ID bytes at 0xfe0..0x1000 (one per 32-bit register).
const ID: [u8; 8] = [0x31, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

fuzz_target!(|ops: Vec<Op>| {
    let mut rtc = Pl031::new(IrqTrigger::new().expect("eventfd"));
    for op in ops.iter().take(256) {
        match op {
            Op::Read { offset, len } => {
                let offset = u64::from(*offset % 0x1100);
                let mut data = vec![0xa5u8; usize::from(*len % 9)];
                rtc.read(offset, &mut data);
                if data.len() != 4 || offset % 4 != 0 || offset >= 0x1000 {
                    assert!(data.iter().all(|&b| b == 0), "ignored read must be zero");
                }
            }
            Op::Write { offset, data } => {
                rtc.write(u64::from(*offset % 0x1100), &data[..data.len().min(8)])
            }
            Op::Write32 { register, value } => {
                rtc.write(u64::from(*register) * 4 % 0x1000, &value.to_le_bytes())
            }
        }
    }
    for (i, &id) in ID.iter().enumerate() {
        let mut data = [0u8; 4];
        rtc.read(0xfe0 + 4 * i as u64, &mut data);
        assert_eq!(data, [id, 0, 0, 0], "PrimeCell ID register {i}");
    }
});
