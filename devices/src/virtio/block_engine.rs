//! How a virtio-blk device does its file I/O ([`IoEngine`]): the one
//! choice the device and its worker make, so that neither branches on it
//! anywhere else. Sync serves each request on the worker thread
//! (`preadv`/`pwritev`/`fdatasync`, one at a time); Async hands them to an
//! io_uring ring (`block_uring.rs`), several in flight.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use guest_memory::GuestMemoryMmap;
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;

use super::block_disk::{lock, Disk};
use super::refuse_oversized;
use super::uring::{RingHome, Uring, UringEngine};
use crate::virtio::worker::WorkerError;
use crate::virtio::{drain_queue, Interrupt};

/// Which engine serves a disk's requests (Firecracker's `io_engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// One request at a time on the disk's worker thread.
    #[default]
    Sync,
    /// Through io_uring, up to 128 requests in flight.
    Async,
}

/// What a worker serves requests with: the disk, guest memory, the queue
/// and its interrupt.
pub(super) struct Side {
    pub(super) disk: Arc<Mutex<Disk>>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) queue: Queue,
    pub(super) interrupt: Arc<Interrupt>,
}

/// A device's engine between activations.
pub(super) enum Engine {
    Sync,
    /// The disk's ring, made at configuration.
    Async(RingHome),
}

impl Engine {
    /// Sets up `choice`: for Async, the ring (failing as the kernel
    /// refuses io_uring).
    pub(super) fn new(choice: IoEngine) -> io::Result<Self> {
        Ok(match choice {
            IoEngine::Sync => Engine::Sync,
            IoEngine::Async => Engine::Async(Arc::new(Mutex::new(Some(Uring::new()?)))),
        })
    }

    /// The engine for a new worker.
    pub(super) fn activate(&self) -> io::Result<Active> {
        Ok(match self {
            Engine::Sync => Active::Sync,
            Engine::Async(home) => Active::Async(Box::new(UringEngine::take(home)?)),
        })
    }
}

/// A worker's engine.
pub(super) enum Active {
    Sync,
    Async(Box<UringEngine>),
}

impl Active {
    /// The queue was kicked.
    pub(super) fn queue_event(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        match self {
            Active::Sync => {
                let Side {
                    disk,
                    mem,
                    queue,
                    interrupt,
                } = side;
                let io = interrupt.io_stats();
                drain_queue(0, queue, mem, interrupt, |chain| {
                    refuse_oversized(mem, chain, io)
                        .unwrap_or_else(|| lock(disk).serve(mem, chain, io))
                })
                .map_err(|source| WorkerError::Queue { index: 0, source })
            }
            Active::Async(engine) => engine.serve_queue(side),
        }
    }

    /// The fds the worker watches for the engine: Async's completions.
    pub(super) fn fds(&self) -> Vec<(RawFd, EventSet)> {
        match self {
            Active::Sync => Vec::new(),
            Active::Async(engine) => engine
                .completion_fd()
                .map(|fd| (fd, EventSet::IN))
                .into_iter()
                .collect(),
        }
    }

    /// An fd of [`Active::fds`] is ready.
    pub(super) fn fd_event(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        match self {
            Active::Sync => Ok(()),
            Active::Async(engine) => engine.complete(side),
        }
    }

    /// Completes and publishes every request in flight.
    pub(super) fn drain(&mut self, side: &mut Side) -> Result<(), WorkerError> {
        match self {
            Active::Sync => Ok(()),
            Active::Async(engine) => engine.drain(side),
        }
    }
}
