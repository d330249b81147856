//! virtio-blk on a host file (or block device): reads, writes, flushes
//! (fdatasync: a write acknowledged before a completed flush is on disk)
//! and GET_ID. A bad request gets an error status when the chain has a
//! status byte to write, and is returned with length 0 otherwise; the
//! device never touches memory outside a chain's own buffers. Every
//! request is counted in the device's [`IoStats`]: data bytes read and
//! written, and the requests that failed.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use log::{debug, warn};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use super::worker::{Worker, WorkerError, WorkerHandler};
use super::{
    check_queue_count, drain_queue, feature, read_config_bytes, ActivateContext, ActivateError,
    Chain, ChainError, Interrupt, IoStats, VirtioDevice,
};

/// Bytes per virtio-blk sector, whatever the backing file's block size.
pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const HEADER_LEN: usize = 16;
const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// capacity (8), size_max (4), seg_max (4), geometry (4), blk_size (4).
const CONFIG_LEN: usize = 24;

/// How the user described a disk (`--disk path=FILE[,readonly=on][,id=ID]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Backing file or block device.
    pub path: PathBuf,
    /// Refuse guest writes and advertise VIRTIO_BLK_F_RO.
    pub readonly: bool,
    /// Serial number returned by GET_ID (at most 20 bytes); defaults to
    /// the file name.
    pub id: Option<String>,
}

/// Why a disk could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file could not be opened or sized.
    #[error("disk {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The serial number does not fit in 20 bytes.
    #[error("disk id {0:?} is longer than 20 bytes")]
    IdTooLong(String),
}

/// A virtio-blk device.
pub struct Block {
    disk: Arc<Disk>,
    features: u64,
    config: [u8; CONFIG_LEN],
    worker: Option<Worker>,
}

impl Block {
    /// Opens the disk described by `config`.
    pub fn new(config: &BlockConfig) -> Result<Self, BlockError> {
        let open_error = |source| BlockError::Open {
            path: config.path.clone(),
            source,
        };
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
        let file = OpenOptions::new()
            .read(true)
            .write(!config.readonly)
            .open(&config.path)
            .map_err(open_error)?;
        // Seeking to the end sizes block devices too (their metadata says 0).
        let size = (&file).seek(SeekFrom::End(0)).map_err(open_error)?;
        let disk = Disk::new(file, size / SECTOR_SIZE, config.readonly, id_bytes);
        Ok(Self::with_disk(disk))
    }

    fn with_disk(disk: Disk) -> Self {
        let mut features = feature(VIRTIO_F_VERSION_1)
            | feature(VIRTIO_RING_F_EVENT_IDX)
            | feature(VIRTIO_RING_F_INDIRECT_DESC)
            | feature(VIRTIO_BLK_F_FLUSH)
            | feature(VIRTIO_BLK_F_SEG_MAX);
        if disk.readonly {
            features |= feature(VIRTIO_BLK_F_RO);
        }
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&disk.capacity.to_le_bytes());
        let seg_max = u32::from(QUEUE_SIZE) - 2;
        config[12..16].copy_from_slice(&seg_max.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Self {
            disk: Arc::new(disk),
            features,
            config,
            worker: None,
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
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
            disk: self.disk.clone(),
            mem: ctx.mem,
            queue: active.queue,
            interrupt: ctx.interrupt.clone(),
        };
        let worker = Worker::spawn("virtio-blk", vec![active.kick], ctx.interrupt, handler);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

struct BlockHandler {
    disk: Arc<Disk>,
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl WorkerHandler for BlockHandler {
    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        let (disk, mem, io) = (&self.disk, &self.mem, self.interrupt.io_stats());
        drain_queue(&mut self.queue, mem, &self.interrupt, |chain| {
            disk.serve(mem, chain, io)
        })
        .map_err(|source| WorkerError::Queue { index, source })
    }
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

/// The backing file and what the guest may do with it.
struct Disk {
    file: File,
    capacity: u64,
    readonly: bool,
    id: [u8; ID_LEN],
}

impl Disk {
    fn new(file: File, capacity: u64, readonly: bool, id: [u8; ID_LEN]) -> Self {
        Self {
            file,
            capacity,
            readonly,
            id,
        }
    }

    /// Serves one request and counts it in `io`; returns the bytes written
    /// into the chain.
    fn serve(&self, mem: &GuestMemoryMmap, chain: &Chain, io: &IoStats) -> u32 {
        // The status byte is the chain's last byte and must be writable.
        let status_addr = match chain.buffers.last() {
            Some(last) if last.writable && last.len > 0 => {
                last.addr.checked_add(last.len as u64 - 1)
            }
            _ => None,
        };
        let Some(status_addr) = status_addr.filter(|&a| mem.read_obj::<u8>(a).is_ok()) else {
            warn!("virtio-blk: request {} has no status byte", chain.head);
            io.record_error();
            return 0;
        };
        let (status, written) = match self.execute(mem, chain) {
            Ok(done) => {
                io.record(done.read, done.written);
                (VIRTIO_BLK_S_OK as u8, done.to_chain)
            }
            Err(e) => {
                debug!("virtio-blk: request {} failed: {e}", chain.head);
                io.record_error();
                (e.status(), 0)
            }
        };
        match mem.write_obj(status, status_addr) {
            Ok(()) => written.saturating_add(1),
            Err(_) => 0,
        }
    }

    /// Executes a request.
    fn execute(&self, mem: &GuestMemoryMmap, chain: &Chain) -> Result<Done, RequestError> {
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
                let mut file = self.seek_to(sector, writable.len())?;
                for (addr, len) in writable.parts() {
                    mem.read_exact_volatile_from(addr, &mut file, len)?;
                }
                Ok(Done::read(writable.len()))
            }
            VIRTIO_BLK_T_OUT => {
                if !writable.is_empty() {
                    return Err(RequestError::Direction(request_type));
                }
                if self.readonly {
                    return Err(RequestError::ReadOnly);
                }
                let mut file = self.seek_to(sector, readable.len())?;
                for (addr, len) in readable.parts() {
                    mem.write_all_volatile_to(addr, &mut file, len)?;
                }
                Ok(Done::written(readable.len()))
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.readonly {
                    self.file.sync_data()?;
                }
                Ok(Done::default())
            }
            VIRTIO_BLK_T_GET_ID => {
                if !readable.is_empty() {
                    return Err(RequestError::Direction(request_type));
                }
                let len = writable.write_from(mem, &self.id)?;
                Ok(Done {
                    to_chain: len as u32,
                    ..Done::default()
                })
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Checks `len` bytes at `sector` and positions the file there.
    fn seek_to(&self, sector: u64, len: usize) -> Result<&File, RequestError> {
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
        let mut file = &self.file;
        file.seek(SeekFrom::Start(sector * SECTOR_SIZE))?;
        Ok(file)
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
