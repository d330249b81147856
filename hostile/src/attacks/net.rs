//! Attacks on virtio-net: receive heads that each name a 1 MiB indirect
//! table (65536 descriptors on one buffer: memory amplification before
//! the chain cap), receive buffers of one byte each with mergeable
//! buffers (a frame would need more segments than the device holds), and
//! oversized, runt and malformed transmit frames. The emulated host sends
//! 1442-byte frames into the TAP meanwhile (ci/hostile-host.sh).

use std::time::Duration;

use super::chains::activate;
use super::need;
use crate::virtio::{
    Queue, D_INDIRECT, D_NEXT, D_WRITE, F_INDIRECT, F_NET_MRG_RXBUF, ID_NET, NEEDS_RESET,
};
use crate::Ctx;

const RX: u32 = 0;
const TX: u32 = 1;

/// Posts `heads` receive heads each naming indirect `table`, activates
/// with `features`, waits `wait`; returns (NEEDS_RESET set, used index).
fn post_rx(
    ctx: &mut Ctx,
    table_entries: usize,
    seg: u32,
    features: u64,
    wait: Duration,
) -> Result<(bool, u16), String> {
    let mut rx = Queue::new(&mut ctx.arena, 256);
    let tx = Queue::new(&mut ctx.arena, 256);
    let Some(table) = ctx.arena.try_alloc(table_entries * 16, 16) else {
        return Err(format!(
            "no {} KiB contiguous for the table",
            (table_entries * 16) >> 10
        ));
    };
    let dev = need(ctx, ID_NET, "net")?;
    let buf = ctx.data.pool.phys;
    for i in 0..table_entries {
        let last = i + 1 == table_entries;
        let flags = if last { D_WRITE } else { D_WRITE | D_NEXT };
        Queue::put_desc(
            &table,
            i,
            buf + (i % 4096) as u64,
            seg,
            flags,
            (i + 1) as u16,
        );
    }
    for i in 0..256 {
        Queue::put_desc(&rx.desc, i, table.phys, table.len as u32, D_INDIRECT, 0);
        rx.push(i as u16);
    }
    activate(dev, &[&rx, &tx], features | F_INDIRECT);
    dev.notify(RX);
    std::thread::sleep(wait);
    Ok((dev.status() & NEEDS_RESET != 0, rx.used_idx()))
}

/// 256 receive heads on one 1 MiB indirect table; then 256 heads of 64
/// one-byte buffers with MRG_RXBUF. Frames arrive from the host.
pub fn rx_amplify(ctx: &mut Ctx) -> Result<String, String> {
    let (huge_reset, huge_used) = post_rx(ctx, 65536, 4096, 0, Duration::from_secs(3))?;
    ctx.reset_all();
    ctx.arena.reset();
    let (tiny_reset, tiny_used) = post_rx(ctx, 64, 1, F_NET_MRG_RXBUF, Duration::from_secs(3))?;
    Ok(format!(
        "1MiB-tables: needs_reset={huge_reset} used={huge_used}; 1-byte-buffers: needs_reset={tiny_reset} used={tiny_used}"
    ))
}

/// Transmit chains: 320 KiB frames, headers asking for segmentation and
/// checksums that do not fit the frame, and 4-byte runts.
pub fn tx_oversized(ctx: &mut Ctx) -> Result<String, String> {
    let rx = Queue::new(&mut ctx.arena, 256);
    let mut tx = Queue::new(&mut ctx.arena, 256);
    let dev = need(ctx, ID_NET, "net")?;
    let (small, data) = (ctx.data.small, ctx.data.blk);
    // Header 1 at small+128: all zero. Header 2 at small+160: NEEDS_CSUM,
    // gso_type 0x7 (unknown), gso_size 1, csum_start past the frame.
    small.put(160, [1u8, 7]);
    small.put(162, 40u16.to_le_bytes());
    small.put(164, 1u16.to_le_bytes());
    small.put(166, 60000u16.to_le_bytes());
    small.put(168, 9000u16.to_le_bytes());
    let mut frames = 0;
    let mut sent = 0;
    let rounds = crate::for_a_while(Duration::from_millis(1500), |_| {
        tx.set_avail_idx(0);
        tx.used.fill(0);
        let mut i = 0;
        while i + 6 <= 255 {
            // 320 KiB: header and five 64 KiB pieces.
            Queue::put_desc(&tx.desc, i, small.phys + 128, 12, D_NEXT, (i + 1) as u16);
            for k in 1..=5 {
                let flags = if k < 5 { D_NEXT } else { 0 };
                Queue::put_desc(
                    &tx.desc,
                    i + k,
                    data.phys,
                    64 << 10,
                    flags,
                    (i + k + 1) as u16,
                );
            }
            tx.push(i as u16);
            Queue::put_desc(
                &tx.desc,
                i + 6,
                small.phys + 160,
                12,
                D_NEXT,
                (i + 7) as u16,
            );
            if i + 7 < 256 {
                Queue::put_desc(&tx.desc, i + 7, data.phys, 1500, 0, 0);
                tx.push((i + 6) as u16);
            }
            i += 8;
            frames += 2;
        }
        Queue::put_desc(&tx.desc, 255, small.phys + 128, 4, 0, 0);
        tx.push(255);
        activate(dev, &[&rx, &tx], 0);
        dev.notify(TX);
        tx.wait_used(tx.avail_idx(), Duration::from_millis(300));
        sent += u64::from(tx.used_idx());
        dev.set_status(0);
    });
    Ok(format!("rounds={rounds} frames={frames} returned={sent}"))
}
