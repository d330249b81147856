//! virtio-blk's Async engine (`io_engine: "Async"`): the io_uring ring a
//! disk's requests go through, and the requests in flight on it.
//!
//! The ring is made when the disk is configured, on a thread not yet
//! confined by seccomp, and locked down before its first use: it accepts
//! only READV, WRITEV and FSYNC, and no further registration (so a disk
//! worker needs `io_uring_enter` alone). Its completions signal an eventfd
//! the worker watches. A worker takes the ring when the device is
//! activated and gives it back when it ends, so a reset device serves its
//! next activation with the same ring.
//!
//! Each request's data moves with one READV or WRITEV over the iovecs the
//! Sync engine would pass to `preadv`/`pwritev` (guest-memory's
//! [`GuestIovecs`]); a short transfer is continued where it stopped, one
//! that moves nothing fails with `IOERR`. FLUSH is an FSYNC with
//! DATASYNC. Up to [`DEPTH`] requests are in flight; with the ring full,
//! the worker takes nothing more from the available ring until a
//! completion frees a slot. Completions are checked and published
//! ([`Disk::finish`], then the used ring and the interrupt, EVENT_IDX
//! respected) as they arrive.
//!
//! No request outlives the worker's hold on the guest: before the worker
//! parks (pause, snapshot, migration, a disk swap) every request in
//! flight completes and is published ([`UringEngine::drain`]); when it
//! ends (device reset, VM teardown) the ring is waited on, publishing
//! nothing, before it goes back.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use guest_memory::{GuestIovecs, GuestMemoryMmap};
use io_uring::{opcode, register::Restriction, types, IoUring};
use log::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::block_disk::{lock, Disk, Op, Request, Step};
use super::engine::Side;
use super::refuse_oversized;
use crate::virtio::ring::{guarded, take_available};
use crate::virtio::worker::WorkerError;

/// Requests in flight at once: the ring's size.
pub const DEPTH: u32 = 128;

/// An io_uring ring for one disk and the eventfd its completions signal.
pub(super) struct Uring {
    ring: IoUring,
    completions: EventFd,
}

impl Uring {
    /// Makes a ring of [`DEPTH`] entries that takes only reads, writes
    /// and fsyncs. Fails (ENOSYS, EPERM under `kernel.io_uring_disabled`,
    /// EINVAL before Linux 5.10's restrictions) with the step that failed
    /// in the message.
    pub(super) fn new() -> io::Result<Self> {
        let step = |name: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"))
        };
        let ring = IoUring::builder()
            .setup_r_disabled()
            .build(DEPTH)
            .map_err(step("io_uring_setup"))?;
        let completions = EventFd::new(EFD_NONBLOCK).map_err(step("eventfd"))?;
        let submitter = ring.submitter();
        submitter
            .register_eventfd(completions.as_raw_fd())
            .map_err(step("registering the completion eventfd"))?;
        submitter
            .register_restrictions(&mut [
                Restriction::sqe_op(opcode::Readv::CODE),
                Restriction::sqe_op(opcode::Writev::CODE),
                Restriction::sqe_op(opcode::Fsync::CODE),
            ])
            .map_err(step("restricting the ring to READV, WRITEV and FSYNC"))?;
        submitter
            .register_enable_rings()
            .map_err(step("enabling the ring"))?;
        Ok(Self { ring, completions })
    }
}

/// Where a disk's ring waits between two workers.
pub(super) type RingHome = Arc<Mutex<Option<Uring>>>;

/// One request in flight.
struct InFlight {
    request: Request,
    /// The file it was submitted on (a swap cannot close it under the
    /// kernel).
    file: Arc<File>,
    /// What is left to move (none for a flush).
    iovecs: Option<GuestIovecs>,
    /// Where in the file the rest goes.
    offset: u64,
}

/// The worker's side of the Async engine: the ring, borrowed from its
/// home, and the requests in flight on it (indexed by their `user_data`).
pub(super) struct UringEngine {
    uring: Option<Uring>,
    home: RingHome,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// The ring filled up with requests left on the available ring.
    throttled: bool,
}

impl UringEngine {
    /// Takes the ring from `home` for a new worker.
    pub(super) fn take(home: &RingHome) -> io::Result<Self> {
        let uring = home
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                io::Error::other("the disk's io_uring ring is held by another worker")
            })?;
        Ok(Self {
            uring: Some(uring),
            home: home.clone(),
            slots: (0..DEPTH).map(|_| None).collect(),
            free: (0..DEPTH as usize).rev().collect(),
            throttled: false,
        })
    }

    /// The eventfd completions signal.
    pub(super) fn completion_fd(&self) -> Option<RawFd> {
        self.uring.as_ref().map(|u| u.completions.as_raw_fd())
    }

    /// Requests in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn ring(&self) -> io::Result<&IoUring> {
        self.uring
            .as_ref()
            .map(|u| &u.ring)
            .ok_or_else(|| io::Error::other("no io_uring ring"))
    }

    /// Takes requests from the available ring while the ring has room:
    /// submits their I/O, and publishes at once those that need none.
    pub(super) fn serve_queue(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        if self.free.is_empty() {
            // A kick while the ring is full (a driver may kick whatever
            // the device asked): the next completion comes back here.
            self.throttled = true;
            return Ok(());
        }
        let Side {
            disk,
            mem,
            queue,
            interrupt,
        } = side;
        let io = interrupt.io_stats();
        let mut published = false;
        let mut failure = None;
        take_available(queue, mem, |queue, chain| {
            if let Some(len) = refuse_oversized(mem, &chain, io) {
                published |= guarded(|| queue.add_used(mem, chain.head, len))?.is_some();
                return Ok(true);
            }
            let disk = lock(disk);
            match disk.start(mem, &chain, io) {
                Step::Done(len) => {
                    published |= guarded(|| queue.add_used(mem, chain.head, len))?.is_some();
                }
                Step::Io(request) => match self.submit(request, &disk, mem, io) {
                    Ok(None) => {}
                    Ok(Some((head, len))) => {
                        published |= guarded(|| queue.add_used(mem, head, len))?.is_some();
                    }
                    Err(e) => {
                        failure = Some(e);
                        return Ok(false);
                    }
                },
            }
            // Full: the next completion brings the worker back here.
            self.throttled = self.free.is_empty();
            Ok(!self.throttled)
        })
        .map_err(|source| WorkerError::Queue { index: 0, source })?;
        if let Some(e) = failure {
            return Err(WorkerError::Backend(e));
        }
        self.submit_queued()?;
        if published {
            notify(queue, mem, interrupt)?;
        }
        Ok(())
    }

    /// Puts `request` in a free slot and queues its first SQE; a transfer
    /// of no bytes is finished at once (`Some((head, used length))`).
    fn submit(
        &mut self,
        request: Request,
        disk: &Disk,
        mem: &GuestMemoryMmap,
        io: &crate::virtio::IoStats,
    ) -> io::Result<Option<(u16, u32)>> {
        let (iovecs, offset) = match &request.op {
            Op::Read(t) => (Some(GuestIovecs::new(mem, t.parts(), true)), t.offset),
            Op::Write(t) => (Some(GuestIovecs::new(mem, t.parts(), false)), t.offset),
            Op::Flush => (None, 0),
        };
        let iovecs = match iovecs.transpose() {
            Ok(Some(iovecs)) if iovecs.is_done() => {
                return Ok(Some((request.head, disk.finish(mem, &request, Ok(()), io))));
            }
            Ok(iovecs) => iovecs,
            Err(e) => return Ok(Some((request.head, disk.finish(mem, &request, Err(e), io)))),
        };
        let slot = self
            .free
            .pop()
            .ok_or_else(|| io::Error::other("no free io_uring slot"))?;
        self.slots[slot] = Some(InFlight {
            request,
            file: disk.file().clone(),
            iovecs,
            offset,
        });
        if let Err(e) = self.push(slot) {
            self.release(slot);
            return Err(e);
        }
        Ok(None)
    }

    /// Queues the SQE for what is left of the request in `slot`.
    fn push(&mut self, slot: usize) -> io::Result<()> {
        let entry = self.slots[slot]
            .as_ref()
            .ok_or_else(|| io::Error::other("empty io_uring slot"))?;
        let fd = types::Fd(entry.file.as_raw_fd());
        let sqe = match (&entry.request.op, &entry.iovecs) {
            (Op::Read(_), Some(iovecs)) => {
                let iov = iovecs.pending();
                opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(entry.offset)
                    .build()
            }
            (Op::Write(_), Some(iovecs)) => {
                let iov = iovecs.pending();
                opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(entry.offset)
                    .build()
            }
            _ => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        let sqe = sqe.user_data(slot as u64);
        let uring = self
            .uring
            .as_mut()
            .ok_or_else(|| io::Error::other("no io_uring ring"))?;
        // SAFETY: what the SQE points to outlives the operation:
        // - the iovec array is the slot's `GuestIovecs`, which stays in the
        //   slot, unmoved (a Vec's heap buffer), until the operation's
        //   completion has been reaped: slots are emptied only in
        //   `complete`, and the engine is never dropped with a slot in
        //   flight (`Drop` waits, or leaks the ring and the slots);
        // - the guest buffers the iovecs name are guest RAM, mapped for the
        //   VM's lifetime (`GuestIovecs`), and the worker holds a clone of
        //   the guest memory while the engine lives;
        // - the file descriptor is the slot's own `Arc<File>`, open until
        //   the slot is emptied.
        unsafe { uring.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    fn release(&mut self, slot: usize) -> Option<InFlight> {
        let entry = self.slots[slot].take()?;
        self.free.push(slot);
        Some(entry)
    }

    /// Hands the queued SQEs to the kernel.
    fn submit_queued(&self) -> Result<(), WorkerError> {
        loop {
            match self.ring().and_then(|ring| ring.submit()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result.map(drop).map_err(WorkerError::Backend),
            }
        }
    }

    /// The completion eventfd fired: finishes and publishes what
    /// completed, then, if the ring had filled up, takes more requests.
    pub(super) fn complete(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        self.reap(side)?;
        if self.throttled && !self.free.is_empty() {
            self.throttled = false;
            self.serve_queue(side)?;
        }
        Ok(())
    }

    /// Finishes every completion in the ring and publishes it.
    fn reap(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        let Some(uring) = self.uring.as_mut() else {
            return Ok(());
        };
        // WouldBlock: nothing new since the last read.
        let _ = uring.completions.read();
        let done: Vec<(u64, i32)> = uring
            .ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        let Side {
            disk,
            mem,
            queue,
            interrupt,
        } = side;
        let io = interrupt.io_stats();
        let mut published = false;
        for (slot, result) in done {
            let Some((request, result)) = self.completed(slot as usize, result) else {
                continue;
            };
            let len = lock(disk).finish(mem, &request, result, io);
            let add = guarded(|| queue.add_used(mem, request.head, len));
            published |= add
                .map_err(|source| WorkerError::Queue { index: 0, source })?
                .is_some();
        }
        self.submit_queued()?;
        if published {
            notify(queue, mem, interrupt)?;
        }
        Ok(())
    }

    /// Records one completion: the request and its outcome once it is
    /// over, `None` while a short transfer goes on (its next SQE queued).
    fn completed(&mut self, slot: usize, result: i32) -> Option<(Request, io::Result<()>)> {
        let entry = self.slots.get_mut(slot)?.as_mut()?;
        let outcome = if result < 0 {
            Err(io::Error::from_raw_os_error(-result))
        } else if let Some(iovecs) = &mut entry.iovecs {
            let moved = result as usize;
            iovecs.advance(moved);
            entry.offset += moved as u64;
            match (moved, iovecs.is_done()) {
                (_, true) => Ok(()),
                (0, false) => Err(io::Error::from(match entry.request.op {
                    Op::Read(_) => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::WriteZero,
                })),
                (_, false) => {
                    debug!(
                        "virtio-blk: request {} cut short after {moved} bytes: continued",
                        entry.request.head
                    );
                    match self.push(slot) {
                        Ok(()) => return None,
                        Err(e) => Err(e),
                    }
                }
            }
        } else {
            Ok(())
        };
        let entry = self.release(slot)?;
        Some((entry.request, outcome))
    }

    /// Waits for every request in flight and publishes it; takes no new
    /// ones. Called before the worker parks.
    pub(super) fn drain(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        while self.in_flight() > 0 {
            match self.ring().and_then(|ring| ring.submit_and_wait(1)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WorkerError::Backend(e)),
            }
            self.reap(side)?;
        }
        Ok(())
    }
}

/// Interrupts the driver for what was just published, if it wants one.
fn notify(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &crate::virtio::Interrupt,
) -> Result<(), WorkerError> {
    guarded(|| interrupt.notify_queue(0, queue, mem))
        .map(drop)
        .map_err(|source| WorkerError::Queue { index: 0, source })
}

impl Drop for UringEngine {
    /// The worker ends (a reset, a stop): waits for the requests in
    /// flight, publishing nothing, and gives the ring back. A ring that
    /// cannot be waited on is leaked with its requests, never freed under
    /// the kernel.
    fn drop(&mut self) {
        let Some(mut uring) = self.uring.take() else {
            return;
        };
        while self.in_flight() > 0 {
            match uring.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("virtio-blk: cannot wait for the io_uring ring ({e}): leaked");
                    std::mem::forget(uring);
                    std::mem::forget(std::mem::take(&mut self.slots));
                    return;
                }
            }
            let done: Vec<u64> = uring.ring.completion().map(|cqe| cqe.user_data()).collect();
            for slot in done {
                if self.release(slot as usize).is_some() {
                    debug!("virtio-blk: request in flight at stop dropped");
                }
            }
        }
        let _ = uring.completions.read();
        *self.home.lock().unwrap_or_else(PoisonError::into_inner) = Some(uring);
    }
}
