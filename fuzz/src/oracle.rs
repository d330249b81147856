//! The oracles of the virtio device targets: what a device may write
//! ([`Allowed`]), chains walked as a device walks them ([`walk`]), and the
//! used ring checked against them ([`check_used`]).

use devices::virtio::MAX_CHAIN_DESCRIPTORS;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use crate::driver::Layout;
use crate::memory::{read_desc, Descriptors, Image};

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
