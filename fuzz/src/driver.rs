//! The driver's side of a split virtqueue, written into guest memory from
//! structured fuzz input: descriptors (chained or in indirect tables,
//! tampered with), the available ring, `used_event`, raw byte pokes.

use arbitrary::Arbitrary;
use guest_memory::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{DATA_START, QUEUE_STRIDE, RAM_END};

/// Where one split virtqueue lives.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Queue size (a power of two).
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

impl Layout {
    /// Queue `index` of the standard layout, with `size` entries.
    pub fn standard(index: u64, size: u16) -> Self {
        let base = index * QUEUE_STRIDE;
        Self {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x1400,
        }
    }

    /// The device side, as a transport hands it to a device at DRIVER_OK.
    pub fn queue(&self, max: u16, event_idx: bool) -> Queue {
        let mut q = Queue::new(max).expect("queue");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }

    pub(crate) fn used_ring_len(&self) -> u64 {
        4 + 8 * u64::from(self.size) + 2
    }
}

/// A guest address: mostly in or near RAM, sometimes anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Addr {
    /// `DATA_START + n`, wrapped to a little past the end of RAM.
    Data(u16),
    /// Anywhere in the low 128 KiB (rings included).
    Low(u32),
    /// Any 64-bit address.
    Raw(u64),
}

impl Addr {
    fn resolve(self) -> u64 {
        match self {
            Addr::Data(n) => DATA_START + u64::from(n) % (RAM_END + 0x100 - DATA_START),
            Addr::Low(n) => u64::from(n) % 0x2_0000,
            Addr::Raw(a) => a,
        }
    }
}

/// One descriptor as the fuzzer describes it.
#[derive(Arbitrary, Clone, Debug)]
pub struct Desc {
    /// Buffer address.
    pub addr: Addr,
    /// Buffer length; small lengths are likelier.
    pub len: Len,
    /// VRING_DESC_F_WRITE.
    pub writable: bool,
    /// Flag bits to add (NEXT, INDIRECT, garbage) and a `next` to use
    /// instead of the natural one.
    pub tamper: Option<(u16, u16)>,
}

/// A buffer length.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Len {
    /// 0..=255.
    Small(u8),
    /// 0..=65535.
    Medium(u16),
    /// Anything.
    Raw(u32),
}

impl Len {
    fn resolve(self) -> u32 {
        match self {
            Len::Small(n) => n.into(),
            Len::Medium(n) => n.into(),
            Len::Raw(n) => n,
        }
    }
}

/// One chain: its descriptors, optionally behind an indirect table.
#[derive(Arbitrary, Clone, Debug)]
pub struct ChainSpec {
    /// The buffers, in order.
    pub descs: Vec<Desc>,
    /// Put them in an indirect table at this data-area address instead.
    pub indirect: Option<u16>,
}

/// A raw write into guest memory, applied after the rings are laid out
/// (so it can corrupt them).
#[derive(Arbitrary, Clone, Debug)]
pub struct Poke {
    /// Address (mod RAM_END).
    pub at: u32,
    /// Bytes written (clipped to RAM).
    pub bytes: Vec<u8>,
}

/// What the driver queued on one virtqueue.
#[derive(Arbitrary, Clone, Debug)]
pub struct QueueInput {
    /// log2 of the queue size, reduced to the device's maximum.
    pub size_log2: u8,
    /// The chains made available, in order.
    pub chains: Vec<ChainSpec>,
    /// `used_event` (EVENT_IDX): when the driver wants an interrupt.
    pub used_event: u16,
    /// Replace the available index with this (a driver running ahead).
    pub avail_idx: Option<u16>,
}

impl QueueInput {
    /// The queue size for a device whose maximum is `max`.
    pub fn size(&self, max: u16) -> u16 {
        let log2 = u32::from(self.size_log2) % (max.ilog2() + 1);
        1 << log2
    }
}

fn put(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) {
    // Out-of-RAM addresses come from the fuzzer: skip what does not fit.
    let _ = mem.write_slice(bytes, GuestAddress(addr));
}

fn write_desc(mem: &GuestMemoryMmap, at: u64, desc: &Desc, next: Option<u16>) {
    let mut flags = if desc.writable { VRING_DESC_F_WRITE } else { 0 } as u16;
    let mut next = next.map_or(0, |n| {
        flags |= VRING_DESC_F_NEXT as u16;
        n
    });
    if let Some((extra, over)) = desc.tamper {
        flags |= extra;
        next = over;
    }
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&desc.addr.resolve().to_le_bytes());
    raw[8..12].copy_from_slice(&desc.len.resolve().to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    put(mem, at, &raw);
}

/// Lays out `input` on the queue at `layout` (zeroing its rings first).
pub fn write_queue(mem: &GuestMemoryMmap, layout: &Layout, input: &QueueInput) {
    put(mem, layout.desc, &vec![0; 16 * usize::from(layout.size)]);
    put(mem, layout.avail, &[0; 0x400]);
    put(mem, layout.used, &vec![0; layout.used_ring_len() as usize]);
    let size = layout.size;
    let mut next_desc = 0u16;
    let mut avail_idx = 0u16;
    for chain in &input.chains {
        if chain.descs.is_empty() {
            continue;
        }
        let head = next_desc;
        match chain.indirect {
            Some(table) => {
                let table = DATA_START + u64::from(table) % (RAM_END - DATA_START);
                for (i, desc) in (0u16..).zip(&chain.descs) {
                    let next = (usize::from(i) + 1 < chain.descs.len()).then_some(i + 1);
                    write_desc(mem, table + 16 * u64::from(i), desc, next);
                }
                let len = 16 * chain.descs.len() as u32;
                let mut raw = [0u8; 16];
                raw[..8].copy_from_slice(&table.to_le_bytes());
                raw[8..12].copy_from_slice(&len.to_le_bytes());
                raw[12..14].copy_from_slice(&(VRING_DESC_F_INDIRECT as u16).to_le_bytes());
                put(mem, layout.desc + 16 * u64::from(head), &raw);
                next_desc = (next_desc + 1) % size;
            }
            None => {
                for (i, desc) in chain.descs.iter().enumerate() {
                    let index = next_desc;
                    next_desc = (next_desc + 1) % size;
                    let next = (i + 1 < chain.descs.len()).then_some(next_desc);
                    write_desc(mem, layout.desc + 16 * u64::from(index), desc, next);
                }
            }
        }
        let slot = layout.avail + 4 + 2 * u64::from(avail_idx % size);
        put(mem, slot, &head.to_le_bytes());
        avail_idx = avail_idx.wrapping_add(1);
    }
    let idx = input.avail_idx.unwrap_or(avail_idx);
    put(mem, layout.avail + 2, &idx.to_le_bytes());
    let used_event = layout.avail + 4 + 2 * u64::from(size);
    put(mem, used_event, &input.used_event.to_le_bytes());
}

/// Applies raw pokes.
pub fn apply_pokes(mem: &GuestMemoryMmap, pokes: &[Poke]) {
    for poke in pokes {
        let at = u64::from(poke.at) % RAM_END;
        let len = poke.bytes.len().min((RAM_END - at) as usize);
        put(mem, at, &poke.bytes[..len]);
    }
}
