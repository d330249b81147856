//! Guest-physical memory the attacks hand to devices: an anonymous,
//! locked mapping (2 MiB aligned, so transparent huge pages make it
//! physically contiguous) whose physical addresses come from
//! `/proc/self/pagemap` (root sees the frame numbers). Carved up by a bump
//! allocator; nothing is ever freed (the program never ends).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const HUGE: usize = 2 << 20;

/// A locked arena of memory with known physical addresses.
pub struct Arena {
    base: *mut u8,
    len: usize,
    next: usize,
    /// Where [`Arena::reset`] goes back to.
    floor: usize,
    /// Physical address of each page.
    frames: Vec<u64>,
}

impl Arena {
    /// Maps, locks and translates `len` bytes (a multiple of 2 MiB).
    pub fn new(len: usize) -> io::Result<Self> {
        // Keep locked pages where they are: compaction may move them.
        let _ = std::fs::write("/proc/sys/vm/compact_unevictable_allowed", "0");
        let map_len = len + HUGE;
        // SAFETY: a fresh private anonymous mapping, owned by the arena.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let skew = (HUGE - raw as usize % HUGE) % HUGE;
        // SAFETY: `skew` < 2 MiB, inside the mapping of len + 2 MiB.
        let base = unsafe { raw.cast::<u8>().add(skew) };
        // SAFETY: our own mapping; advice and locking change no contents.
        unsafe {
            libc::madvise(base.cast(), len, libc::MADV_HUGEPAGE);
            if libc::mlock(base.cast(), len) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Touch every page so it is backed before translation.
            std::ptr::write_bytes(base, 0, len);
        }
        let page = crate::page_size();
        let pagemap = File::open("/proc/self/pagemap")?;
        let mut frames = Vec::with_capacity(len / page);
        for i in 0..len / page {
            let mut entry = [0u8; 8];
            let vpn = (base as usize + i * page) / page;
            pagemap.read_exact_at(&mut entry, vpn as u64 * 8)?;
            let entry = u64::from_le_bytes(entry);
            let pfn = entry & ((1 << 55) - 1);
            if entry >> 63 == 0 || pfn == 0 {
                return Err(io::Error::other("pagemap: page not present or PFN hidden"));
            }
            frames.push(pfn * page as u64);
        }
        Ok(Self {
            base,
            len,
            next: 0,
            floor: 0,
            frames,
        })
    }

    /// Whether the whole arena is one physically contiguous run.
    pub fn contiguous(&self) -> bool {
        let page = crate::page_size() as u64;
        self.frames.windows(2).all(|w| w[1] == w[0] + page)
    }

    /// The longest physically contiguous run, in bytes.
    pub fn longest_run(&self) -> usize {
        let page = crate::page_size() as u64;
        let (mut best, mut run) = (1, 1);
        for w in self.frames.windows(2) {
            run = if w[1] == w[0] + page { run + 1 } else { 1 };
            best = best.max(run);
        }
        best * page as usize
    }

    /// `len` zeroed, physically contiguous bytes aligned to `align` (a
    /// power of two). Panics when the arena has no such run left.
    pub fn alloc(&mut self, len: usize, align: usize) -> Buf {
        let mut start = self.next.next_multiple_of(align);
        while !self.is_contiguous(start, len) {
            start = (start + 1).next_multiple_of(align.max(crate::page_size()));
        }
        self.next = start + len;
        // SAFETY: inside the arena (checked above).
        let ptr = unsafe { self.base.add(start) };
        // SAFETY: as above; nobody else uses these bytes yet.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        let page = crate::page_size();
        Buf {
            ptr,
            len,
            phys: self.frames[start / page] + (start % page) as u64,
        }
    }

    /// [`Arena::alloc`], or `None` when no contiguous run is left.
    pub fn try_alloc(&mut self, len: usize, align: usize) -> Option<Buf> {
        let mut start = self.next.next_multiple_of(align);
        while start + len <= self.len {
            if self.is_contiguous(start, len) {
                self.next = start;
                return Some(self.alloc(len, align));
            }
            start = (start + 1).next_multiple_of(align.max(crate::page_size()));
        }
        None
    }

    fn is_contiguous(&self, start: usize, len: usize) -> bool {
        let page = crate::page_size();
        assert!(start + len <= self.len, "DMA arena exhausted");
        let frames = &self.frames[start / page..(start + len).div_ceil(page)];
        frames.windows(2).all(|w| w[1] == w[0] + page as u64)
    }

    /// Keeps what is allocated so far for good: [`Arena::reset`] goes
    /// back to here.
    pub fn set_floor(&mut self) {
        self.floor = self.next;
    }

    /// Forgets every allocation above the floor (each attack starts over).
    pub fn reset(&mut self) {
        self.next = self.floor;
    }
}

/// A piece of the arena: its address here and as the device sees it.
#[derive(Clone, Copy)]
pub struct Buf {
    ptr: *mut u8,
    /// Bytes.
    pub len: usize,
    /// Guest-physical address of the first byte.
    pub phys: u64,
}

impl Buf {
    /// Stores a little-endian value of `N` bytes at `offset`, volatile
    /// (a device may be reading the same memory).
    pub fn put<const N: usize>(&self, offset: usize, bytes: [u8; N]) {
        assert!(offset + N <= self.len);
        for (i, b) in bytes.into_iter().enumerate() {
            // SAFETY: inside the buffer (checked above).
            unsafe { self.ptr.add(offset + i).write_volatile(b) };
        }
    }

    /// A little-endian u16 at `offset`, read volatile (a device writes it).
    pub fn get16(&self, offset: usize) -> u16 {
        assert!(offset + 2 <= self.len);
        // SAFETY: inside the buffer (checked above); u8 reads need no alignment.
        let b = unsafe {
            [
                self.ptr.add(offset).read_volatile(),
                self.ptr.add(offset + 1).read_volatile(),
            ]
        };
        u16::from_le_bytes(b)
    }

    /// The byte at `offset`.
    pub fn get8(&self, offset: usize) -> u8 {
        assert!(offset < self.len);
        // SAFETY: inside the buffer (checked above).
        unsafe { self.ptr.add(offset).read_volatile() }
    }

    /// Fills the buffer with `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: the whole buffer, ours.
        unsafe { std::ptr::write_bytes(self.ptr, byte, self.len) };
    }
}
