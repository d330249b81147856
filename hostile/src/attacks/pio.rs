//! Port I/O storms (x86_64; skipped where there are no ports): random
//! widths on ports nothing claims, and `rep insb`/`rep outsb` of 4 KiB
//! (one exit, thousands of elements) on those and on the UART's receive
//! register. Never the i8042 (0x60-0x64) or ACPI (0x600) ports, whose
//! writes may end the VM.

use std::time::Duration;

use crate::port_io;
use crate::{for_a_while, Ctx};

/// Ports nothing in tandem answers.
const UNCLAIMED: [(u16, u16); 4] = [
    (0x80, 0x8f),
    (0x100, 0x1ff),
    (0x2f8, 0x2ff),
    (0x2000, 0x20ff),
];

/// The storm.
pub fn storm(ctx: &mut Ctx) -> Result<String, String> {
    if !port_io::enable() {
        return Ok("skipped: no port I/O on this architecture".into());
    }
    let rng = &mut ctx.rng;
    let mut buf = vec![0u8; 4096];
    let accesses = for_a_while(Duration::from_millis(1500), |_| {
        let (lo, hi) = UNCLAIMED[rng.below(UNCLAIMED.len() as u64) as usize];
        let port = lo + rng.below(u64::from(hi - lo) + 1) as u16;
        let width = 1 << rng.below(3);
        if rng.below(2) == 0 {
            port_io::write(port, width, rng.bits() as u32);
        } else {
            port_io::read(port, width);
        }
    });
    let strings = for_a_while(Duration::from_millis(1500), |i| match i % 3 {
        0 => port_io::rep_outsb(0x80, &buf),
        1 => port_io::rep_insb(0x2f8, &mut buf),
        _ => port_io::rep_insb(0x3f8, &mut buf),
    });
    Ok(format!("accesses={accesses} string_ops={strings} x4096"))
}
