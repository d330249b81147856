//! Shared pieces of tandem's fuzz targets: a small guest memory, the
//! driver side of split virtqueues written into it from structured fuzz
//! input (descriptors, indirect tables, available ring, raw byte pokes),
//! the virtio-mmio bring-up a driver performs, and the oracles the device
//! targets check afterwards: a device writes guest memory only inside
//! device-writable buffers and its own used ring, never reports more
//! bytes written into a chain than the chain can hold, and reports none
//! for a chain longer than the descriptor cap (it drops those).

use arbitrary::Arbitrary;
use std::cell::RefCell;
use std::sync::OnceLock;

use devices::virtio::{ConsoleOutput, MmioTransport, MAX_CHAIN_DESCRIPTORS};
use devices::BusDevice;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: 64 KiB at 0, a 4 KiB hole, 4 KiB more (buffers may straddle
/// the hole or run past the end).
pub const RAM: [(u64, usize); 2] = [(0, 0x1_0000), (0x1_1000, 0x1000)];
/// One past the last guest-physical address.
pub const RAM_END: u64 = 0x1_2000;
/// Where queue `i`'s rings go: descriptors at `i * QUEUE_STRIDE`, the
/// available ring 4 KiB later, the used ring 5 KiB later.
pub const QUEUE_STRIDE: u64 = 0x2000;
/// First byte of the data area (after two queues' rings).
pub const DATA_START: u64 = 0x4000;

/// The run's guest memory, zeroed: one mapping for the whole fuzzing
/// run, cleared at the start of each input (mapping, faulting in and
/// unmapping fresh memory per input cost more than the device itself).
/// Devices get clones of it; each input's transport or handler is gone
/// before the next input clears it.
pub fn guest_memory() -> GuestMemoryMmap {
    static MEMORY: OnceLock<GuestMemoryMmap> = OnceLock::new();
    let mem = MEMORY.get_or_init(|| {
        let ranges: Vec<(GuestAddress, usize)> =
            RAM.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
        GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
    });
    static ZEROS: [u8; RAM_END as usize] = [0; RAM_END as usize];
    for &(base, len) in &RAM {
        mem.write_slice(&ZEROS[..len], GuestAddress(base))
            .expect("RAM writable");
    }
    mem.clone()
}

/// All of guest memory as bytes at one moment (holes read as 0): the
/// "before" and "after" the oracles compare, and a descriptor source
/// ([`Descriptors`]) for what the driver laid out. Reuse one across
/// inputs ([`Image::take`]) to keep allocations out of the loop.
pub struct Image {
    bytes: Vec<u8>,
}

thread_local! {
    /// Buffers of dropped images, for the next ones: a fresh 72 KiB
    /// buffer per image meant page faults on every input.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Default for Image {
    fn default() -> Self {
        let bytes = SPARE.with_borrow_mut(Vec::pop);
        Self {
            // Only RAM is ever written into a buffer: holes stay zero.
            bytes: bytes.unwrap_or_else(|| vec![0; RAM_END as usize]),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        SPARE.with_borrow_mut(|spare| spare.push(bytes));
    }
}

impl Image {
    /// An image of `mem` now.
    pub fn of(mem: &GuestMemoryMmap) -> Self {
        let mut image = Self::default();
        image.take(mem);
        image
    }

    /// Overwrites this image with `mem` as it is now.
    pub fn take(&mut self, mem: &GuestMemoryMmap) {
        for &(base, len) in &RAM {
            let range = base as usize..base as usize + len;
            mem.read_slice(&mut self.bytes[range], GuestAddress(base))
                .expect("RAM readable");
        }
    }

    /// `len` bytes at `addr`, if all of them are RAM (as guest memory
    /// would read them).
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        let in_ram = |&(base, size): &(u64, usize)| base <= addr && end <= base + size as u64;
        RAM.iter()
            .any(in_ram)
            .then(|| &self.bytes[addr as usize..end as usize])
    }

    /// The bytes, holes included (as zeros).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Where the oracles read descriptors and rings from: live guest memory
/// or an [`Image`] of it.
pub trait Descriptors {
    /// `N` bytes at `addr`, if they are all RAM.
    fn read<const N: usize>(&self, addr: u64) -> Option<[u8; N]>;

    /// Appends the descriptors of the `count`-entry table at `table` that
    /// lie in RAM (`(addr, len, flags, next)`).
    fn table(&self, table: u64, count: u64, out: &mut Vec<(u64, u32, u16, u16)>) {
        for j in 0..count {
            if let Some(e) = table.checked_add(16 * j).and_then(|at| read_desc(self, at)) {
                out.push(e);
            }
        }
    }
}

impl Descriptors for GuestMemoryMmap {
    fn read<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.read_slice(&mut out, GuestAddress(addr)).ok()?;
        Some(out)
    }
}

impl Descriptors for Image {
    fn read<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        self.get(addr, N)?.try_into().ok()
    }

    // Region by region, without a RAM check per entry: tables are up to
    // 4096 entries long.
    fn table(&self, table: u64, count: u64, out: &mut Vec<(u64, u32, u16, u16)>) {
        let end = table.saturating_add(16 * count);
        for &(base, size) in &RAM {
            let region_end = base + size as u64;
            // The first entry at or after `base`; whole entries up to
            // `region_end`.
            let first = if table >= base {
                table
            } else {
                table + (base - table).div_ceil(16) * 16
            };
            let stop = end.min(region_end);
            if first >= stop {
                continue;
            }
            let whole = (stop - first) / 16 * 16;
            let bytes = &self.bytes[first as usize..(first + whole) as usize];
            out.extend(bytes.chunks_exact(16).map(decode_desc));
        }
    }
}

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

    fn used_ring_len(&self) -> u64 {
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

fn read_desc(mem: &(impl Descriptors + ?Sized), at: u64) -> Option<(u64, u32, u16, u16)> {
    let raw: [u8; 16] = mem.read(at)?;
    Some(decode_desc(&raw))
}

/// A descriptor's 16 bytes as `(addr, len, flags, next)`.
fn decode_desc(raw: &[u8]) -> (u64, u32, u16, u16) {
    let raw: &[u8; 16] = raw.try_into().expect("16 bytes");
    let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = *raw;
    (
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u32::from_le_bytes([l0, l1, l2, l3]),
        u16::from_le_bytes([f0, f1]),
        u16::from_le_bytes([n0, n1]),
    )
}

/// Every descriptor of the table at `layout` and of the indirect tables it
/// names (as memory holds them now): `(addr, len, flags, next)`.
fn all_descs(mem: &impl Descriptors, layout: &Layout) -> Vec<(u64, u32, u16, u16)> {
    let mut out = Vec::new();
    // Tables named more than once add nothing new: read each once.
    let mut tables = Vec::new();
    for i in 0..u64::from(layout.size) {
        let Some(d) = read_desc(mem, layout.desc + 16 * i) else {
            continue;
        };
        out.push(d);
        if d.2 & VRING_DESC_F_INDIRECT as u16 != 0 && !tables.contains(&(d.0, d.1)) {
            tables.push((d.0, d.1));
            mem.table(d.0, u64::from(d.1 / 16).min(4096), &mut out);
        }
    }
    out
}

/// Half-open address ranges, merged, sorted and disjoint, so that a
/// lookup is a binary search (inputs name thousands of buffers).
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// The union of `ranges` (empty ones dropped).
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.retain(|&(s, e)| s < e);
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Self(merged)
    }

    /// The merged range holding `addr`, if any.
    fn find(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.0.partition_point(|&(_, e)| e <= addr);
        self.0.get(i).copied().filter(|&(s, _)| s <= addr)
    }

    /// Whether `addr` is in one of the ranges.
    pub fn contains(&self, addr: u64) -> bool {
        self.find(addr).is_some()
    }

    /// Whether all of `start..end` (not empty) is in the ranges.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.find(start).is_some_and(|(_, e)| end <= e)
    }

    /// Whether any of `start..end` is in the ranges.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }
}

/// What a device may change in guest memory: its used rings and every
/// device-writable buffer any descriptor names.
pub struct Allowed {
    ranges: Ranges,
    /// A writable buffer overlaps a descriptor table, an available ring or
    /// a used ring:
    /// the device may legitimately rewrite the chains it is about to walk,
    /// so nothing can be predicted from memory as it was.
    self_modifying: bool,
}

impl Allowed {
    /// Computed from memory as the driver left it, before the device runs.
    pub fn new(mem: &impl Descriptors, layouts: &[Layout]) -> Self {
        let mut used_rings = Vec::new();
        let mut writable = Vec::new();
        let mut driver_owned = Vec::new();
        for layout in layouts {
            let used = (layout.used, layout.used + layout.used_ring_len());
            used_rings.push(used);
            let size = u64::from(layout.size);
            driver_owned.push((layout.desc, layout.desc + 16 * size));
            driver_owned.push((layout.avail, layout.avail + 6 + 2 * size));
            // Device data landing in a used ring garbles its elements.
            driver_owned.push(used);
            for (addr, len, flags, _) in all_descs(mem, layout) {
                let end = addr.saturating_add(u64::from(len));
                if flags & VRING_DESC_F_WRITE as u16 != 0 {
                    writable.push((addr, end));
                }
                if flags & VRING_DESC_F_INDIRECT as u16 != 0 {
                    driver_owned.push((addr, end));
                }
            }
        }
        let driver_owned = Ranges::new(driver_owned);
        let self_modifying = writable.iter().any(|&(s, e)| driver_owned.overlaps(s, e));
        used_rings.extend(writable);
        Self {
            ranges: Ranges::new(used_rings),
            self_modifying,
        }
    }

    /// Whether the device may rewrite its own descriptors (see
    /// [`Allowed::check`]); [`check_used`] is meaningless then too.
    pub fn self_modifying(&self) -> bool {
        self.self_modifying
    }

    /// Panics if a byte changed outside the allowed ranges (unless the
    /// driver let the device rewrite descriptors or the available ring).
    /// Compares block by block and looks at single bytes only in blocks
    /// that changed and are not wholly allowed: a byte loop over all of
    /// RAM (instrumented like all fuzz target code) cost more than the
    /// device run it checks.
    pub fn check(&self, before: &Image, after: &Image) {
        if self.self_modifying {
            return;
        }
        const BLOCK: usize = 256;
        let blocks = before
            .bytes()
            .chunks(BLOCK)
            .zip(after.bytes().chunks(BLOCK));
        for (n, (a, b)) in blocks.enumerate() {
            let start = (n * BLOCK) as u64;
            if a == b || self.ranges.covers(start, start + a.len() as u64) {
                continue;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    let addr = start + i as u64;
                    assert!(
                        self.ranges.contains(addr),
                        "device wrote guest byte {addr:#x} outside every writable buffer and used ring"
                    );
                }
            }
        }
    }
}

/// A chain as a device pops it (`pop_chain`, `Chain::new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Buffers yielded (indirect table descriptors not counted), up to
    /// one past the cap.
    pub descriptors: usize,
    /// Bytes of those buffers, either way.
    pub bytes: u64,
    /// Device-writable bytes of those buffers.
    pub writable: u64,
    /// More buffers than the cap (the queue size, at most
    /// `MAX_CHAIN_DESCRIPTORS`): the device drops the chain, keeping no
    /// buffers.
    pub too_long: bool,
}

impl Walk {
    /// An upper bound of what a device may report as used for the chain:
    /// its writable bytes, nothing for a chain over the cap.
    pub fn capacity(&self) -> u64 {
        if self.too_long {
            0
        } else {
            self.writable
        }
    }
}

/// The chain at `head`, walked as virtio-queue walks it (so a looping
/// chain counts a buffer once per visit, up to the queue size, and an
/// indirect table may add up to its own length: what a device sees) and
/// cut off as `Chain::new` cuts it, one buffer past the descriptor cap.
pub fn walk(mem: &impl Descriptors, layout: &Layout, head: u16) -> Walk {
    let cap = usize::from(layout.size.min(MAX_CHAIN_DESCRIPTORS));
    let (mut table, mut table_len, mut ttl) = (layout.desc, layout.size, layout.size);
    let (mut index, mut indirect) = (head, false);
    let (mut descriptors, mut bytes, mut writable, mut yielded) = (0usize, 0u64, 0u64, 0u32);
    while ttl > 0 && index < table_len && descriptors <= cap {
        let Some(at) = table.checked_add(16 * u64::from(index)) else {
            break;
        };
        let Some((addr, len, flags, next)) = read_desc(mem, at) else {
            break;
        };
        if flags & VRING_DESC_F_INDIRECT as u16 != 0 {
            if indirect || len % 16 != 0 || len / 16 > u32::from(u16::MAX) {
                break;
            }
            (table, table_len, ttl) = (addr, (len / 16) as u16, (len / 16) as u16);
            (index, indirect) = (0, true);
            continue;
        }
        let Some(sum) = yielded.checked_add(len) else {
            break;
        };
        yielded = sum;
        descriptors += 1;
        bytes += u64::from(len);
        if flags & VRING_DESC_F_WRITE as u16 != 0 {
            writable += u64::from(len);
        }
        if flags & VRING_DESC_F_NEXT as u16 == 0 {
            break;
        }
        index = next;
        ttl -= 1;
    }
    Walk {
        descriptors,
        bytes,
        writable,
        too_long: descriptors > cap,
    }
}

/// One used-ring entry the device published, with its chain as the
/// driver had laid it out.
#[derive(Clone, Copy, Debug)]
pub struct Used {
    /// Head descriptor index.
    pub id: u16,
    /// Bytes the device says it wrote.
    pub len: u32,
    /// The chain (in the memory the driver left).
    pub chain: Walk,
}

/// Checks the used ring the device filled: ids name descriptors of the
/// queue and lengths fit the chains — a chain over the descriptor cap is
/// dropped with length 0. Chains are walked in `before`, memory as the
/// driver left it (a buffer overlapping the descriptors would let the
/// device change them); the used ring is read in `after`. Returns the
/// entries checked, for device-specific oracles.
pub fn check_used(before: &Image, after: &Image, layout: &Layout) -> Vec<Used> {
    let Some(used_idx) = after.read(layout.used + 2).map(u16::from_le_bytes) else {
        return Vec::new();
    };
    let old = before.read(layout.used + 2).map_or(0, u16::from_le_bytes);
    if used_idx == old {
        // Nothing published (the ring may hold the fuzzer's garbage).
        return Vec::new();
    }
    let mut checked = Vec::new();
    for i in 0..used_idx.min(layout.size) {
        let at = layout.used + 4 + 8 * u64::from(i);
        let elem: [u8; 8] = after.read(at).expect("used ring in RAM");
        let id = u32::from_le_bytes(elem[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(elem[4..].try_into().expect("4 bytes"));
        assert!(id < u32::from(layout.size), "used id {id} out of range");
        let chain = walk(before, layout, id as u16);
        let cap = chain.capacity();
        assert!(
            u64::from(len) <= cap,
            "used length {len} for chain {id} exceeds its writable capacity {cap} ({chain:?})"
        );
        checked.push(Used {
            id: id as u16,
            len,
            chain,
        });
    }
    checked
}

/// Writes a 32-bit transport register.
pub fn write_reg(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

/// Reads a 32-bit transport register.
pub fn read_reg(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(u64::from(offset), &mut data);
    u32::from_le_bytes(data)
}

/// What a well-behaved driver does: status ACK, DRIVER, features (the
/// offered ones `mask` keeps, VERSION_1 always), FEATURES_OK, each queue
/// of `layouts`, DRIVER_OK. With the `fuzzing` feature of `devices`, the
/// device serves its queues before this returns. Returns the features
/// negotiated.
pub fn bring_up(t: &mut MmioTransport, mask: u64, layouts: &[Layout]) -> u64 {
    write_reg(t, VIRTIO_MMIO_STATUS, 1);
    write_reg(t, VIRTIO_MMIO_STATUS, 3);
    write_reg(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    let low = read_reg(t, VIRTIO_MMIO_DEVICE_FEATURES);
    write_reg(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    let high = read_reg(t, VIRTIO_MMIO_DEVICE_FEATURES);
    let version_1 = 1u64 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    let features = ((u64::from(high) << 32 | u64::from(low)) & mask) | version_1;
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
    write_reg(t, VIRTIO_MMIO_STATUS, 0xb);
    for (i, l) in (0u32..).zip(layouts) {
        write_reg(t, VIRTIO_MMIO_QUEUE_SEL, i);
        write_reg(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(l.size));
        write_reg(t, VIRTIO_MMIO_QUEUE_DESC_LOW, l.desc as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (l.desc >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, l.avail as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (l.avail >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_USED_LOW, l.used as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_USED_HIGH, (l.used >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    write_reg(t, VIRTIO_MMIO_STATUS, 0xf);
    features
}

/// A scratch file for a target's whole run: created in /dev/shm (tmpfs:
/// truncating and rewriting it per input costs little) or else the temp
/// directory, unlinked at once (nothing is left behind), and reachable by
/// the returned `/proc/self/fd/N` path for code that opens files by name.
pub fn scratch_file(tag: &str) -> (std::fs::File, std::path::PathBuf) {
    use std::os::fd::AsRawFd;
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("tandem-fuzz-{tag}-{}", std::process::id()));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("scratch file");
    std::fs::remove_file(&path).expect("unlink scratch file");
    let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd()).into();
    (file, by_fd)
}

/// Console output into a sink, one for the whole run and cloned for each
/// device: every [`ConsoleOutput`] has a drain thread of its own.
pub fn console_output() -> ConsoleOutput {
    static OUTPUT: OnceLock<ConsoleOutput> = OnceLock::new();
    OUTPUT
        .get_or_init(|| ConsoleOutput::new(Box::new(std::io::sink())).expect("console output"))
        .clone()
}
