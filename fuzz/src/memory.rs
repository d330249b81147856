//! The fuzz targets' guest memory: its layout (RAM with a hole), the one
//! mapping a run reuses, byte images of it for before/after comparisons,
//! and reading descriptors from either.

use std::cell::RefCell;
use std::sync::OnceLock;

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

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

pub(crate) fn read_desc(
    mem: &(impl Descriptors + ?Sized),
    at: u64,
) -> Option<(u64, u32, u16, u16)> {
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
