//! The vsock worker's handler: the table of connections, shared by the
//! guest's packets (TX queue, tx.rs), the host side (listener, handshakes,
//! host stream readiness, host.rs) and the RX queue (rx.rs).
//!
//! All host sockets sit in one epoll set of the muxer's own; the worker
//! watches that set's fd, so connections come and go without the worker
//! knowing. Interest is level-triggered and kept to what can be acted on
//! (see [`Conn::wanted_interest`]), so an unread host stream or a full
//! guest never makes the worker spin.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_queue::Queue;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::conn::{Conn, Key};
use super::packet::{op, Header, HDR_LEN, HOST_CID};
use super::{EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::worker::{QueuePosition, WorkerError, WorkerHandler};
use crate::virtio::{Interrupt, LogLimit};

/// Guest packets dropped as malformed.
pub(super) static MALFORMED: LogLimit = LogLimit::new();
/// Connections refused at the limit.
pub(super) static REFUSED: LogLimit = LogLimit::new();
/// Control replies dropped because too many were waiting.
static REPLIES_FULL: LogLimit = LogLimit::new();

/// The most payload one guest packet may carry (Linux sends at most 64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Connections (and host handshakes in progress) at once, each holding
/// at most [`super::conn::BUF_ALLOC`] of guest data.
pub const MAX_CONNECTIONS: usize = 64;
/// Control replies without a connection (RSTs) waiting for RX buffers.
const MAX_REPLIES: usize = 2 * MAX_CONNECTIONS;
/// The epoll token of the listening socket.
pub(super) const LISTENER_TOKEN: u64 = 0;

/// What an epoll token stands for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Token {
    /// A host program that has not said `CONNECT <port>` yet.
    Handshake,
    /// A connection.
    Conn(Key),
}

/// The vsock device's worker handler.
pub struct Muxer {
    pub(super) guest_cid: u64,
    pub(super) uds_path: PathBuf,
    pub(super) listener: Arc<UnixListener>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    pub(super) events: Queue,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) poll: Epoll,
    pub(super) conns: HashMap<Key, Conn>,
    pub(super) tokens: HashMap<u64, Token>,
    pub(super) handshakes: HashMap<u64, (UnixStream, Vec<u8>)>,
    next_token: u64,
    next_local_port: u32,
    /// Connections owing the guest a packet, in turn.
    pub(super) rx_wait: VecDeque<Key>,
    /// RSTs owed for packets that have no connection (any more).
    pub(super) replies: VecDeque<Header>,
    /// A TRANSPORT_RESET event is owed to the driver.
    pub(super) reset_event: bool,
    /// Scratch space for one packet either way.
    pub(super) scratch: Vec<u8>,
}

impl Muxer {
    /// A handler for `guest_cid` over the three queues, accepting host
    /// connections on `listener`. With `reset_event`, the driver is told
    /// once that earlier connections are gone.
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: Arc<UnixListener>,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        reset_event: bool,
    ) -> std::io::Result<Self> {
        let poll = Epoll::new()?;
        let event = EpollEvent::new(EventSet::IN, LISTENER_TOKEN);
        poll.ctl(ControlOperation::Add, listener.as_raw_fd(), event)?;
        let events = queues.remove(EVENT_QUEUE);
        let tx = queues.remove(TX_QUEUE);
        let rx = queues.remove(RX_QUEUE);
        Ok(Self {
            guest_cid,
            uds_path,
            listener,
            mem,
            rx,
            tx,
            events,
            interrupt,
            poll,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            handshakes: HashMap::new(),
            next_token: LISTENER_TOKEN + 1,
            next_local_port: 1 << 30,
            rx_wait: VecDeque::new(),
            replies: VecDeque::new(),
            reset_event,
            scratch: vec![0; HDR_LEN + MAX_PAYLOAD],
        })
    }

    /// Connections and handshakes open now.
    pub fn open_count(&self) -> usize {
        self.conns.len() + self.handshakes.len()
    }

    pub(super) fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A host-side port no connection uses, for a host-initiated one.
    pub(super) fn new_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(1 << 30);
            if !self.conns.keys().any(|key| key.local == port) {
                return port;
            }
        }
    }

    /// Owes an RST for `header` (a packet with no connection), if room.
    pub(super) fn reply_rst(&mut self, header: &Header) {
        if header.op == op::RST {
            return;
        }
        if self.replies.len() >= MAX_REPLIES {
            REPLIES_FULL.warn(format_args!(
                "virtio-vsock: too many replies waiting, RST dropped"
            ));
            return;
        }
        self.replies.push_back(header.reply(op::RST));
    }

    /// Forgets connection `key`, closing its host stream, and owes the
    /// guest an RST if `rst`.
    pub(super) fn close(&mut self, key: Key, rst: bool) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.tokens.remove(&conn.token);
        if rst {
            let header = Header {
                src_cid: self.guest_cid,
                dst_cid: HOST_CID,
                src_port: key.peer,
                dst_port: key.local,
                ..Header::default()
            };
            self.reply_rst(&header);
        }
        // Dropping the stream removes it from the epoll set.
    }

    /// Brings the epoll registration of `key` in line with what it can
    /// act on, and queues it for the RX queue if it owes the guest.
    pub(super) fn refresh(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            let fd = conn.stream.as_raw_fd();
            let operation = match (conn.interest.is_empty(), wanted.is_empty()) {
                (true, _) => ControlOperation::Add,
                (false, true) => ControlOperation::Delete,
                (false, false) => ControlOperation::Modify,
            };
            let event = EpollEvent::new(wanted, conn.token);
            match self.poll.ctl(operation, fd, event) {
                Ok(()) => conn.interest = wanted,
                Err(e) => {
                    debug!("virtio-vsock: epoll for port {}: {e}", key.local);
                    self.close(key, true);
                    return;
                }
            }
        }
        if conn.wants_rx() && !conn.queued {
            conn.queued = true;
            self.rx_wait.push_back(key);
        }
    }
}

impl WorkerHandler for Muxer {
    /// Only the queues: connections live in the host sockets and cannot
    /// be carried to another process (a restored device resets them).
    fn queue_positions(&self) -> Vec<QueuePosition> {
        [&self.rx, &self.tx, &self.events]
            .into_iter()
            .map(QueuePosition::of)
            .collect()
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        match index {
            RX_QUEUE => {}
            TX_QUEUE => self.transmit()?,
            _ => self.post_reset_event()?,
        }
        self.receive()
    }

    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        vec![(self.poll.as_raw_fd(), EventSet::IN)]
    }

    fn backend_event(&mut self, _index: usize, _events: EventSet) -> Result<(), WorkerError> {
        self.host_events();
        self.receive()
    }
}
