//! One vsock stream connection as the device sees it: the host-side Unix
//! stream, what is owed to the guest next (control packets, data), and the
//! credit accounting both ways.
//!
//! Guest to host: bytes the guest sends wait in `to_host` until the host
//! program reads them. The guest may send no more than the credit we
//! advertised (`BUF_ALLOC` less what we hold), so `to_host` never exceeds
//! `BUF_ALLOC`; a guest that overruns it is reset. A slow host reader
//! therefore costs at most `BUF_ALLOC` per connection and only stalls its
//! own connection.
//!
//! Host to guest: data is read from the host stream only when an RX buffer
//! is in hand and the guest has credit (`peer_free`), straight into that
//! buffer; nothing is buffered on this side at all.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use vmm_sys_util::epoll::EventSet;

use super::packet::{op, Header, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer each connection advertises to the guest.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// After the host has read this much since our last credit report, we
/// report again unprompted (the guest may be waiting for credit).
const CREDIT_REPORT_STEP: u32 = BUF_ALLOC / 4;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST owed or sent, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows.
    Established,
}

/// Ports of a connection: `local` on the host side, `peer` in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Host-side port.
    pub local: u32,
    /// Guest-side port.
    pub peer: u32,
}

/// One connection.
pub struct Conn {
    pub(super) stream: UnixStream,
    pub(super) token: u64,
    pub(super) state: State,
    /// Control packets owed to the guest.
    pub(super) owe_request: bool,
    pub(super) owe_response: bool,
    pub(super) owe_shutdown: u32,
    pub(super) owe_credit: bool,
    /// The guest's receive buffer and what it has consumed of our data.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest so far.
    sent: u32,
    /// Guest bytes handed to the host program so far, and the value last
    /// reported to the guest.
    fwd_cnt: u32,
    reported_fwd_cnt: u32,
    /// Guest bytes the host program has not read yet (≤ `BUF_ALLOC`).
    pub(super) to_host: VecDeque<u8>,
    /// The host stream had data (or EOF) last we looked.
    pub(super) host_readable: bool,
    /// The host program will send no more (we told the guest).
    pub(super) host_eof: bool,
    /// SHUTDOWN flags the guest sent.
    pub(super) guest_shut: u32,
    /// Our write side of the host stream is shut.
    write_shut: bool,
    /// In the muxer's RX wait list.
    pub(super) queued: bool,
    /// Events registered in the muxer's epoll set (empty: not registered).
    pub(super) interest: EventSet,
}

/// What [`Conn::take_guest_data`] made of a guest RW packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Intake {
    /// Kept.
    Kept,
    /// More than the credit allowed: the guest broke the protocol.
    Overrun,
}

impl Conn {
    /// A connection over `stream` in `state`.
    pub fn new(stream: UnixStream, token: u64, state: State) -> Self {
        Self {
            stream,
            token,
            state,
            owe_request: false,
            owe_response: false,
            owe_shutdown: 0,
            owe_credit: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            sent: 0,
            fwd_cnt: 0,
            reported_fwd_cnt: 0,
            to_host: VecDeque::new(),
            host_readable: false,
            host_eof: false,
            guest_shut: 0,
            write_shut: false,
            queued: false,
            interest: EventSet::empty(),
        }
    }

    /// Takes the credit fields of any guest packet on this connection.
    pub fn peer_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// Bytes the guest has room for.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.sent.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether host data may be read for the guest now.
    pub fn may_read_host(&self) -> bool {
        self.state == State::Established && !self.host_eof && self.guest_shut & SHUTDOWN_RCV == 0
    }

    /// Whether a packet is owed to the guest (given an RX buffer).
    pub fn wants_rx(&self) -> bool {
        self.owe_request
            || self.owe_response
            || self.owe_shutdown != 0
            || self.owe_credit
            || (self.may_read_host() && self.host_readable && self.peer_free() > 0)
    }

    /// The events to watch on the host stream: readable while we could
    /// forward its data and do not know it to be readable already,
    /// writable while guest data waits.
    pub fn wanted_interest(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.may_read_host() && !self.host_readable {
            events |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    /// Keeps the payload of a guest RW packet, if the credit allows it.
    pub fn take_guest_data(&mut self, data: &[u8]) -> Intake {
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return Intake::Overrun;
        }
        self.to_host.extend(data);
        Intake::Kept
    }

    /// Writes waiting guest data to the host program until it would block,
    /// then shuts our write side if the guest will send no more. Owes the
    /// guest a credit update once enough was read. An error means the host
    /// program is gone.
    pub fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let unreported = self.fwd_cnt.wrapping_sub(self.reported_fwd_cnt);
        if unreported >= CREDIT_REPORT_STEP || (self.to_host.is_empty() && unreported > 0) {
            self.owe_credit = true;
        }
        if self.to_host.is_empty() && self.guest_shut & SHUTDOWN_SEND != 0 && !self.write_shut {
            self.write_shut = true;
            // The host program may have closed already; nothing to tell.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Whether the guest closed both ways and everything it sent reached
    /// the host program: time to reset and forget the connection.
    pub fn finished(&self) -> bool {
        self.guest_shut == SHUTDOWN_RCV | SHUTDOWN_SEND && self.to_host.is_empty()
    }

    /// A header from us to the guest on connection `key`, carrying our
    /// credit; records that the credit was reported.
    pub fn header(&mut self, key: Key, guest_cid: u64, op: u16) -> Header {
        self.reported_fwd_cnt = self.fwd_cnt;
        self.owe_credit = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: key.local,
            dst_port: key.peer,
            kind: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
            ..Header::default()
        }
    }

    /// The next control packet owed, if any, marked as paid.
    pub fn next_control(&mut self, key: Key, guest_cid: u64) -> Option<Header> {
        let op = if std::mem::take(&mut self.owe_request) {
            op::REQUEST
        } else if std::mem::take(&mut self.owe_response) {
            op::RESPONSE
        } else if self.owe_shutdown != 0 {
            let mut header = self.header(key, guest_cid, op::SHUTDOWN);
            header.flags = std::mem::take(&mut self.owe_shutdown);
            return Some(header);
        } else if self.owe_credit {
            op::CREDIT_UPDATE
        } else {
            return None;
        };
        Some(self.header(key, guest_cid, op))
    }

    /// Counts `n` payload bytes sent to the guest.
    pub fn record_sent(&mut self, n: u32) {
        self.sent = self.sent.wrapping_add(n);
    }
}
