//! The vsock RX queue (packets to the guest) and the event queue.
//!
//! Connections owing the guest a packet wait in turn; each RX buffer goes
//! to the next one, which then goes to the back of the line, so a busy
//! connection cannot starve the others. Host data is read straight into
//! the buffer, never more than the guest's credit, so a guest that does
//! not read makes its host program wait (socket backpressure), not the
//! VMM buffer.

use std::io::{self, Read};

use virtio_queue::{QueueOwnedT, QueueT};

use super::conn::Key;
use super::muxer::{Muxer, MALFORMED};
use super::packet::{op, EVENT_TRANSPORT_RESET, HDR_LEN, SHUTDOWN_SEND};
use super::{EVENT_QUEUE, RX_QUEUE};
use crate::virtio::worker::{come_back_later, should_yield, WorkerError};
use crate::virtio::{guarded, notify_since, pop_chain, Chain, Segments};

/// What the next RX buffer carries.
enum Outgoing {
    /// A packet of this many bytes is in the scratch buffer.
    Packet(usize),
    /// Nothing after all (the host stream had no data yet).
    Nothing,
}

impl Muxer {
    /// Fills RX buffers while packets are owed and buffers are available.
    pub(super) fn receive(&mut self) -> Result<(), WorkerError> {
        let error = |source| WorkerError::Queue {
            index: RX_QUEUE,
            source,
        };
        let old_used = self.rx.next_used();
        let budget = usize::from(self.rx.size()).max(1) * 2;
        let (mut served, mut last_rearm) = (0, None);
        while !self.replies.is_empty() || !self.rx_wait.is_empty() {
            if should_yield() {
                break;
            }
            if served == budget {
                come_back_later();
                break;
            }
            let Some(chain) = pop_chain(&mut self.rx, &self.mem).map_err(error)? else {
                let position = self.rx.next_avail();
                let more = guarded(|| self.rx.enable_notification(&self.mem)).map_err(error)?;
                if !more.unwrap_or(false) || last_rearm == Some(position) {
                    break;
                }
                last_rearm = Some(position);
                continue;
            };
            let Some(writable) = usable_buffer(&self.mem, &chain) else {
                // Handed back empty; the packet waits for a good buffer.
                if guarded(|| self.rx.add_used(&self.mem, chain.head, 0))
                    .map_err(error)?
                    .is_none()
                {
                    return Ok(());
                }
                served += 1;
                continue;
            };
            let room = writable.len().min(self.scratch.len());
            let len = match self.next_packet(room) {
                Outgoing::Packet(len) => len,
                Outgoing::Nothing => {
                    self.rx.go_to_previous_position();
                    continue;
                }
            };
            let written = match writable.write_from(&self.mem, &self.scratch[..len]) {
                Ok(n) => n as u32,
                Err(e) => {
                    MALFORMED.warn(format_args!("virtio-vsock: RX buffer: {e}"));
                    0
                }
            };
            if guarded(|| self.rx.add_used(&self.mem, chain.head, written))
                .map_err(error)?
                .is_none()
            {
                return Ok(());
            }
            served += 1;
        }
        guarded(|| notify_since(RX_QUEUE, &self.rx, &self.mem, &self.interrupt, old_used))
            .map_err(error)?;
        Ok(())
    }

    /// Puts the next owed packet, at most `room` bytes, in the scratch
    /// buffer: a connectionless reply first, then the next connection's.
    fn next_packet(&mut self, room: usize) -> Outgoing {
        if let Some(reply) = self.replies.pop_front() {
            self.scratch[..HDR_LEN].copy_from_slice(&reply.encode());
            return Outgoing::Packet(HDR_LEN);
        }
        while let Some(key) = self.rx_wait.pop_front() {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            let outgoing = self.connection_packet(key, room);
            self.refresh(key);
            if let Outgoing::Packet(_) = outgoing {
                return outgoing;
            }
        }
        Outgoing::Nothing
    }

    /// The packet connection `key` owes: control first, then data read
    /// from its host stream.
    fn connection_packet(&mut self, key: Key, room: usize) -> Outgoing {
        let cid = self.guest_cid;
        let Some(conn) = self.conns.get_mut(&key) else {
            return Outgoing::Nothing;
        };
        if let Some(header) = conn.next_control(key, cid) {
            self.scratch[..HDR_LEN].copy_from_slice(&header.encode());
            return Outgoing::Packet(HDR_LEN);
        }
        let credit = conn.peer_free() as usize;
        if !conn.may_read_host() || !conn.host_readable || credit == 0 {
            return Outgoing::Nothing;
        }
        let max = credit.min(room - HDR_LEN);
        let data = &mut self.scratch[HDR_LEN..HDR_LEN + max];
        let n = loop {
            match conn.stream.read(data) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.host_readable = false;
                    return Outgoing::Nothing;
                }
                Err(_) => {
                    self.close(key, true);
                    return Outgoing::Nothing;
                }
            }
        };
        let header = if n == 0 {
            // The host program will send no more: tell the guest.
            conn.host_eof = true;
            let mut header = conn.header(key, cid, op::SHUTDOWN);
            header.flags = SHUTDOWN_SEND;
            header
        } else {
            conn.record_sent(n as u32);
            let mut header = conn.header(key, cid, op::RW);
            header.len = n as u32;
            header
        };
        self.scratch[..HDR_LEN].copy_from_slice(&header.encode());
        Outgoing::Packet(HDR_LEN + n)
    }

    /// Tells the driver, once, that every connection was reset (the
    /// device was reset and its host streams closed).
    pub(super) fn post_reset_event(&mut self) -> Result<(), WorkerError> {
        if !self.reset_event {
            return Ok(());
        }
        let error = |source| WorkerError::Queue {
            index: EVENT_QUEUE,
            source,
        };
        let old_used = self.events.next_used();
        let Some(chain) = pop_chain(&mut self.events, &self.mem).map_err(error)? else {
            return Ok(());
        };
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = match chain.validate(&self.mem) {
            Ok(()) => chain.writable().write_from(&self.mem, &event).unwrap_or(0),
            Err(_) => 0,
        };
        if written == event.len() {
            self.reset_event = false;
        }
        let head = chain.head;
        if guarded(|| self.events.add_used(&self.mem, head, written as u32))
            .map_err(error)?
            .is_none()
        {
            return Ok(());
        }
        guarded(|| {
            notify_since(
                EVENT_QUEUE,
                &self.events,
                &self.mem,
                &self.interrupt,
                old_used,
            )
        })
        .map_err(error)?;
        Ok(())
    }
}

/// The writable bytes of an RX buffer, or `None` (logged) if it cannot
/// hold a header and a byte of data.
fn usable_buffer(mem: &guest_memory::GuestMemoryMmap, chain: &Chain) -> Option<Segments> {
    let writable = match chain.validate(mem) {
        Ok(()) => chain.writable(),
        Err(e) => {
            MALFORMED.warn(format_args!("virtio-vsock: RX buffer {}: {e}", chain.head));
            return None;
        }
    };
    if writable.len() <= HDR_LEN {
        MALFORMED.warn(format_args!(
            "virtio-vsock: {}-byte RX buffer, no room past a header",
            writable.len()
        ));
        return None;
    }
    Some(writable)
}
