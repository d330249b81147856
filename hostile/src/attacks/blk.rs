//! Attacks on virtio-blk: indirect tables of thousands of descriptors
//! naming one buffer, requests larger than the device's limit, requests
//! without a status byte (a log line each), and resets while the worker
//! is in the middle of 16 MiB requests.

use std::time::{Duration, Instant};

use super::chains::activate;
use super::need;
use crate::dma::Buf;
use crate::virtio::{Queue, D_INDIRECT, D_NEXT, D_WRITE, F_INDIRECT, ID_BLOCK};
use crate::{for_a_while, Ctx};

const IN: u32 = 0;
const OUT: u32 = 1;
const IOERR: u8 = 1;

/// Writes a request header of `kind` for `sector` at `at` in `buf`.
fn header(buf: &Buf, at: usize, kind: u32, sector: u64) {
    buf.put(at, kind.to_le_bytes());
    buf.put(at + 4, 0u32.to_le_bytes());
    buf.put(at + 8, sector.to_le_bytes());
}

/// Fills indirect `table` with a request: header, `data` descriptors of
/// `len` bytes each at `data_at`, status byte; the data is device-writable
/// for IN.
fn request_table(
    table: &Buf,
    hdr: u64,
    kind: u32,
    data_at: u64,
    len: u32,
    data: usize,
    status: u64,
) {
    let data_flags = if kind == IN { D_WRITE | D_NEXT } else { D_NEXT };
    Queue::put_desc(table, 0, hdr, 16, D_NEXT, 1);
    for i in 1..=data {
        Queue::put_desc(table, i, data_at, len, data_flags, (i + 1) as u16);
    }
    Queue::put_desc(table, data + 1, status, 1, D_WRITE, 0);
}

/// 256 heads naming indirect tables of 4096 descriptors on one 4 KiB
/// buffer (reads and writes), then writes of 200 × 128 KiB (over the
/// request limit): the first must come back unserved, the second IOERR.
pub fn indirect_huge(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 256);
    let tables = [
        ctx.arena.alloc(4096 * 16, 16),
        ctx.arena.alloc(4096 * 16, 16),
    ];
    let big = ctx.arena.alloc(202 * 16, 16);
    let dev = need(ctx, ID_BLOCK, "blk")?;
    let (small, data) = (ctx.data.small, ctx.data.blk);
    header(&small, 0, IN, 0);
    header(&small, 16, OUT, 0);
    header(&small, 32, OUT, 0);
    request_table(
        &tables[0],
        small.phys,
        IN,
        data.phys,
        4096,
        4094,
        small.phys + 64,
    );
    request_table(
        &tables[1],
        small.phys + 16,
        OUT,
        data.phys,
        4096,
        4094,
        small.phys + 65,
    );
    // 200 × 128 KiB = 25 MiB of writes: over seg_max × size_max.
    request_table(
        &big,
        small.phys + 32,
        OUT,
        data.phys,
        128 << 10,
        200,
        small.phys + 66,
    );
    let mut returned = 0;
    let mut ioerr = 0;
    let start = Instant::now();
    let rounds = for_a_while(Duration::from_millis(2000), |_| {
        q.set_avail_idx(0);
        q.used.fill(0);
        small.put(66, [0xffu8]);
        for i in 0..255 {
            let t = &tables[i % 2];
            Queue::put_desc(&q.desc, i, t.phys, t.len as u32, D_INDIRECT, 0);
            q.push(i as u16);
        }
        Queue::put_desc(&q.desc, 255, big.phys, big.len as u32, D_INDIRECT, 0);
        q.push(255);
        activate(dev, &[&q], F_INDIRECT);
        dev.notify(0);
        q.wait_used(256, Duration::from_secs(2));
        returned += u64::from(q.used_idx());
        ioerr += u64::from(small.get8(66) == IOERR);
        dev.set_status(0);
    });
    if ioerr != rounds {
        return Err(format!(
            "oversized write answered IOERR in {ioerr} of {rounds} rounds"
        ));
    }
    Ok(format!(
        "rounds={rounds} chains_returned={returned} oversized_ioerr={ioerr} ms={}",
        start.elapsed().as_millis()
    ))
}

/// 256 requests at a time whose last descriptor is device-readable: no
/// status byte to report through (the device logs, rate-limited).
pub fn no_status(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 256);
    let dev = need(ctx, ID_BLOCK, "blk")?;
    let small = ctx.data.small;
    header(&small, 0, OUT, 0);
    for i in 0..128 {
        Queue::put_desc(&q.desc, 2 * i, small.phys, 16, D_NEXT, (2 * i + 1) as u16);
        Queue::put_desc(&q.desc, 2 * i + 1, ctx.data.blk.phys, 512, 0, 0);
    }
    let mut returned = 0;
    let rounds = for_a_while(Duration::from_millis(1500), |_| {
        q.set_avail_idx(0);
        q.used.fill(0);
        (0..128).for_each(|i| q.push(2 * i));
        activate(dev, &[&q], 0);
        dev.notify(0);
        q.wait_used(128, Duration::from_millis(500));
        returned += u64::from(q.used_idx());
        dev.set_status(0);
    });
    Ok(format!(
        "rounds={rounds} requests={} returned={returned}",
        rounds * 128
    ))
}

/// 256 heads of 16 MiB requests (reads and writes through one 64 KiB
/// buffer), a reset a few milliseconds in, DRIVER_OK again at once: the
/// reset must return at once, DRIVER_OK within about a second.
pub fn reset_during_io(ctx: &mut Ctx) -> Result<String, String> {
    let mut q = Queue::new(&mut ctx.arena, 256);
    let tables = [ctx.arena.alloc(256 * 16, 16), ctx.arena.alloc(256 * 16, 16)];
    let dev = need(ctx, ID_BLOCK, "blk")?;
    let (small, data) = (ctx.data.small, ctx.data.blk);
    header(&small, 0, IN, 0);
    header(&small, 16, OUT, 0);
    request_table(
        &tables[0],
        small.phys,
        IN,
        data.phys,
        64 << 10,
        254,
        small.phys + 64,
    );
    request_table(
        &tables[1],
        small.phys + 16,
        OUT,
        data.phys,
        64 << 10,
        254,
        small.phys + 65,
    );
    let (mut slowest_reset, mut slowest_go) = (Duration::ZERO, Duration::ZERO);
    let mut refused = 0;
    let rounds = for_a_while(Duration::from_millis(3000), |round| {
        q.set_avail_idx(0);
        q.used.fill(0);
        for i in 0..256 {
            let t = &tables[(i + round as usize) % 2];
            Queue::put_desc(&q.desc, i, t.phys, t.len as u32, D_INDIRECT, 0);
            q.push(i as u16);
        }
        let t = Instant::now();
        if !activate(dev, &[&q], F_INDIRECT) {
            refused += 1;
        }
        slowest_go = slowest_go.max(t.elapsed());
        dev.notify(0);
        std::thread::sleep(Duration::from_millis(5 + round % 20));
        let t = Instant::now();
        dev.set_status(0);
        slowest_reset = slowest_reset.max(t.elapsed());
    });
    Ok(format!(
        "rounds={rounds} slowest_reset_us={} slowest_driver_ok_us={} activations_refused={refused}",
        slowest_reset.as_micros(),
        slowest_go.as_micros()
    ))
}
