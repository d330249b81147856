//! MMIO storms: loads and stores of every width at random offsets of
//! addresses nothing claims (each an exit tandem answers with nothing
//! and logs, rate-limited), and on the virtio registers and config space
//! of every device (Status only ever written 0, so no storm activates a
//! device with rings nobody chose).

use std::time::Duration;

use crate::devmem::Window;
use crate::iomem::is_claimed;
use crate::virtio::reg;
use crate::{for_a_while, Ctx};

/// One random access of width 1, 2 or 4 at a random aligned offset.
fn poke(w: &Window, rng: &mut crate::Rng, write_ok: impl Fn(usize) -> bool) {
    let width = 1 << rng.below(3);
    let offset = (rng.below(w.len() as u64) as usize) & !(width - 1);
    let value = rng.bits() as u32;
    let write = rng.below(2) == 0 && write_ok(offset);
    match (write, width) {
        (true, 1) => w.write8(offset, value as u8),
        (true, 2) => w.write16(offset, value as u16),
        (true, _) => w.write32(offset, value),
        (false, 1) => drop(w.read8(offset)),
        (false, _) => drop(w.read32(offset & !3)),
    }
}

/// Pages 1 MiB past the last virtio window and 1 MiB before the first,
/// where nothing is mapped.
pub fn unmapped(ctx: &mut Ctx) -> Result<String, String> {
    let first = ctx.devices.first().map(|d| d.regs.phys).unwrap_or(0);
    let last = ctx.devices.last().map(|d| d.regs.phys).unwrap_or(0);
    let targets: Vec<u64> = [last + 0x10_0000, first.saturating_sub(0x10_0000)]
        .into_iter()
        .filter(|&a| a != 0 && !is_claimed(&ctx.regions, a) && a < ctx.ram_end.max(1 << 32))
        .collect();
    if targets.is_empty() {
        return Err("no unclaimed page near the virtio windows".into());
    }
    let mut accesses = 0;
    for &phys in &targets {
        let w = Window::map(phys, 4096).map_err(|e| format!("/dev/mem at {phys:#x}: {e}"))?;
        let rng = &mut ctx.rng;
        accesses += for_a_while(Duration::from_millis(1500), |_| poke(&w, rng, |_| true));
    }
    let hex: Vec<String> = targets.iter().map(|a| format!("{a:#x}")).collect();
    Ok(format!("pages={} accesses={accesses}", hex.join(",")))
}

/// Random accesses over every device's registers and config space.
pub fn registers(ctx: &mut Ctx) -> Result<String, String> {
    let mut accesses = 0;
    for dev in &ctx.devices {
        let rng = &mut ctx.rng;
        accesses += for_a_while(Duration::from_millis(1000), |i| {
            poke(&dev.regs, rng, |offset| (offset & !3) != reg::STATUS);
            if i % 64 == 0 {
                dev.set_status(0);
            }
        });
        if dev.regs.read32(reg::MAGIC) != 0x7472_6976 {
            return Err(format!("{} stopped answering", dev.name()));
        }
    }
    Ok(format!("accesses={accesses}"))
}
