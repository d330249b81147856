//! virtio-vsock with Firecracker's host side: the host end of every
//! connection is a Unix stream socket, not vhost-vsock. Host programs
//! connect to `uds_path` and say `CONNECT <port>\n` to reach a guest
//! listener (tandem answers `OK <host_port>\n`); a guest connecting to
//! CID 2, port P reaches the host program listening on `<uds_path>_P`.
//! docs/vsock.md describes the protocol as served and its limits.
//!
//! Three queues: RX (packets to the guest), TX (from it) and events. The
//! listening socket is bound when the device is built (before the main
//! thread's seccomp filter) and kept across device resets; connections
//! belong to the worker and end with it. A snapshot saves the queues but
//! no connection (they live in this process's host sockets): a restored
//! device tells the driver with a TRANSPORT_RESET event, as after a
//! device reset, so the guest drops its connections and keeps its
//! listeners.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::worker::{Start, Worker};
use super::{
    check_queue_count, feature, read_config_bytes, ActivateContext, ActivateError, VirtioDevice,
};

mod conn;
mod host;
mod muxer;
pub mod packet;
mod rx;
mod tx;

/// The virtio device ID of vsock.
pub const DEVICE_TYPE: u32 = VIRTIO_ID_VSOCK;

pub use conn::BUF_ALLOC;
pub use host::connect;
use muxer::Muxer;
pub use muxer::{MAX_CONNECTIONS, MAX_PAYLOAD};

/// The worker thread's name (its seccomp filter is chosen by it).
pub const WORKER_NAME: &str = "virtio-vsock";

const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const EVENT_QUEUE: usize = 2;
/// The lowest CID a guest may have (0–2 are reserved).
pub const MIN_GUEST_CID: u64 = 3;

/// Why a vsock device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0–2 (and the all-ones CID) are reserved.
    #[error("guest CID {0} is reserved (use 3 or more)")]
    ReservedCid(u64),
    /// The listening socket could not be created.
    #[error("vsock socket {path}: {source}")]
    Bind {
        /// The `uds_path`.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A virtio-vsock device.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: Arc<UnixListener>,
    worker: Option<Worker>,
    /// The device has been active before: its connections were dropped.
    was_active: bool,
}

impl Vsock {
    /// A device for guest CID `guest_cid`, listening on `uds_path`. A
    /// stale socket file there (nobody listening) is replaced; a live one
    /// or any other file is refused.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        if guest_cid < MIN_GUEST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::ReservedCid(guest_cid));
        }
        let bind_error = |source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        let listener = bind(uds_path).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener: Arc::new(listener),
            worker: None,
            was_active: false,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }
}

/// Binds `path`, replacing a socket file nobody listens on.
fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another program listens there",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => {}
    }
    UnixListener::bind(path)
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data)
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, 3)?;
        let (queues, kicks) = ctx.queues.into_iter().map(|q| (q.queue, q.kick)).unzip();
        // Started parked: restored from a snapshot, whose connections
        // stayed with the process that saved it.
        let connections_lost = self.was_active || ctx.start == Start::Parked;
        let muxer = Muxer::new(
            self.guest_cid,
            self.uds_path.clone(),
            self.listener.clone(),
            ctx.mem,
            queues,
            ctx.interrupt.clone(),
            connections_lost,
        )
        .map_err(ActivateError::Worker)?;
        self.was_active = true;
        let worker = Worker::spawn(WORKER_NAME, ctx.start, kicks, ctx.interrupt, muxer);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
