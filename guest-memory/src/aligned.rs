//! Anonymous guest RAM mapped at a host address that agrees with its
//! guest-physical address modulo 2 MiB, and the per-region bitmap that
//! owns such a mapping.
//!
//! Why aligned: KVM maps guest RAM with 2 MiB pages (x86 NPT/EPT large
//! pages, arm64 stage-2 blocks) only where the host address and the
//! guest-physical address agree modulo 2 MiB, however the host backs the
//! memory. Linux before 6.7 places a large anonymous mapping on any 4 KiB
//! boundary, so without this every guest page was a 4 KiB mapping and
//! every guest TLB miss a longer two-dimensional walk: Debian's kernel
//! booted ~20 % slower in the nested benchmark host (docs/benchmarks.md,
//! section 2). QEMU aligns its RAM the same way.
//!
//! Why the bitmap owns the mapping: vm-memory unmaps only mappings it made
//! itself, and a region built on one of ours is shared by every vCPU and
//! device thread. vm-memory drops a region's bitmap exactly when the last
//! of them lets go of the region, so that is where the unmap belongs.

use std::io;
use std::ptr::null_mut;

use vm_memory::bitmap::{AtomicBitmap, Bitmap, NewBitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap};

/// KVM's large mapping size: host and guest addresses of RAM agree
/// modulo this.
pub const RAM_ALIGN: usize = 2 << 20;

/// A region's dirty-page bitmap (see [`crate::dirty_bitmap`]), and the
/// mapping behind the region when [`map_anonymous`] made it.
#[derive(Debug, Default)]
pub struct RegionBitmap {
    dirty: AtomicBitmap,
    /// Held for its `Drop`.
    _mapping: Option<OwnedMapping>,
}

impl RegionBitmap {
    /// The pages tandem wrote through vm-memory.
    pub fn dirty(&self) -> &AtomicBitmap {
        &self.dirty
    }
}

impl<'a> WithBitmapSlice<'a> for RegionBitmap {
    type S = <AtomicBitmap as WithBitmapSlice<'a>>::S;
}

impl Bitmap for RegionBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.dirty.mark_dirty(offset, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.dirty.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> <Self as WithBitmapSlice<'_>>::S {
        self.dirty.slice_at(offset)
    }
}

impl NewBitmap for RegionBitmap {
    fn with_len(len: usize) -> Self {
        Self {
            dirty: AtomicBitmap::with_len(len),
            _mapping: None,
        }
    }
}

/// Host memory this process mapped and unmaps when dropped.
#[derive(Debug)]
struct OwnedMapping {
    addr: usize,
    len: usize,
}

impl Drop for OwnedMapping {
    fn drop(&mut self) {
        // SAFETY: the range is a mapping map_anonymous made; its region,
        // the only way to reach it, is being dropped with this bitmap.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// `size` bytes of private anonymous RAM (reserved lazily, as
/// MAP_NORESERVE) for guest addresses from `start`, at a host address
/// equal to `start` modulo [`RAM_ALIGN`]; advised for transparent huge
/// pages, so hosts whose THP mode is `madvise` back it with them too.
///
/// Below it stays an inaccessible guard of at least a page. Without one
/// the next mapping, typically a 2 MiB thread stack, would end exactly at
/// the aligned start, and a host whose THP mode is `always` would give
/// that stack a whole huge page when it is first touched (2 MiB more VMM
/// RSS, seen in the nested benchmark host).
pub fn map_anonymous(
    start: GuestAddress,
    size: usize,
) -> io::Result<GuestRegionMmap<RegionBitmap>> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if size == 0 {
        return Err(invalid("empty guest RAM"));
    }
    // SAFETY: sysconf has no side effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let reserved = size
        .checked_add(RAM_ALIGN + page)
        .ok_or_else(|| invalid("guest RAM size overflows"))?;
    // SAFETY: a new private anonymous mapping at an address of the
    // kernel's choice; nothing else is affected.
    let raw = unsafe { libc::mmap(null_mut(), reserved, prot, flags, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let raw = raw as usize;
    let phase = (start.0 % RAM_ALIGN as u64) as usize;
    let guard_end = raw + page;
    let addr = guard_end + (phase + RAM_ALIGN - guard_end % RAM_ALIGN) % RAM_ALIGN;
    let tail = raw + reserved - (addr + size);
    // SAFETY: both ranges lie inside the mapping just made, outside the
    // RAM, and no one else knows of them.
    unsafe {
        libc::mprotect(raw as *mut libc::c_void, addr - raw, libc::PROT_NONE);
        if tail > 0 {
            libc::munmap((addr + size) as *mut libc::c_void, tail);
        }
        // Advice only: a kernel without THP refuses it, and RAM works
        // the same, in 4 KiB pages.
        libc::madvise(addr as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
    }
    let bitmap = RegionBitmap {
        dirty: AtomicBitmap::with_len(size),
        _mapping: Some(OwnedMapping {
            addr: raw,
            len: addr + size - raw,
        }),
    };
    // SAFETY: [addr, addr + size) is the mapping just made, and the
    // bitmap that travels with the region keeps it until the region goes.
    let mapping = unsafe {
        MmapRegionBuilder::new_with_bitmap(size, bitmap)
            .with_mmap_prot(prot)
            .with_mmap_flags(flags)
            .with_raw_mmap_pointer(addr as *mut u8)
    }
    .build()
    .map_err(io::Error::other)?;
    GuestRegionMmap::new(mapping, start).ok_or_else(|| invalid("guest RAM wraps around"))
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    /// Whether `addr` is mapped in this process (mincore fails with
    /// ENOMEM on unmapped pages).
    fn mapped(addr: usize) -> bool {
        let mut vec = 0u8;
        // SAFETY: mincore only reads the page tables for one page.
        unsafe { libc::mincore(addr as *mut libc::c_void, 4096, &mut vec) == 0 }
    }

    #[test]
    fn host_and_guest_addresses_agree_modulo_2_mib() {
        for start in [0, 0x10_0000, 0x8000_0000, 0x1_0000_3000] {
            let region = map_anonymous(GuestAddress(start), 3 << 20).unwrap();
            let host = region.as_ptr() as u64;
            assert_eq!(
                host % RAM_ALIGN as u64,
                start % RAM_ALIGN as u64,
                "{start:#x}"
            );
        }
    }

    #[test]
    fn ram_is_usable_and_unmapped_with_its_last_user() {
        let start = GuestAddress(0x4000_0000);
        let region = map_anonymous(start, 6 << 20).unwrap();
        let host = region.as_ptr() as usize;
        assert_eq!(region.len(), 6 << 20);
        let mem = crate::GuestMemoryMmap::from_regions(vec![region]).unwrap();
        mem.write_obj(0xfeed_u32, GuestAddress(0x4050_0000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x4050_0000)).unwrap(),
            0xfeed
        );
        let region = mem.iter().next().unwrap();
        assert!(
            crate::dirty_bitmap(region).is_addr_set(0x50_0000),
            "dirty logging works"
        );
        assert!(mapped(host) && mapped(host + (6 << 20) - 4096));
        assert!(mapped(host - 4096), "the guard below");
        let clone = mem.clone();
        drop(mem);
        assert!(mapped(host), "a clone still uses it");
        drop(clone);
        assert!(!mapped(host), "unmapped with the last user");
        assert!(!mapped(host + (6 << 20) - 4096));
        assert!(!mapped(host - 4096), "and the guard");
    }

    #[test]
    fn empty_or_impossible_ram_is_refused() {
        assert!(map_anonymous(GuestAddress(0), 0).is_err());
        assert!(map_anonymous(GuestAddress(0), usize::MAX - 4096).is_err());
    }
}
