//! The guest memory type every tandem crate shares: vm-memory's mmap
//! backend with a dirty-page bitmap per region. KVM logs the pages the
//! vCPUs write (KVM_GET_DIRTY_LOG); the bitmap records the ones tandem
//! itself writes through vm-memory — devices filling buffers and used
//! rings, loaders — which KVM never sees. Diff snapshots (and migration)
//! need both. Also here: anonymous RAM mapped so that KVM can use 2 MiB
//! pages for it, filling guest memory from a file, which the boot loaders
//! do, and moving guest buffers to and from a file at an offset in one
//! vectored call, which the block device does.

mod aligned;
mod read;
mod vectored;

pub use aligned::{map_anonymous, RegionBitmap, RAM_ALIGN};
pub use read::read_into_guest;
pub use vectored::{mark_dirty, read_guest_from, write_guest_to, GuestIovecs, MAX_IOVECS};
pub use vm_memory::bitmap::AtomicBitmap;

/// Guest RAM: mmap'ed regions, each with its dirty-page bitmap.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<RegionBitmap>;
/// One region of [`GuestMemoryMmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<RegionBitmap>;
/// The mapping behind a [`GuestRegionMmap`].
pub type MmapRegion = vm_memory::MmapRegion<RegionBitmap>;

/// The pages of `region` tandem wrote through vm-memory since the bitmap
/// was last reset, one bit per host page from the region's start.
pub fn dirty_bitmap(region: &GuestRegionMmap) -> &AtomicBitmap {
    MmapRegion::bitmap(region).dirty()
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    use super::*;

    #[test]
    fn writes_through_vm_memory_mark_their_pages_dirty() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 12)]).unwrap();
        let region = mem.iter().next().unwrap();
        let page = |n: usize| dirty_bitmap(region).is_addr_set(n << 12);
        assert!((0..16).all(|n| !page(n)), "clean at first");
        mem.write_obj(7u32, GuestAddress(3 << 12)).unwrap();
        mem.write_slice(&[1u8; 0x1800], GuestAddress((5 << 12) + 0x800))
            .unwrap();
        let dirty: Vec<usize> = (0..16).filter(|&n| page(n)).collect();
        assert_eq!(dirty, [3, 5, 6]);
        let mut buf = [0u8; 64];
        mem.read_slice(&mut buf, GuestAddress(9 << 12)).unwrap();
        assert!(!page(9), "reads do not dirty");
        dirty_bitmap(region).reset();
        assert!((0..16).all(|n| !page(n)), "clean after reset");
    }
}
