//! Physical address windows mapped through `/dev/mem` (uncached, as the
//! kernel maps what is not RAM), read and written with single volatile
//! loads and stores of 1, 2 or 4 bytes: each one a trap to the VMM.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// A mapped window of physical addresses.
pub struct Window {
    base: *mut u8,
    map_len: usize,
    /// Offset of the wanted address inside the page-aligned mapping.
    skew: usize,
    len: usize,
    /// The physical address of offset 0.
    pub phys: u64,
}

// SAFETY: the mapping is plain memory-mapped I/O with no thread-affine
// state; the program is single-threaded anyway.
unsafe impl Send for Window {}

impl Window {
    /// Maps `len` bytes of physical address space from `phys`.
    pub fn map(phys: u64, len: usize) -> io::Result<Self> {
        let page = crate::page_size() as u64;
        let aligned = phys & !(page - 1);
        let skew = (phys - aligned) as usize;
        let map_len = (skew + len).div_ceil(page as usize) * page as usize;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open("/dev/mem")?;
        let offset = libc::off_t::try_from(aligned).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a file we opened; the kernel
        // checks the range (STRICT_DEVMEM) and we only use it through
        // this struct, which unmaps it on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            map_len,
            skew,
            len,
            phys,
        })
    }

    fn at(&self, offset: usize, width: usize) -> *mut u8 {
        assert!(offset + width <= self.len && offset.is_multiple_of(width));
        // SAFETY: inside the mapping (checked above).
        unsafe { self.base.add(self.skew + offset) }
    }

    /// A 32-bit load.
    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: aligned and inside the mapping (`at`).
        unsafe { self.at(offset, 4).cast::<u32>().read_volatile() }
    }

    /// A 32-bit store.
    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: aligned and inside the mapping (`at`).
        unsafe { self.at(offset, 4).cast::<u32>().write_volatile(value) }
    }

    /// A 16-bit store.
    pub fn write16(&self, offset: usize, value: u16) {
        // SAFETY: aligned and inside the mapping (`at`).
        unsafe { self.at(offset, 2).cast::<u16>().write_volatile(value) }
    }

    /// An 8-bit store.
    pub fn write8(&self, offset: usize, value: u8) {
        // SAFETY: inside the mapping (`at`).
        unsafe { self.at(offset, 1).write_volatile(value) }
    }

    /// An 8-bit load.
    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: inside the mapping (`at`).
        unsafe { self.at(offset, 1).read_volatile() }
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unused from now on.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}
