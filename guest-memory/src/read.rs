//! Filling guest memory from a file in as many reads as it takes: one
//! read(2) moves at most about 2 GiB (Linux's `MAX_RW_COUNT`), and any
//! read may come back short.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryError, ReadVolatile};

use crate::GuestMemoryMmap;

/// Fills the `len` bytes of `mem` at `addr` from `src`, reading until
/// they are all there; `src` ending first is an `UnexpectedEof` error.
pub fn read_into_guest(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    src: &mut impl ReadVolatile,
    len: usize,
) -> Result<(), GuestMemoryError> {
    // Region by region: a short read must not shift the rest of the data
    // into the next region.
    for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
        src.read_exact_volatile(&mut slice?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, VolatileMemoryError, VolatileSlice};

    use super::*;

    /// Hands out `data` at most `chunk` bytes per read, like read(2) near
    /// its 2 GiB cap.
    struct ShortReader<'a> {
        data: &'a [u8],
        chunk: usize,
        reads: usize,
    }

    impl ReadVolatile for ShortReader<'_> {
        fn read_volatile<B: vm_memory::bitmap::BitmapSlice>(
            &mut self,
            buf: &mut VolatileSlice<B>,
        ) -> Result<usize, VolatileMemoryError> {
            self.reads += 1;
            let len = buf.len().min(self.chunk).min(self.data.len());
            buf.copy_from(&self.data[..len]);
            self.data = &self.data[len..];
            Ok(len)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn short_reads_are_continued_until_the_buffer_is_full() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let bytes = data(100_000);
        let mut src = ShortReader {
            data: &bytes,
            chunk: 4096,
            reads: 0,
        };
        read_into_guest(&mem, GuestAddress(0x1000), &mut src, bytes.len()).unwrap();
        assert!(src.reads >= 25, "{} reads", src.reads);
        let mut copied = vec![0u8; bytes.len()];
        mem.read_slice(&mut copied, GuestAddress(0x1000)).unwrap();
        assert_eq!(copied, bytes);
    }

    #[test]
    fn short_reads_across_regions_land_in_place() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let bytes = data(0x8000);
        let mut src = ShortReader {
            data: &bytes,
            chunk: 1000,
            reads: 0,
        };
        read_into_guest(&mem, GuestAddress(0xc000), &mut src, bytes.len()).unwrap();
        let mut copied = vec![0u8; bytes.len()];
        mem.read_slice(&mut copied, GuestAddress(0xc000)).unwrap();
        assert_eq!(copied, bytes);
    }

    #[test]
    fn a_source_that_ends_early_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let bytes = data(5000);
        let mut src = ShortReader {
            data: &bytes,
            chunk: 4096,
            reads: 0,
        };
        let err = read_into_guest(&mem, GuestAddress(0), &mut src, 8192).unwrap_err();
        assert!(
            matches!(&err, GuestMemoryError::IOError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
        let outside = read_into_guest(&mem, GuestAddress(1 << 20), &mut src, 1);
        assert!(outside.is_err());
    }
}

#[cfg(test)]
mod dirty_tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;
    use crate::dirty_bitmap;

    #[test]
    fn a_file_read_into_guest_memory_marks_its_pages_dirty() {
        // What the block device and the loaders do: the diff snapshot must
        // see these pages although no vCPU wrote them.
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 12)]).unwrap();
        let mut file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        file.write_all(&[0x5a; 2 << 12]).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        read_into_guest(&mem, GuestAddress(4 << 12), &mut file, 2 << 12).unwrap();
        let region = vm_memory::GuestMemoryBackend::iter(&mem).next().unwrap();
        let dirty: Vec<usize> = (0..16)
            .filter(|&n| dirty_bitmap(region).is_addr_set(n << 12))
            .collect();
        assert_eq!(dirty, [4, 5]);
    }
}
