//! virtio-net on a host TAP interface: one receive and one transmit queue,
//! checksum/TSO offloads passed through the 12-byte `virtio_net_hdr_v1`,
//! mergeable receive buffers, and a config space with the MAC and link
//! status. The worker sleeps in epoll on the TAP fd and the queue kicks.
//!
//! A receive buffer the driver placed outside guest memory, with no
//! writable bytes, or longer than the descriptor cap is a broken driver:
//! the device asks for a reset.
//!
//! What the device holds for the driver is bounded: receive chains popped
//! while a frame waits keep only their writable segments, at most
//! [`MAX_RX_HELD_SEGMENTS`] of them (and at most the queue size in
//! chains); a frame those cannot hold is dropped and the chains kept for
//! smaller ones.
//!
//! Transmit completions are returned in batches (see `net_tx.rs`).
//!
//! Frames are counted in the device's [`IoStats`](super::IoStats) both
//! ways, by their Ethernet bytes (without the virtio-net header): received
//! frames as `bytes_read`, transmitted ones as `bytes_written`, and frames
//! dropped either way as errors.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use guest_memory::GuestMemoryMmap;
use libc::c_uint;
use log::debug;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::ring::take_available;
use super::tap::{Tap, VNET_HDR_LEN};
use super::timer::nonblocking_timer;
use super::worker::{publish, should_yield, QueuePosition, Worker, WorkerError, WorkerHandler};
use super::{
    add_used_batch, check_queue_count, feature, guarded, notify_since, pop_chain,
    read_config_bytes, ActivateContext, ActivateError, Chain, ChainError, Interrupt, LogLimit,
    Segments, VirtioDevice,
};

/// Frames the TAP took only part of.
static SHORT_WRITE: LogLimit = LogLimit::new();

const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Backend fds: the TAP, then the transmit batch's timer.
const TAP_FD: usize = 0;
/// Header plus the largest frame a TAP with TSO hands over (64 KiB of IP
/// plus Ethernet and VLAN headers).
const MAX_FRAME: usize = VNET_HDR_LEN + 0x1_0000 + 64;
/// Where `num_buffers` sits in the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// The most writable segments the device holds in receive chains popped
/// for a waiting frame (16 bytes each). A driver's usual buffers — one
/// segment each, or one chain of a few dozen — are far below it.
pub const MAX_RX_HELD_SEGMENTS: usize = 1024;

/// How the user described a NIC (`--net tap=NAME[,mac=MAC]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Host TAP interface to create or attach to.
    pub tap: String,
    /// Guest MAC address; random (locally administered) if absent.
    pub mac: Option<[u8; 6]>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2)?;
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Why a NIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP could not be opened or configured.
    #[error("tap {name}: {source}")]
    Tap {
        /// Interface name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No randomness for a MAC address.
    #[error("cannot generate a MAC address: {0}")]
    Mac(#[source] io::Error),
    /// No timerfd for the transmit batches.
    #[error("cannot create the transmit timer: {0}")]
    Timer(#[source] io::Error),
}

/// A virtio-net device.
pub struct Net {
    tap: Arc<Tap>,
    config: [u8; 8],
    /// Closes transmit batches; made here, before the threads are confined.
    tx_timer: Arc<Mutex<TimerFd>>,
    worker: Option<Worker>,
}

impl Net {
    /// Opens the TAP named in `config`.
    pub fn new(config: &NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&config.tap).map_err(|source| NetError::Tap {
            name: config.tap.clone(),
            source,
        })?;
        let mac = match config.mac {
            Some(mac) => mac,
            None => random_mac().map_err(NetError::Mac)?,
        };
        Self::with_tap(tap, mac)
    }

    fn with_tap(tap: Tap, mac: [u8; 6]) -> Result<Self, NetError> {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        config[6..].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let tx_timer = nonblocking_timer().map_err(NetError::Timer)?;
        Ok(Self {
            tap: Arc::new(tap),
            config,
            tx_timer: Arc::new(Mutex::new(tx_timer)),
            worker: None,
        })
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }

    /// The host interface name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }
}

/// A random unicast, locally administered MAC.
pub fn random_mac() -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut mac)?;
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(mac)
}

/// The TAP offloads (`TUN_F_*`) matching the receive features the guest
/// accepted; TSO only with checksum offload, as the TAP requires.
fn tap_offload(features: u64) -> c_uint {
    let has = |bit| features & feature(bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    for (bit, flag) in [
        (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
        (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
        (VIRTIO_NET_F_GUEST_ECN, libc::TUN_F_TSO_ECN),
    ] {
        if has(bit) {
            flags |= flag;
        }
    }
    flags
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ]
        .into_iter()
        .fold(0, |features, bit| features | feature(bit))
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, 2)?;
        let offload = tap_offload(ctx.features);
        self.tap
            .set_offload(offload)
            .map_err(ActivateError::Backend)?;
        let mergeable = ctx.features & feature(VIRTIO_NET_F_MRG_RXBUF) != 0;
        let (queues, kicks) = ctx.queues.into_iter().map(|q| (q.queue, q.kick)).unzip();
        let tx_batch = TxBatch::new(self.tx_timer.clone());
        let handler = NetHandler {
            mergeable,
            ..NetHandler::new(
                self.tap.clone(),
                ctx.mem,
                queues,
                ctx.interrupt.clone(),
                tx_batch,
            )
        };
        let worker = Worker::spawn("virtio-net", ctx.start, kicks, ctx.interrupt, handler);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

/// Fuzzing hook (feature `fuzzing`), not an API: the device's queue
/// handler over a TAP stand-in (`tap`: one end of a datagram socket pair),
/// serving `queues` (receive, transmit) in `mem` on the caller's thread.
/// [`Net::activate`] cannot be used there: TUNSETOFFLOAD needs a real TAP.
/// Transmit completions are held until [`WorkerHandler::flush`].
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_handler(
    tap: std::fs::File,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    mergeable: bool,
) -> io::Result<impl WorkerHandler> {
    let tap = Arc::new(Tap::from_file(tap, "fuzz0"));
    let tx_batch = TxBatch::new(Arc::new(Mutex::new(nonblocking_timer()?)));
    Ok(NetHandler {
        mergeable,
        ..NetHandler::new(tap, mem, queues, interrupt, tx_batch)
    })
}

struct NetHandler {
    tap: Arc<Tap>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    mergeable: bool,
    /// A frame read from the TAP, waiting for receive buffers.
    rx_frame: Vec<u8>,
    rx_len: usize,
    /// Receive buffers popped but not yet filled.
    rx_held: VecDeque<RxBuffer>,
    /// Segments in `rx_held`, at most [`MAX_RX_HELD_SEGMENTS`].
    rx_held_segments: usize,
    tx_frame: Vec<u8>,
    tx_batch: TxBatch,
}

impl NetHandler {
    fn new(
        tap: Arc<Tap>,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<Interrupt>,
        tx_batch: TxBatch,
    ) -> Self {
        Self {
            tap,
            mem,
            queues,
            interrupt: irq,
            mergeable: false,
            rx_frame: vec![0; MAX_FRAME],
            rx_len: 0,
            rx_held: VecDeque::new(),
            rx_held_segments: 0,
            tx_frame: vec![0; MAX_FRAME],
            tx_batch,
        }
    }

    /// Sends every queued frame; their completions go into the batch
    /// (`net_tx.rs` says when it is published).
    fn transmit(&mut self) -> Result<(), WorkerError> {
        let (mem, tap, frame) = (&self.mem, &self.tap, &mut self.tx_frame);
        let (interrupt, batch) = (&self.interrupt, &mut self.tx_batch);
        let io = interrupt.io_stats();
        take_available(&mut self.queues[TX_QUEUE], mem, |queue, chain| {
            let bytes = match send_frame(mem, tap, frame, &chain) {
                Ok(len) => {
                    io.record(0, len - VNET_HDR_LEN);
                    len
                }
                Err(e) => {
                    debug!("virtio-net: frame {} dropped: {e}", chain.head);
                    io.record_error();
                    0
                }
            };
            if batch.hold(queue, chain.head, bytes) {
                return batch.publish(TX_QUEUE, queue, mem, interrupt);
            }
            Ok(true)
        })
        .map_err(tx_queue_error)?;
        self.tx_batch.arm().map_err(WorkerError::Backend)
    }

    /// Publishes the transmit completions held.
    fn publish_transmitted(&mut self) -> Result<(), WorkerError> {
        let queue = &mut self.queues[TX_QUEUE];
        self.tx_batch
            .publish(TX_QUEUE, queue, &self.mem, &self.interrupt)
            .map(drop)
            .map_err(tx_queue_error)
    }
}

fn tx_queue_error(source: virtio_queue::Error) -> WorkerError {
    WorkerError::Queue {
        index: TX_QUEUE,
        source,
    }
}

/// Sends one transmit chain (header and frame) to the TAP; returns its
/// length (more than the header's).
fn send_frame(
    mem: &GuestMemoryMmap,
    tap: &Tap,
    buf: &mut [u8],
    chain: &Chain,
) -> io::Result<usize> {
    let invalid = |e: ChainError| io::Error::new(io::ErrorKind::InvalidInput, e);
    chain.validate(mem).map_err(invalid)?;
    let readable = chain.readable();
    let len = readable.len();
    if len <= VNET_HDR_LEN || len > buf.len() {
        let message = format!("{len}-byte frame");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    readable.read_into(mem, &mut buf[..len]).map_err(invalid)?;
    let sent = tap.write_frame(&buf[..len])?;
    if sent != len {
        SHORT_WRITE.warn(format_args!("virtio-net: tap took {sent} of {len} bytes"));
    }
    Ok(len)
}

impl WorkerHandler for NetHandler {
    /// Receive buffers held for a frame go back to the ring (the ring is
    /// in order, so they are the last ones taken); the frame itself, if
    /// one was waiting, is lost like any frame on a wire.
    fn queue_positions(&self) -> Vec<QueuePosition> {
        let mut positions: Vec<QueuePosition> = self.queues.iter().map(QueuePosition::of).collect();
        let rx = &mut positions[RX_QUEUE];
        rx.next_avail = rx.next_avail.wrapping_sub(self.rx_held.len() as u16);
        positions
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        match index {
            RX_QUEUE => self.receive(),
            _ => self.transmit(),
        }
    }

    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        let timer = self.tx_batch.timer_fd();
        // The TAP is edge-triggered: it is drained until it would block or
        // the buffers run out, and a receive kick resumes it.
        vec![
            (
                self.tap.as_raw_fd(),
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
            (timer, EventSet::IN),
        ]
    }

    fn backend_event(&mut self, index: usize, _events: EventSet) -> Result<(), WorkerError> {
        match index {
            // Frames from the network (a bulk sender's ACKs, say) mean what
            // was sent has left: its completions go out with them, without
            // waiting for the timer, which a busy host may serve late.
            TAP_FD => self.receive().and_then(|()| self.publish_transmitted()),
            _ => {
                self.tx_batch.timer_fired();
                self.publish_transmitted()
            }
        }
    }

    fn flush(&mut self) -> Result<(), WorkerError> {
        self.publish_transmitted()
    }
}

#[path = "net_rx.rs"]
mod rx;
#[path = "net_tx.rs"]
mod tx;
#[cfg(test)]
use rx::split_frame;
use rx::RxBuffer;
use tx::TxBatch;

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
