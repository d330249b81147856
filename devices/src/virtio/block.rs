//! virtio-blk on a host file (or block device): the device, its config
//! space and its worker, and the live swap of the backing file
//! ([`VirtioDevice::update_backend`]). Requests are served in
//! `block_disk.rs`: reads, writes, flushes (fdatasync: a write
//! acknowledged before a completed flush is on disk) and GET_ID, each
//! counted in the device's [`IoStats`](super::IoStats): data bytes read
//! and written, and the requests that failed.
//!
//! Requests are served by the disk's engine ([`IoEngine`],
//! `block_engine.rs`): on the worker thread (Sync), or through io_uring
//! with several in flight (Async, `block_uring.rs`). A swap of the backing
//! file, like a pause, first lets every request in flight complete.
//!
//! Request size is bounded before the disk is touched: the device
//! advertises `seg_max` ([`SEG_MAX`]) and `size_max` ([`SIZE_MAX`]), so a
//! driver never sends more than [`MAX_REQUEST_BYTES`] of data; a chain
//! longer than the queue is dropped and larger data gets `IOERR` (see
//! [`refuse_oversized`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use guest_memory::GuestMemoryMmap;
use log::{info, warn};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{Address, Bytes};

use super::worker::{QueuePosition, Worker, WorkerError, WorkerHandler};
use super::{
    check_queue_count, feature, read_config_bytes, ActivateContext, ActivateError, Chain,
    Interrupt, IoStats, LogLimit, VirtioDevice,
};

#[path = "block_disk.rs"]
mod block_disk;
use block_disk::{lock, open_backing, Disk};
#[path = "block_engine.rs"]
mod engine;
pub use engine::IoEngine;
use engine::{Active, Engine, Side};
#[path = "block_uring.rs"]
mod uring;
pub use uring::DEPTH as ASYNC_QUEUE_DEPTH;

/// Bytes per virtio-blk sector, whatever the backing file's block size.
pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
/// Data segments per request (`seg_max`): a chain is at most
/// [`QUEUE_SIZE`] descriptors, two of them the header and the status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest segment (`size_max`): 64 KiB, a page even on 64 KiB-page
/// guests (Linux wants at least one).
pub const SIZE_MAX: u32 = 0x1_0000;
/// The most data one request may move: what a driver honouring `seg_max`
/// and `size_max` can send (254 × 64 KiB, just under 16 MiB). It bounds the
/// work of one request, and so how long a pause or a reset can wait.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// The header and the status byte around a request's data.
const REQUEST_OVERHEAD: u64 = 16 + 1;
const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// capacity (8), size_max (4), seg_max (4), geometry (4), blk_size (4).
const CONFIG_LEN: usize = 24;

/// How the user described a disk
/// (`--disk path=FILE[,readonly=on][,id=ID][,io_engine=sync|async]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Backing file or block device.
    pub path: PathBuf,
    /// Refuse guest writes and advertise VIRTIO_BLK_F_RO.
    pub readonly: bool,
    /// Serial number returned by GET_ID (at most 20 bytes); defaults to
    /// the file name.
    pub id: Option<String>,
    /// How requests reach the file.
    pub io_engine: IoEngine,
}

/// Why a disk could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file could not be opened or sized.
    // The reason is part of the message, not a `source`, so that a chain
    // of contexts prints it once.
    #[error("disk {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: io::Error,
    },
    /// Another disk, in this VM or another process, holds the file
    /// (read-write, or read-only against a read-write open).
    #[error("disk {} is in use by another VM (locked)", .0.display())]
    Locked(PathBuf),
    /// The serial number does not fit in 20 bytes.
    #[error("disk id {0:?} is longer than 20 bytes")]
    IdTooLong(String),
    /// `io_engine` Async, and the kernel refuses io_uring (ENOSYS: too old
    /// or built without it; EPERM: `kernel.io_uring_disabled`, a seccomp
    /// policy or a container runtime).
    #[error("disk {}: io_engine Async needs io_uring, which this host refuses: {reason}", path.display())]
    Uring {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: io::Error,
    },
}

/// A virtio-blk device.
pub struct Block {
    /// The disk requests are served on. The worker holds the lock for the
    /// whole of each request, so a swap waits for the request in flight
    /// and no request sees two files.
    disk: Arc<Mutex<Disk>>,
    features: u64,
    config: [u8; CONFIG_LEN],
    worker: Option<Worker>,
    /// From activation on: where config changes are signalled.
    interrupt: Option<Arc<Interrupt>>,
    engine: Engine,
}

impl Block {
    /// Opens the disk described by `config`.
    pub fn new(config: &BlockConfig) -> Result<Self, BlockError> {
        let id = config.id.clone().unwrap_or_else(|| {
            let name = config
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            name.chars()
                .scan(0, |len, c| {
                    *len += c.len_utf8();
                    (*len <= ID_LEN).then_some(c)
                })
                .collect()
        });
        if id.len() > ID_LEN {
            return Err(BlockError::IdTooLong(id));
        }
        let mut id_bytes = [0u8; ID_LEN];
        id_bytes[..id.len()].copy_from_slice(id.as_bytes());
        let engine = Engine::new(config.io_engine).map_err(|reason| BlockError::Uring {
            path: config.path.clone(),
            reason,
        })?;
        let backing = open_backing(&config.path, config.readonly, None)?;
        let disk = Disk::new(backing, config.readonly, id_bytes);
        Ok(Self::with_disk(disk, engine))
    }

    fn with_disk(disk: Disk, engine: Engine) -> Self {
        let mut features = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_RING_F_EVENT_IDX)
            | feature(VIRTIO_RING_F_INDIRECT_DESC)
            | feature(VIRTIO_BLK_F_FLUSH)
            | feature(VIRTIO_BLK_F_SEG_MAX)
            | feature(VIRTIO_BLK_F_SIZE_MAX);
        if disk.readonly {
            features |= feature(VIRTIO_BLK_F_RO);
        }
        if u64::from(disk.block_size) != SECTOR_SIZE {
            features |= feature(VIRTIO_BLK_F_BLK_SIZE);
        }
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&disk.capacity.to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&disk.block_size.to_le_bytes());
        Self {
            disk: Arc::new(Mutex::new(disk)),
            features,
            config,
            worker: None,
            interrupt: None,
            engine,
        }
    }

    /// Capacity in 512-byte sectors, as the config space reports it.
    pub fn capacity(&self) -> u64 {
        u64::from_le_bytes(self.config[0..8].try_into().unwrap_or_default())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, 1)?;
        let active = ctx.queues.remove(0);
        let handler = BlockHandler {
            engine: self.engine.activate().map_err(ActivateError::Backend)?,
            side: Side {
                disk: self.disk.clone(),
                mem: ctx.mem,
                queue: active.queue,
                interrupt: ctx.interrupt.clone(),
            },
        };
        self.interrupt = Some(ctx.interrupt.clone());
        let worker = Worker::spawn(
            "virtio-blk",
            ctx.start,
            vec![active.kick],
            ctx.interrupt,
            handler,
        );
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }

    /// Opens (and locks) `path` with the disk's read-only mode and serial,
    /// serves every later request from it, updates the capacity and, if
    /// the driver is running, raises a config-change interrupt. On error
    /// the old file stays in use. The disk's own file again (after a
    /// resize) keeps its lock and a failed flush.
    fn hand_over(&mut self, release: bool) -> io::Result<()> {
        lock(&self.disk)
            .hand_over(release)
            .map_err(|e| io::Error::new(io::ErrorKind::ResourceBusy, e.to_string()))
    }

    fn update_backend(&mut self, path: &Path) -> io::Result<()> {
        let readonly = self.features & feature(VIRTIO_BLK_F_RO) != 0;
        // No request may be in flight on the old file: a running worker
        // parks for the swap, completing them (a paused one did already).
        let parked = self.worker.as_ref().filter(|w| !w.pause_requested());
        if let Some(worker) = parked {
            if !worker.pause() {
                warn!("virtio-blk: the worker did not park for the swap in time");
            }
        }
        let swapped = self.swap_backend(path, readonly);
        if let Some(worker) = parked {
            worker.resume();
        }
        let capacity = swapped?;
        self.config[0..8].copy_from_slice(&capacity.to_le_bytes());
        info!(
            "virtio-blk: backing file now {}, {capacity} sectors",
            path.display()
        );
        if let (Some(_), Some(interrupt)) = (&self.worker, &self.interrupt) {
            interrupt.signal_config_change();
        }
        Ok(())
    }
}

impl Block {
    /// Replaces the backing file with `path`; returns its capacity.
    fn swap_backend(&self, path: &Path, readonly: bool) -> io::Result<u64> {
        let mut disk = lock(&self.disk);
        // The driver's next flush goes to the new file: make the writes
        // it saw acknowledged on the old one durable first.
        if let Err(e) = disk.sync() {
            warn!("virtio-blk: cannot flush the old backing file: {e}");
        }
        let backing = open_backing(path, readonly, Some(&disk)).map_err(|e| {
            let kind = match &e {
                BlockError::Open { reason, .. } => reason.kind(),
                _ => io::ErrorKind::ResourceBusy,
            };
            io::Error::new(kind, e.to_string())
        })?;
        let capacity = backing.capacity;
        *disk = Disk::new(backing, readonly, disk.id);
        Ok(capacity)
    }
}

/// A worker's half of the device. The engine comes first: dropped first,
/// it waits for the requests in flight while the rest is still there.
struct BlockHandler {
    engine: Active,
    side: Side,
}

impl WorkerHandler for BlockHandler {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        vec![QueuePosition::of(&self.side.queue)]
    }

    fn queue_event(&mut self, _index: usize) -> Result<(), WorkerError> {
        self.engine.queue_event(&mut self.side)
    }

    fn backend_fds(&self) -> Vec<(std::os::fd::RawFd, vmm_sys_util::epoll::EventSet)> {
        self.engine.fds()
    }

    fn backend_event(
        &mut self,
        _index: usize,
        _events: vmm_sys_util::epoll::EventSet,
    ) -> Result<(), WorkerError> {
        self.engine.fd_event(&mut self.side)
    }

    /// Before the worker parks: nothing stays in flight.
    fn flush(&mut self) -> Result<(), WorkerError> {
        self.engine.drain(&mut self.side)
    }
}

/// Requests refused for their size.
static OVERSIZED: LogLimit = LogLimit::new();

/// Refuses a request too big to serve, before the disk is locked; returns
/// the used length to give back, or `None` to serve the request.
///
/// - A chain longer than the queue (the spec forbids a driver those) was
///   not walked to its end — that walk is the unbounded work being
///   refused — so its status byte is unknown: it is dropped, returned with
///   used length 0 and nothing written, as the spec allows a device to do
///   with a malformed chain.
/// - A well-formed chain carrying more than [`MAX_REQUEST_BYTES`] of data
///   gets `IOERR` in its status byte, like any other bad request: only a
///   driver ignoring `seg_max`/`size_max` sends one.
fn refuse_oversized(mem: &GuestMemoryMmap, chain: &Chain, io: &IoStats) -> Option<u32> {
    if let Some(max) = chain.too_long {
        OVERSIZED.warn(format_args!(
            "virtio-blk: request {} names more than {max} descriptors: dropped",
            chain.head
        ));
        io.record_error();
        return Some(0);
    }
    let bytes: u64 = chain.buffers.iter().map(|b| b.len as u64).sum();
    if bytes <= MAX_REQUEST_BYTES + REQUEST_OVERHEAD {
        return None;
    }
    OVERSIZED.warn(format_args!(
        "virtio-blk: request {} of {bytes} bytes is over the {MAX_REQUEST_BYTES}-byte limit",
        chain.head
    ));
    io.record_error();
    // The status byte is the chain's last byte and must be writable.
    let status = chain
        .buffers
        .last()
        .filter(|last| last.writable && last.len > 0)
        .and_then(|last| last.addr.checked_add(last.len as u64 - 1));
    let Some(status) = status else {
        return Some(0);
    };
    let written = mem.write_obj(VIRTIO_BLK_S_IOERR as u8, status).is_ok();
    Some(u32::from(written))
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "block_limits_tests.rs"]
mod limits_tests;

#[cfg(test)]
#[path = "block_uring_tests.rs"]
mod uring_tests;
