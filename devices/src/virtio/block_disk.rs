//! The backing file of a virtio-blk device (opened, locked and sized in
//! `block_open.rs`) and serving one request on it: reads, writes, flushes
//! (a failed one fails every later flush and write) and GET_ID. A bad
//! request gets an error status when the chain has a status byte to
//! write, and is returned with length 0 otherwise; the device never
//! touches memory outside a chain's own buffers. Every request is counted
//! in the device's [`IoStats`].

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use guest_memory::GuestMemoryMmap;
use log::{debug, warn};
use virtio_bindings::virtio_blk::*;
use vm_memory::{Address, Bytes, GuestAddress};

use super::{BlockError, ID_LEN, SECTOR_SIZE};
use crate::virtio::{Chain, ChainError, IoStats};
use crate::LogLimit;

#[path = "block_open.rs"]
mod open;
pub(super) use open::open_backing;
use open::Backing;

const HEADER_LEN: usize = 16;
/// Requests dropped for want of a status byte.
static NO_STATUS: LogLimit = LogLimit::new();
/// The largest block size the guest is told about: Linux refuses a
/// virtio-blk device whose block size exceeds its page size.
const MAX_BLK_SIZE: u32 = 4096;

/// Locks the disk a device and its worker share. A panic while serving a
/// request leaves the disk itself intact, so a poisoned lock is used as is.
pub(super) fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why one request failed; the guest sees only the status byte.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("write after a failed flush")]
    FlushFailed,
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(usize),
    #[error("sectors {sector}+{len} bytes are past the end of the disk")]
    OutOfRange { sector: u64, len: usize },
    #[error("data buffers have the wrong direction for request type {0}")]
    Direction(u32),
    #[error("host I/O: {0}")]
    Io(#[from] io::Error),
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// What a successful request moved.
#[derive(Debug, Default)]
struct Done {
    /// Bytes written into the chain, before the status byte.
    to_chain: u32,
    /// Disk bytes read into guest memory.
    read: usize,
    /// Guest bytes written to the disk.
    written: usize,
}

impl Done {
    fn read(len: usize) -> Self {
        Self {
            to_chain: len as u32,
            read: len,
            written: 0,
        }
    }

    fn written(len: usize) -> Self {
        Self {
            written: len,
            ..Self::default()
        }
    }
}

/// A checked request that needs the file: what an engine does.
pub(super) enum Op {
    /// Fill the guest's writable buffers from the file.
    Read(Transfer),
    /// Write the guest's readable buffers to the file.
    Write(Transfer),
    /// Make acknowledged writes durable (fdatasync).
    Flush,
}

/// The guest buffers of a read or a write and where they go in the file.
pub(super) struct Transfer {
    /// Byte offset in the file.
    pub(super) offset: u64,
    /// The data buffers, in order.
    parts: Vec<(GuestAddress, usize)>,
    /// Their total length.
    pub(super) len: usize,
}

impl Transfer {
    fn new(offset: u64, data: &crate::virtio::Segments) -> Self {
        Self {
            offset,
            parts: data.parts().collect(),
            len: data.len(),
        }
    }

    /// The data buffers, in order.
    pub(super) fn parts(&self) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
        self.parts.iter().copied()
    }
}

/// A request being served: its chain's head, its status byte, its I/O.
pub(super) struct Request {
    /// The chain's head, for the used ring.
    pub(super) head: u16,
    /// The chain's status byte.
    status: GuestAddress,
    /// What it does to the file.
    pub(super) op: Op,
}

/// What [`Disk::start`] made of a request.
pub(super) enum Step {
    /// Served already: the bytes written into the chain.
    Done(u32),
    /// File I/O to do, then to hand to [`Disk::finish`].
    Io(Request),
}

/// What [`Disk::check`] made of a request.
enum Checked {
    Done(Done),
    Io(Op),
}

/// Writes the status byte (at `status_addr`) of request `head` for `result` and counts it in `io`;
/// returns the bytes written into the chain (0 if the status byte could
/// not be written).
fn conclude(
    mem: &GuestMemoryMmap,
    (head, status_addr): (u16, GuestAddress),
    result: Result<Done, RequestError>,
    io: &IoStats,
) -> u32 {
    let (status, written) = match result {
        Ok(done) => {
            io.record(done.read, done.written);
            (VIRTIO_BLK_S_OK as u8, done.to_chain)
        }
        Err(e) => {
            debug!("virtio-blk: request {head} failed: {e}");
            io.record_error();
            (e.status(), 0)
        }
    };
    match mem.write_obj(status, status_addr) {
        Ok(()) => written.saturating_add(1),
        Err(_) => 0,
    }
}

/// The backing file and what the guest may do with it.
pub(super) struct Disk {
    /// Shared with the requests in flight on it (the Async engine), so
    /// that its descriptor stays open until the last one completes.
    file: Arc<File>,
    path: PathBuf,
    /// Size in 512-byte sectors.
    pub(super) capacity: u64,
    /// The block size the guest is told (`VIRTIO_BLK_F_BLK_SIZE` when not
    /// 512): the backing file's logical block size, at most 4096. Only a
    /// hint: requests stay in 512-byte sectors.
    pub(super) block_size: u32,
    /// Writes are refused.
    pub(super) readonly: bool,
    /// The GET_ID serial number.
    pub(super) id: [u8; ID_LEN],
    /// How a flush reaches the file: `File::sync_data` (fdatasync), or a
    /// fake in tests.
    pub(super) fdatasync: fn(&File) -> io::Result<()>,
    /// A flush failed: writes acknowledged before it may be lost, and
    /// every later flush and write fails.
    flush_failed: AtomicBool,
}

impl Disk {
    pub(super) fn new(backing: Backing, readonly: bool, id: [u8; ID_LEN]) -> Self {
        Self {
            file: Arc::new(backing.file),
            path: backing.path,
            capacity: backing.capacity,
            block_size: backing.block_size.min(MAX_BLK_SIZE),
            readonly,
            id,
            fdatasync: File::sync_data,
            flush_failed: AtomicBool::new(backing.flush_failed),
        }
    }

    /// Drops the file's lock for another process to take (`release`: a
    /// migration to this host), or takes it again; acknowledged writes
    /// are made durable before the lock goes.
    pub(super) fn hand_over(&self, release: bool) -> Result<(), BlockError> {
        match release {
            true => {
                if let Err(e) = self.sync() {
                    warn!(
                        "virtio-blk: {}: cannot flush before handing over: {e}",
                        self.path.display()
                    );
                }
                open::unlock(&self.file, &self.path)
            }
            false => open::lock(&self.file, self.readonly, &self.path),
        }
    }

    /// A flush of this disk failed before.
    pub(super) fn flush_failed(&self) -> bool {
        self.flush_failed.load(Ordering::Relaxed)
    }

    /// Forces acknowledged writes to the file (fdatasync); a no-op for a
    /// read-only disk. Once it fails it keeps failing: the kernel reports
    /// a lost writeback once, and a later fdatasync that succeeds does not
    /// bring the data back.
    pub(super) fn sync(&self) -> io::Result<()> {
        if self.readonly {
            return Ok(());
        }
        if self.flush_failed() {
            return Err(io::Error::other("an earlier flush failed"));
        }
        self.flushed((self.fdatasync)(&self.file))
    }

    /// Records how a flush of the file ended, whichever engine made it:
    /// the first failure marks the disk failed for good.
    fn flushed(&self, result: io::Result<()>) -> io::Result<()> {
        result.inspect_err(|e| {
            // Logged once per disk: the flag stops every later attempt.
            warn!("virtio-blk: flush failed ({e}); the disk now fails every flush and write");
            self.flush_failed.store(true, Ordering::Relaxed);
        })
    }

    /// The open backing file, for an engine to do a request's I/O on.
    pub(super) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Serves one request on this thread (the Sync engine) and counts it
    /// in `io`; returns the bytes written into the chain.
    pub(super) fn serve(&self, mem: &GuestMemoryMmap, chain: &Chain, io: &IoStats) -> u32 {
        match self.start(mem, chain, io) {
            Step::Done(len) => len,
            Step::Io(request) => {
                let result = match &request.op {
                    Op::Read(t) => {
                        guest_memory::read_guest_from(mem, t.parts(), &self.file, t.offset)
                    }
                    Op::Write(t) => {
                        guest_memory::write_guest_to(mem, t.parts(), &self.file, t.offset)
                    }
                    Op::Flush => (self.fdatasync)(&self.file),
                };
                self.finish(mem, &request, result, io)
            }
        }
    }

    /// Checks a request and serves what needs no file I/O (GET_ID, a bad
    /// request, a flush of a read-only or failed disk): `Step::Done` with
    /// the bytes written into the chain, the request counted in `io`.
    /// Otherwise returns the I/O for an engine to do, then to hand to
    /// [`Disk::finish`].
    pub(super) fn start(&self, mem: &GuestMemoryMmap, chain: &Chain, io: &IoStats) -> Step {
        // The status byte is the chain's last byte and must be writable.
        let status_addr = match chain.buffers.last() {
            Some(last) if last.writable && last.len > 0 => {
                last.addr.checked_add(last.len as u64 - 1)
            }
            _ => None,
        };
        let Some(status) = status_addr.filter(|&a| mem.read_obj::<u8>(a).is_ok()) else {
            NO_STATUS.warn(format_args!(
                "virtio-blk: request {} has no status byte",
                chain.head
            ));
            io.record_error();
            return Step::Done(0);
        };
        let result = match self.check(mem, chain) {
            Ok(Checked::Io(op)) => {
                return Step::Io(Request {
                    head: chain.head,
                    status,
                    op,
                })
            }
            Ok(Checked::Done(done)) => Ok(done),
            Err(e) => Err(e),
        };
        Step::Done(conclude(mem, (chain.head, status), result, io))
    }

    /// Ends a request whose I/O `result` is in: writes its status byte,
    /// counts it in `io`, returns the bytes written into the chain. A read
    /// marks the guest pages it filled dirty; a failed flush fails the
    /// disk for good.
    pub(super) fn finish(
        &self,
        mem: &GuestMemoryMmap,
        request: &Request,
        result: io::Result<()>,
        io: &IoStats,
    ) -> u32 {
        let done = match &request.op {
            Op::Read(t) => {
                // Whatever the outcome, as vm-memory does after a failed read.
                let marked = guest_memory::mark_dirty(mem, t.parts());
                result.and(marked).map(|()| Done::read(t.len))
            }
            Op::Write(t) => result.map(|()| Done::written(t.len)),
            Op::Flush => self.flushed(result).map(|()| Done::default()),
        };
        let status = (request.head, request.status);
        conclude(mem, status, done.map_err(RequestError::Io), io)
    }

    /// Checks a request: what it does, or why it fails.
    fn check(&self, mem: &GuestMemoryMmap, chain: &Chain) -> Result<Checked, RequestError> {
        chain.validate(mem)?;
        let mut readable = chain.readable();
        let mut writable = chain.writable();
        writable.split_back(1)?; // the status byte
        let mut header = [0u8; HEADER_LEN];
        readable
            .split_front(HEADER_LEN)?
            .read_into(mem, &mut header)?;
        let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        match request_type {
            VIRTIO_BLK_T_IN => {
                if !readable.is_empty() {
                    return Err(RequestError::Direction(request_type));
                }
                let offset = self.offset_of(sector, writable.len())?;
                Ok(Checked::Io(Op::Read(Transfer::new(offset, &writable))))
            }
            VIRTIO_BLK_T_OUT => {
                if !writable.is_empty() {
                    return Err(RequestError::Direction(request_type));
                }
                if self.readonly {
                    return Err(RequestError::ReadOnly);
                }
                if self.flush_failed() {
                    return Err(RequestError::FlushFailed);
                }
                let offset = self.offset_of(sector, readable.len())?;
                Ok(Checked::Io(Op::Write(Transfer::new(offset, &readable))))
            }
            VIRTIO_BLK_T_FLUSH if self.readonly => Ok(Checked::Done(Done::default())),
            VIRTIO_BLK_T_FLUSH if self.flush_failed() => Err(RequestError::FlushFailed),
            VIRTIO_BLK_T_FLUSH => Ok(Checked::Io(Op::Flush)),
            VIRTIO_BLK_T_GET_ID => {
                if !readable.is_empty() {
                    return Err(RequestError::Direction(request_type));
                }
                let len = writable.write_from(mem, &self.id)?;
                Ok(Checked::Done(Done {
                    to_chain: len as u32,
                    ..Done::default()
                }))
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Checks `len` bytes at `sector`; returns their offset in the file.
    fn offset_of(&self, sector: u64, len: usize) -> Result<u64, RequestError> {
        // (Not `is_multiple_of`: the workspace supports Rust 1.85.)
        let partial_sector = len as u64 % SECTOR_SIZE;
        if partial_sector != 0 {
            return Err(RequestError::Unaligned(len));
        }
        let sectors = len as u64 / SECTOR_SIZE;
        let end = sector.checked_add(sectors);
        if end.is_none_or(|end| end > self.capacity) {
            return Err(RequestError::OutOfRange { sector, len });
        }
        Ok(sector * SECTOR_SIZE)
    }
}
