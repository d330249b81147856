//! Attacks through descriptor chains: loops (in the ring and inside an
//! indirect table), nested indirect tables, `next` out of range, random
//! descriptors and heads, buffers outside RAM and over MMIO, and rings
//! laid over each other so the device's own writes make more work.

use std::time::{Duration, Instant};

use super::need;
use crate::dma::Buf;
use crate::virtio::{
    Device, Queue, D_INDIRECT, D_NEXT, D_WRITE, F_INDIRECT, ID_BLOCK, ID_NET, ID_RNG, NEEDS_RESET,
};
use crate::{for_a_while, Ctx, Rng};

/// Begins `dev`, attaches `queues` in order, DRIVER_OK; whether it took.
pub fn activate(dev: &Device, queues: &[&Queue], features: u64) -> bool {
    dev.begin(features);
    for (i, q) in (0u32..).zip(queues) {
        q.attach(dev, i);
    }
    dev.go()
}

/// Loops, nested indirect tables and a `next` past the queue, on blk and
/// rng: every chain must come back (or the device give up), never hang.
pub fn chain_loop(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 16);
    let looped = ctx.arena.alloc(16 * 8, 16);
    let nested = ctx.arena.alloc(16 * 2, 16);
    let buf = ctx.data.small.phys;
    let d = &q.desc;
    Queue::put_desc(d, 0, buf, 16, D_WRITE | D_NEXT, 1);
    Queue::put_desc(d, 1, buf, 16, D_WRITE | D_NEXT, 2);
    Queue::put_desc(d, 2, buf, 16, D_WRITE | D_NEXT, 0);
    Queue::put_desc(d, 3, buf, 16, D_WRITE | D_NEXT, 3);
    Queue::put_desc(d, 4, looped.phys, 16 * 8, D_INDIRECT, 0);
    for i in 0..8 {
        Queue::put_desc(&looped, i, buf, 16, D_WRITE | D_NEXT, ((i + 1) % 8) as u16);
    }
    Queue::put_desc(d, 5, nested.phys, 32, D_INDIRECT, 0);
    Queue::put_desc(&nested, 0, nested.phys, 32, D_INDIRECT | D_NEXT, 1);
    Queue::put_desc(&nested, 1, buf, 16, D_WRITE, 0);
    Queue::put_desc(d, 6, buf, 16, D_WRITE | D_NEXT, 200);
    let heads = [0u16, 3, 4, 5, 6];
    let mut report = Vec::new();
    for id in [ID_BLOCK, ID_RNG] {
        let dev = need(ctx, id, "blk/rng")?;
        let mut served = 0;
        let rounds = for_a_while(Duration::from_millis(1500), |_| {
            q.set_avail_idx(0);
            q.used.fill(0);
            heads.iter().for_each(|&h| q.push(h));
            activate(dev, &[&q], F_INDIRECT);
            dev.notify(0);
            q.wait_used(heads.len() as u16, Duration::from_millis(200));
            served += u64::from(q.used_idx());
            dev.set_status(0);
        });
        report.push(format!(
            "{}: {rounds} rounds, {served} chains returned",
            dev.name()
        ));
    }
    Ok(report.join("; "))
}

/// A descriptor with random fields whose buffers are in `pool` or
/// outside RAM and whose indirect tables are in `tables` (never written
/// by a device, so they stay of this kind).
fn garbage_desc(rng: &mut Rng, tables: &Buf, pool: &Buf, ram_end: u64) -> (u64, u32, u16, u16) {
    let flags = rng.below(8) as u16;
    let next = if rng.below(4) == 0 {
        rng.bits() as u16
    } else {
        rng.below(16) as u16
    };
    let (addr, len) = if flags & D_INDIRECT != 0 {
        let entries = (tables.len / 16) as u64;
        let first = rng.below(entries);
        let len = rng.below(entries - first + 1) * 16 + u64::from(rng.below(8) == 0);
        (tables.phys + first * 16, len)
    } else if rng.below(5) == 0 {
        (ram_end + rng.below(1 << 30), rng.bits())
    } else {
        let off = rng.below(pool.len as u64);
        (pool.phys + off, rng.below(pool.len as u64 - off + 1))
    };
    (addr, len as u32, flags, next)
}

fn fill_garbage(rng: &mut Rng, table: &Buf, tables: &Buf, pool: &Buf, ram_end: u64) {
    for i in 0..table.len / 16 {
        let (addr, len, flags, next) = garbage_desc(rng, tables, pool, ram_end);
        Queue::put_desc(table, i, addr, len, flags, next);
    }
}

/// Random descriptor tables, random heads and available indices, on
/// every queue of every device, for a while; each device is reset after
/// every try.
pub fn chain_garbage(ctx: &mut Ctx) -> Result<String, String> {
    let mut qs = [
        Queue::new(&mut ctx.arena, 256),
        Queue::new(&mut ctx.arena, 256),
    ];
    let tables = ctx.arena.alloc(32 << 10, 16);
    let pool = ctx.data.pool;
    let (ram_end, mut rng) = (ctx.ram_end, Rng(ctx.rng.bits() | 1));
    let mut tries = 0;
    let mut broke = 0;
    for dev in &ctx.devices {
        let nq = if dev.id == ID_NET { 2 } else { 1 };
        tries += for_a_while(Duration::from_millis(1500), |_| {
            fill_garbage(&mut rng, &tables, &tables, &pool, ram_end);
            for q in qs.iter_mut().take(nq) {
                fill_garbage(&mut rng, &q.desc, &tables, &pool, ram_end);
                q.used.fill(0);
                for slot in 0..256 {
                    let head = if rng.below(8) == 0 {
                        rng.bits() as u16
                    } else {
                        rng.below(256) as u16
                    };
                    q.avail.put(4 + 2 * slot, head.to_le_bytes());
                }
                let idx = if rng.below(4) == 0 {
                    rng.bits() as u16
                } else {
                    rng.below(256) as u16
                };
                q.set_avail_idx(idx);
            }
            let refs: Vec<&Queue> = qs.iter().take(nq).collect();
            activate(dev, &refs, F_INDIRECT);
            for i in 0..nq as u32 {
                dev.notify(i);
            }
            std::thread::sleep(Duration::from_millis(20));
            if dev.status() & NEEDS_RESET != 0 {
                broke += 1;
            }
            dev.set_status(0);
        });
    }
    Ok(format!("tries={tries} needs_reset={broke}"))
}

/// Requests whose buffers lie over MMIO, straddle the end of RAM or wrap
/// the address space: each must be refused, not served.
pub fn buffers_outside_ram(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 16);
    let mmio = ctx.devices[0].regs.phys;
    let bad = [
        (mmio, 0x200u32),
        (ctx.ram_end - 512, 4096),
        (u64::MAX - 100, 512),
        (ctx.ram_end, 512),
    ];
    let header = ctx.data.small;
    header.put(0, 0u32.to_le_bytes()); // IN
    header.put(8, 0u64.to_le_bytes());
    let mut returned = 0;
    let mut tries = 0;
    for id in [ID_BLOCK, ID_RNG] {
        let dev = need(ctx, id, "blk/rng")?;
        tries += for_a_while(Duration::from_millis(1000), |_| {
            for (i, &(addr, len)) in bad.iter().enumerate() {
                let at = 3 * i;
                if id == ID_BLOCK {
                    // header, bad data buffer, status byte in the header page
                    Queue::put_desc(&q.desc, at, header.phys, 16, D_NEXT, (at + 1) as u16);
                    Queue::put_desc(
                        &q.desc,
                        at + 1,
                        addr,
                        len,
                        D_WRITE | D_NEXT,
                        (at + 2) as u16,
                    );
                    Queue::put_desc(&q.desc, at + 2, header.phys + 64, 1, D_WRITE, 0);
                } else {
                    Queue::put_desc(&q.desc, at, addr, len, D_WRITE, 0);
                }
            }
            q.set_avail_idx(0);
            q.used.fill(0);
            (0..bad.len()).for_each(|i| q.push(3 * i as u16));
            activate(dev, &[&q], 0);
            dev.notify(0);
            q.wait_used(bad.len() as u16, Duration::from_millis(200));
            returned += u64::from(q.used_idx());
            dev.set_status(0);
        });
    }
    Ok(format!("tries={tries} chains_returned={returned}"))
}

/// rng with its used ring laid over its available ring (the used flags
/// are the available index), then with its one buffer over its own
/// available ring (every request it serves rewrites the ring): the
/// device must give up or come back later, and keep answering MMIO.
pub fn rings_overlap(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 16);
    let dev = need(ctx, ID_RNG, "rng")?;
    let mut slowest = Duration::ZERO;
    let mut tries = 0;
    for variant in 0..2 {
        tries += for_a_while(Duration::from_millis(1500), |_| {
            q.avail.fill(0);
            q.used.fill(0);
            let (target, len) = match variant {
                0 => (ctx.data.small.phys, 16),
                _ => (q.avail.phys, q.avail.len as u32),
            };
            for i in 0..16 {
                Queue::put_desc(&q.desc, i, target, len, D_WRITE, 0);
            }
            dev.begin(0);
            if variant == 0 {
                // The fuzz finding: avail ring at page + 2, used ring at
                // page + 4, so the used flags are the available index.
                q.avail.put(4, 1u16.to_le_bytes());
                q.avail.put(6, 0u16.to_le_bytes());
                dev.setup_queue(0, 16, q.desc.phys, q.avail.phys + 2, q.avail.phys + 4);
            } else {
                q.set_avail_idx(0);
                q.push(0);
                dev.setup_queue(0, 16, q.desc.phys, q.avail.phys, q.used.phys);
            }
            dev.go();
            dev.notify(0);
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            let _ = dev.status();
            slowest = slowest.max(t.elapsed());
            dev.set_status(0);
        });
    }
    Ok(format!(
        "tries={tries} slowest_status_read_us={}",
        slowest.as_micros()
    ))
}
