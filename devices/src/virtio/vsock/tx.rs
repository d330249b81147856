//! Packets the guest transmits (TX queue): validated, then acted on one
//! at a time against the connection table. A malformed packet is dropped
//! with a rate-limited line; a packet for no connection gets an RST.

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_queue::QueueT;

use super::conn::{Conn, Intake, Key, State};
use super::muxer::{Muxer, Token, MALFORMED, MAX_CONNECTIONS, MAX_PAYLOAD, REFUSED};
use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::TX_QUEUE;
use crate::virtio::worker::{come_back_later, should_yield, WorkerError};
use crate::virtio::{guarded, notify_since, pop_chain, Chain};

impl Muxer {
    /// Serves the packets the guest has transmitted, one at a time (no
    /// payload is held past its packet), up to twice the queue size per
    /// call so other connections and queues get their turn.
    pub(super) fn transmit(&mut self) -> Result<(), WorkerError> {
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
        guarded(|| notify_since(TX_QUEUE, &self.tx, &self.mem, &self.interrupt, old_used))
            .map_err(error)?;
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
