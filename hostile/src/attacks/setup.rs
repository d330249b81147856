//! Attacks on the set-up registers: invalid queue sizes and misaligned
//! ring addresses written thousands of times, rings outside RAM and over
//! MMIO, and activate/reset cycles with requests in flight. Each failed
//! set-up is a log line tandem must rate-limit.

use std::time::{Duration, Instant};

use super::need;
use crate::virtio::{reg, Queue, D_WRITE, ID_BLOCK, ID_RNG};
use crate::{for_a_while, Ctx};

/// On every device: QueueNum 3 and 1000, odd ring addresses, then
/// DRIVER_OK with the queue not ready (activation fails), then reset.
pub fn queue_setup_flood(ctx: &mut Ctx) -> Result<String, String> {
    let mut cycles = 0;
    for dev in &ctx.devices {
        cycles += for_a_while(Duration::from_millis(1500), |i| {
            dev.begin(0);
            let r = &dev.regs;
            r.write32(reg::QUEUE_SEL, 0);
            r.write32(reg::QUEUE_NUM, if i % 2 == 0 { 3 } else { 1000 });
            r.write32(reg::QUEUE_DESC_LOW, 0x1001);
            r.write32(reg::QUEUE_AVAIL_LOW, 0x1001);
            r.write32(reg::QUEUE_USED_LOW, 0x1002);
            dev.go();
            dev.set_status(0);
        });
    }
    Ok(format!("cycles={cycles}"))
}

/// Rings past the end of RAM, straddling it, at a wrapping address and
/// over the device's own registers; DRIVER_OK each time.
pub fn rings_outside_ram(ctx: &mut Ctx) -> Result<String, String> {
    let end = ctx.ram_end;
    let candidates = [
        (end + 0x10_0000, end + 0x20_0000, end + 0x30_0000),
        (end - 0x800, end - 0x100, end - 0x200),
        (u64::MAX - 0xfff, u64::MAX - 0x1ff, u64::MAX - 0x7ff),
    ];
    let mut refused = 0;
    let mut tries = 0;
    for dev in &ctx.devices {
        let own = dev.regs.phys;
        let n = for_a_while(Duration::from_millis(800), |i| {
            let (desc, avail, used) = match i % 4 {
                3 => (own, own + 0x80, own + 0x100),
                k => candidates[k as usize],
            };
            dev.begin(0);
            let size = dev.queue_max(0);
            dev.setup_queue(0, size, desc, avail, used);
            if !dev.go() {
                refused += 1;
            }
            dev.set_status(0);
        });
        tries += n;
    }
    if refused != tries {
        return Err(format!(
            "{} of {tries} activations with rings outside RAM succeeded",
            tries - refused
        ));
    }
    Ok(format!("activations={tries} all refused"))
}

/// blk and rng activated with requests queued, then reset at once, over
/// and over; the slowest reset and DRIVER_OK writes are reported.
pub fn activate_reset_cycles(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 16);
    let buf = ctx.data.blk;
    for i in 0..16 {
        Queue::put_desc(&q.desc, i, buf.phys + 4096 * i as u64, 4096, D_WRITE, 0);
    }
    let mut slowest_reset = Duration::ZERO;
    let mut slowest_go = Duration::ZERO;
    let mut cycles = 0;
    for id in [ID_RNG, ID_BLOCK] {
        let dev = need(ctx, id, "rng/blk")?;
        cycles += for_a_while(Duration::from_millis(1500), |_| {
            dev.begin(0);
            q.set_avail_idx(0);
            q.used.fill(0);
            for head in 0..16 {
                q.push(head);
            }
            q.attach(dev, 0);
            let t = Instant::now();
            dev.go();
            slowest_go = slowest_go.max(t.elapsed());
            dev.notify(0);
            let t = Instant::now();
            dev.set_status(0);
            slowest_reset = slowest_reset.max(t.elapsed());
        });
    }
    Ok(format!(
        "cycles={cycles} slowest_reset_us={} slowest_driver_ok_us={}",
        slowest_reset.as_micros(),
        slowest_go.as_micros()
    ))
}
