//! Moving several guest buffers to or from a file at an offset with one
//! vectored system call (`pwritev`, `preadv`), continued where the kernel
//! stops short. A virtio-blk request of 1 MiB in 4 KiB pages is one call
//! this way, not one `write` per page plus a seek. The same iovecs
//! ([`GuestIovecs`]) serve an io_uring READV/WRITEV, which moves them
//! after the call that built them has returned.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::bitmap::{Bitmap, WithBitmapSlice};
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::{GuestMemoryMmap, RegionBitmap};

/// The most iovecs one call takes (Linux's `UIO_MAXIOV`).
pub const MAX_IOVECS: usize = 1024;

/// Writes the guest buffers `parts`, in order, to `file` from `offset` on.
pub fn write_guest_to(
    mem: &GuestMemoryMmap,
    parts: impl IntoIterator<Item = (GuestAddress, usize)>,
    file: &File,
    offset: u64,
) -> io::Result<()> {
    let iovecs = GuestIovecs::new(mem, parts, false)?;
    transfer(iovecs, offset, io::ErrorKind::WriteZero, |iov, at| {
        // SAFETY: every iovec covers part of guest memory that `mem`
        // keeps mapped (see `GuestIovecs`); the kernel only reads them.
        unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, at) }
    })
}

/// Fills the guest buffers `parts`, in order, from `file` at `offset`;
/// the file ending first is an `UnexpectedEof` error. The buffers' pages
/// are marked dirty (all of them, whatever the outcome, as vm-memory does
/// after a failed read).
pub fn read_guest_from(
    mem: &GuestMemoryMmap,
    parts: impl IntoIterator<Item = (GuestAddress, usize)>,
    file: &File,
    offset: u64,
) -> io::Result<()> {
    let parts: Vec<_> = parts.into_iter().collect();
    let iovecs = GuestIovecs::new(mem, parts.iter().copied(), true)?;
    let done = transfer(iovecs, offset, io::ErrorKind::UnexpectedEof, |iov, at| {
        // SAFETY: every iovec covers part of guest memory that `mem`
        // keeps mapped for writing (see `GuestIovecs`); the kernel writes
        // only there.
        unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, at) }
    });
    mark_dirty(mem, parts)?;
    done
}

/// Marks the pages of the guest buffers `parts` dirty: what a read into
/// them made by the kernel (not through vm-memory) must do once it is done.
pub fn mark_dirty(
    mem: &GuestMemoryMmap,
    parts: impl IntoIterator<Item = (GuestAddress, usize)>,
) -> io::Result<()> {
    for slice in slices(mem, parts)? {
        slice.bitmap().mark_dirty(0, slice.len());
    }
    Ok(())
}

/// The host iovecs behind guest buffers, in order, with how far an I/O
/// over them has got: what a vectored system call, or an io_uring
/// READV/WRITEV that outlives the call that built it, is given.
///
/// The pointers stay valid as long as the guest memory they were built
/// from (any clone of it) is alive: tandem's guest memory is plain mmap'ed
/// regions (no Xen grant mappings, whose pointer guards would unmap), so
/// a region's mapping lives as long as the region, and tandem never
/// removes regions from a running VM. Holders keep a clone of the memory
/// alongside.
#[derive(Debug)]
pub struct GuestIovecs {
    iovecs: Vec<libc::iovec>,
    /// The first iovec not entirely moved yet.
    next: usize,
}

// SAFETY: the iovecs are addresses into guest memory mapped into the whole
// process, not tied to the thread that built them (see the type's doc).
unsafe impl Send for GuestIovecs {}

impl GuestIovecs {
    /// The iovecs behind `parts`, split where guest regions end; empty
    /// parts are left out. `for_write`: the kernel will write them (a read
    /// from a file).
    pub fn new(
        mem: &GuestMemoryMmap,
        parts: impl IntoIterator<Item = (GuestAddress, usize)>,
        for_write: bool,
    ) -> io::Result<Self> {
        let slices = slices(mem, parts)?;
        let iovecs = slices
            .iter()
            .filter(|slice| !slice.is_empty())
            .map(|slice| match for_write {
                // The guards only hold the pointer for the mmap backend:
                // dropping them unmaps nothing.
                true => iovec(slice.ptr_guard_mut().as_ptr(), slice.len()),
                false => iovec(slice.ptr_guard().as_ptr(), slice.len()),
            })
            .collect();
        Ok(Self { iovecs, next: 0 })
    }

    /// The iovecs still to move, at most [`MAX_IOVECS`] (what one call
    /// takes); empty once everything moved.
    pub fn pending(&self) -> &[libc::iovec] {
        let end = self.iovecs.len().min(self.next + MAX_IOVECS);
        &self.iovecs[self.next..end]
    }

    /// Whether every byte moved.
    pub fn is_done(&self) -> bool {
        self.next == self.iovecs.len()
    }

    /// Records that `moved` more bytes moved: a partly moved iovec goes on
    /// from where it stopped.
    pub fn advance(&mut self, mut moved: usize) {
        while moved > 0 && self.next < self.iovecs.len() {
            let iov = &mut self.iovecs[self.next];
            let step = moved.min(iov.iov_len);
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(step).cast();
            iov.iov_len -= step;
            moved -= step;
            if iov.iov_len == 0 {
                self.next += 1;
            }
        }
    }
}

/// A host slice of guest memory, with its part of the dirty bitmap.
type Slice<'a> = VolatileSlice<'a, <RegionBitmap as WithBitmapSlice<'a>>::S>;

/// The host slices behind `parts`, split where guest regions end.
fn slices(
    mem: &GuestMemoryMmap,
    parts: impl IntoIterator<Item = (GuestAddress, usize)>,
) -> io::Result<Vec<Slice<'_>>> {
    let mut slices = Vec::new();
    for (addr, len) in parts {
        for slice in mem.get_slices(addr, len) {
            slices.push(slice.map_err(io::Error::other)?);
        }
    }
    Ok(slices)
}

fn iovec(base: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: base.cast_mut().cast(),
        iov_len: len,
    }
}

/// Calls `op` (a `preadv` or `pwritev` at a file offset) until every byte
/// of `iovecs` has moved, at most [`MAX_IOVECS`] at a time; a call that
/// moves nothing before the end is an error of kind `stalled`.
fn transfer(
    mut iovecs: GuestIovecs,
    mut offset: u64,
    stalled: io::ErrorKind,
    op: impl Fn(&[libc::iovec], libc::off_t) -> isize,
) -> io::Result<()> {
    while !iovecs.is_done() {
        let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        let moved = op(iovecs.pending(), at);
        if moved < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if moved == 0 {
            return Err(io::Error::from(stalled));
        }
        offset += moved as u64;
        iovecs.advance(moved as usize);
    }
    Ok(())
}

#[cfg(test)]
#[path = "vectored_tests.rs"]
mod tests;
