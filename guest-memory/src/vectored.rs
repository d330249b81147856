//! Moving several guest buffers to or from a file at an offset with one
//! vectored system call (`pwritev`, `preadv`), continued where the kernel
//! stops short. A virtio-blk request of 1 MiB in 4 KiB pages is one call
//! this way, not one `write` per page plus a seek.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::bitmap::{Bitmap, WithBitmapSlice};
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileSlice};

use crate::{GuestMemoryMmap, RegionBitmap};

/// The most iovecs one call takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Writes the guest buffers `parts`, in order, to `file` from `offset` on.
pub fn write_guest_to(
    mem: &GuestMemoryMmap,
    parts: impl IntoIterator<Item = (GuestAddress, usize)>,
    file: &File,
    offset: u64,
) -> io::Result<()> {
    let slices = slices(mem, parts)?;
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
    let iovecs = guards.iter().map(|g| iovec(g.as_ptr(), g.len())).collect();
    transfer(iovecs, offset, io::ErrorKind::WriteZero, |iov, at| {
        // SAFETY: every iovec covers part of a guest-memory slice that
        // `guards` keep mapped; the kernel only reads them.
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
    let slices = slices(mem, parts)?;
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
    let iovecs = guards.iter().map(|g| iovec(g.as_ptr(), g.len())).collect();
    let done = transfer(iovecs, offset, io::ErrorKind::UnexpectedEof, |iov, at| {
        // SAFETY: every iovec covers part of a guest-memory slice that
        // `guards` keep mapped for writing; the kernel writes only there.
        unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), iov.len() as i32, at) }
    });
    for slice in &slices {
        slice.bitmap().mark_dirty(0, slice.len());
    }
    done
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
    mut iovecs: Vec<libc::iovec>,
    mut offset: u64,
    stalled: io::ErrorKind,
    op: impl Fn(&[libc::iovec], libc::off_t) -> isize,
) -> io::Result<()> {
    let mut next = 0;
    while next < iovecs.len() {
        if iovecs[next].iov_len == 0 {
            next += 1;
            continue;
        }
        let end = iovecs.len().min(next + MAX_IOVECS);
        let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        let moved = op(&iovecs[next..end], at);
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
        let mut moved = moved as usize;
        offset += moved as u64;
        // Skip what moved; a partly moved iovec goes on from where it stopped.
        while moved > 0 {
            let iov = &mut iovecs[next];
            let step = moved.min(iov.iov_len);
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(step).cast();
            iov.iov_len -= step;
            moved -= step;
            if iov.iov_len == 0 {
                next += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "vectored_tests.rs"]
mod tests;
