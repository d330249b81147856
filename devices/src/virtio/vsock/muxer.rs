//! The vsock worker's handler: the table of connections and the packets
//! the guest transmits (TX queue). The host side (listener, handshakes,
//! host stream readiness) is in host.rs, the RX queue in rx.rs.
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

use log::debug;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::conn::{Conn, Intake, Key, State};
use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::worker::{
    come_back_later, should_yield, QueuePosition, WorkerError, WorkerHandler,
};
use crate::virtio::{guarded, notify_since, pop_chain, Chain, Interrupt, LogLimit};

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
    tx: Queue,
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
    #[allow(clippy::too_many_arguments)]
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
            REPLIES_FULL.warn(format_args!("virtio-vsock: too many replies waiting, RST dropped"));
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

    /// Serves the packets the guest has transmitted, one at a time (no
    /// payload is held past its packet), up to twice the queue size per
    /// call so other connections and queues get their turn.
    fn transmit(&mut self) -> Result<(), WorkerError> {
        let error = |source| WorkerError::Queue {
            index: TX_QUEUE,
            source,
        };
        let old_used = self.tx.next_used();
        let budget = usize::from(self.tx.size()).max(1) * 2;
        let (mut served, mut last_rearm) = (0, None);
        loop {
            if should_yield() {
                break;
            }
            if served == budget {
                come_back_later();
                break;
            }
            let Some(chain) = pop_chain(&mut self.tx, &self.mem).map_err(error)? else {
                // Re-arm kicks; look again if the driver just added more,
                // unless nothing could be popped since the last look.
                let position = self.tx.next_avail();
                let more = guarded(|| self.tx.enable_notification(&self.mem)).map_err(error)?;
                if !more.unwrap_or(false) || last_rearm == Some(position) {
                    break;
                }
                last_rearm = Some(position);
                continue;
            };
            let header = read_packet(&self.mem, &chain, &mut self.scratch);
            if guarded(|| self.tx.add_used(&self.mem, chain.head, 0))
                .map_err(error)?
                .is_none()
            {
                return Ok(());
            }
            served += 1;
            if let Some(header) = header {
                let payload = std::mem::take(&mut self.scratch);
                self.guest_packet(&header, &payload[..header.len as usize]);
                self.scratch = payload;
            }
        }
        guarded(|| notify_since(&self.tx, &self.mem, &self.interrupt, old_used)).map_err(error)?;
        Ok(())
    }

    /// Acts on one well-formed guest packet.
    pub(super) fn guest_packet(&mut self, header: &Header, payload: &[u8]) {
        if header.src_cid != self.guest_cid || header.dst_cid != HOST_CID {
            MALFORMED.warn(format_args!(
                "virtio-vsock: packet from cid {} to cid {} dropped",
                header.src_cid, header.dst_cid
            ));
            return;
        }
        if header.kind != TYPE_STREAM {
            self.reply_rst(header);
            return;
        }
        let key = Key {
            local: header.dst_port,
            peer: header.src_port,
        };
        if header.op == op::REQUEST {
            self.guest_connect(key, header);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            self.reply_rst(header);
            return;
        };
        conn.peer_credit(header);
        match header.op {
            op::RESPONSE if conn.state == State::Connecting => {
                conn.state = State::Established;
                let ok = format!("OK {}\n", key.local);
                if std::io::Write::write_all(&mut conn.stream, ok.as_bytes()).is_err() {
                    self.close(key, true);
                    return;
                }
            }
            op::RST => {
                self.close(key, false);
                return;
            }
            op::SHUTDOWN => {
                conn.guest_shut |= header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if conn.flush_to_host().is_err() || conn.finished() {
                    self.close(key, true);
                    return;
                }
            }
            op::RW if conn.state == State::Established => {
                if conn.take_guest_data(payload) == Intake::Overrun {
                    MALFORMED.warn(format_args!(
                        "virtio-vsock: guest port {} sent past its credit, reset",
                        key.peer
                    ));
                    self.close(key, true);
                    return;
                }
                if conn.flush_to_host().is_err() {
                    self.close(key, true);
                    return;
                }
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => conn.owe_credit = true,
            _ => {
                // RESPONSE or RW out of turn, or an unknown op.
                MALFORMED.warn(format_args!(
                    "virtio-vsock: op {} out of turn on port {}, reset",
                    header.op, key.local
                ));
                self.close(key, true);
                return;
            }
        }
        self.refresh(key);
    }

    /// A guest REQUEST: joins it to the host program listening on
    /// `<uds_path>_<port>`, or refuses it with an RST.
    fn guest_connect(&mut self, key: Key, header: &Header) {
        if self.conns.contains_key(&key) {
            // A second REQUEST on a live connection: both are reset.
            self.close(key, true);
            return;
        }
        if self.open_count() >= MAX_CONNECTIONS {
            REFUSED.warn(format_args!(
                "virtio-vsock: {MAX_CONNECTIONS} connections open, guest connect to port {} refused",
                key.local
            ));
            self.reply_rst(header);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.local));
        let stream = match super::host::connect(path.as_ref()) {
            Ok(stream) => stream,
            Err(e) => {
                debug!("virtio-vsock: guest connect to port {}: {e}", key.local);
                self.reply_rst(header);
                return;
            }
        };
        let token = self.new_token();
        let mut conn = Conn::new(stream, token, State::Established);
        conn.peer_credit(header);
        conn.owe_response = true;
        self.tokens.insert(token, Token::Conn(key));
        self.conns.insert(key, conn);
        self.refresh(key);
    }
}

/// Reads a guest packet's header and its payload into `payload`; `None`
/// (logged) for a malformed one.
fn read_packet(mem: &GuestMemoryMmap, chain: &Chain, payload: &mut [u8]) -> Option<Header> {
    let mut readable = chain.readable();
    let malformed = |why: &dyn std::fmt::Display| {
        MALFORMED.warn(format_args!(
            "virtio-vsock: packet {} dropped: {why}",
            chain.head
        ));
    };
    if let Err(e) = chain.validate(mem) {
        malformed(&e);
        return None;
    }
    let mut bytes = [0u8; HDR_LEN];
    if let Err(e) = readable
        .split_front(HDR_LEN)
        .and_then(|h| h.read_into(mem, &mut bytes))
    {
        malformed(&e);
        return None;
    }
    let header = Header::decode(&bytes);
    let len = header.len as usize;
    if len > MAX_PAYLOAD || (header.op != op::RW && len != 0) {
        malformed(&format_args!("{len}-byte payload with op {}", header.op));
        return None;
    }
    if let Err(e) = readable.read_into(mem, &mut payload[..len]) {
        malformed(&e);
        return None;
    }
    Some(header)
}

impl WorkerHandler for Muxer {
    /// Connections live in the host sockets and cannot be carried to
    /// another process; snapshots refuse a VM with vsock before asking.
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
