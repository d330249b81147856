//! The host side of the vsock muxer: host programs connecting to
//! `uds_path` and saying `CONNECT <port>\n`, guest connections joined to
//! `<uds_path>_<port>`, and readiness of the host streams.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use log::debug;
use rustix::net::{socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

use super::conn::{Conn, Key, State};
use super::muxer::{Muxer, Token, LISTENER_TOKEN, MAX_CONNECTIONS, REFUSED};

/// The longest handshake line: `CONNECT 4294967295\n` and some slack.
const MAX_HANDSHAKE: usize = 32;
/// Host events handled per wakeup, so one busy host program cannot keep
/// the worker from its queues.
const EVENTS_PER_WAKE: usize = 64;

/// Connects, without blocking, to a host program listening on `path`.
/// A Unix connect does not wait for the program to accept: it succeeds at
/// once, or fails at once when nobody listens (`ConnectionRefused`) or the
/// program's backlog is full (`WouldBlock`) — where a blocking connect
/// (std's) would hold the worker until the program accepted. rustix makes
/// the socket non-blocking from the start without unsafe code.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let fd = socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// What a handshake line asks for: the guest port of `CONNECT <port>`.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let port = line.strip_prefix("CONNECT ")?.trim_end();
    port.parse().ok()
}

impl Muxer {
    /// Serves the host sockets that are ready.
    pub(super) fn host_events(&mut self) {
        let mut events = vec![EpollEvent::default(); EVENTS_PER_WAKE];
        let ready = match self.poll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                debug!("virtio-vsock: epoll: {e}");
                return;
            }
        };
        for event in &events[..ready] {
            let token = event.data();
            if token == LISTENER_TOKEN {
                self.accept();
                continue;
            }
            match self.tokens.get(&token).copied() {
                Some(Token::Handshake) => self.handshake(token),
                Some(Token::Conn(key)) => self.stream_ready(key, event.event_set()),
                None => {}
            }
        }
    }

    /// Accepts host programs; past the connection limit they are closed
    /// at once (they read EOF instead of `OK`).
    fn accept(&mut self) {
        for _ in 0..MAX_CONNECTIONS {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("virtio-vsock: accept: {e}");
                    return;
                }
            };
            if self.open_count() >= MAX_CONNECTIONS {
                REFUSED.warn(format_args!(
                    "virtio-vsock: {MAX_CONNECTIONS} connections open, host connection refused"
                ));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.new_token();
            let event = EpollEvent::new(EventSet::IN, token);
            if let Err(e) = self
                .poll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
            {
                debug!("virtio-vsock: epoll: {e}");
                continue;
            }
            self.tokens.insert(token, Token::Handshake);
            self.handshakes.insert(token, (stream, Vec::new()));
        }
    }

    /// Reads a handshake line a byte at a time (what follows it is the
    /// connection's data), then asks the guest to accept the connection.
    fn handshake(&mut self, token: u64) {
        let Some((stream, line)) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8];
        let port = loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(line),
                Ok(1) if line.len() < MAX_HANDSHAKE => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EOF, an error, or a line too long.
                _ => break None,
            }
        };
        self.tokens.remove(&token);
        let Some((stream, line)) = self.handshakes.remove(&token) else {
            return;
        };
        // Registered for the handshake; the connection registers anew.
        let _ = self.poll.ctl(
            ControlOperation::Delete,
            stream.as_raw_fd(),
            EpollEvent::default(),
        );
        let Some(peer) = port else {
            debug!(
                "virtio-vsock: bad handshake {:?}, closed",
                String::from_utf8_lossy(&line)
            );
            return;
        };
        let key = Key {
            local: self.new_local_port(),
            peer,
        };
        let mut conn = Conn::new(stream, token, State::Connecting);
        conn.owe_request = true;
        self.tokens.insert(token, Token::Conn(key));
        self.conns.insert(key, conn);
        self.refresh(key);
    }

    /// A host stream is readable (or hung up) or writable.
    fn stream_ready(&mut self, key: Key, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let hangup = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
        if conn.interest.contains(EventSet::IN) && (events.contains(EventSet::IN) || hangup) {
            conn.host_readable = true;
        }
        if events.contains(EventSet::OUT) || hangup {
            if conn.flush_to_host().is_err() {
                self.close(key, true);
                return;
            }
            if conn.finished() {
                self.close(key, true);
                return;
            }
        }
        self.refresh(key);
    }
}
