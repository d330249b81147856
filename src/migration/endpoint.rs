//! Where a migration goes: a Unix socket (`PATH` or `unix:PATH`) or a TCP
//! address (`tcp:IP:PORT`), and the one connection each end makes there.
//! Addresses are numeric: tandem resolves no host names (its threads run
//! under seccomp filters that do not open resolver files).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};

/// A migration's rendezvous, as `--migrate-listen` and `PUT /migrate`
/// name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket the destination creates, and removes once the source
    /// has connected.
    Unix(PathBuf),
    /// A TCP address the destination listens on.
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        if let Some(address) = text.strip_prefix("tcp:") {
            return address.parse().map(Endpoint::Tcp).map_err(|_| {
                format!("{text:?}: a TCP endpoint is tcp:IP:PORT, numeric (tcp:192.0.2.1:4000, tcp:[::1]:4000)")
            });
        }
        let path = text.strip_prefix("unix:").unwrap_or(text);
        if path.is_empty() {
            return Err("a migration endpoint must not be empty".into());
        }
        Ok(Endpoint::Unix(path.into()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

impl Endpoint {
    /// The source's connection to a listening destination.
    pub(super) fn connect(&self) -> Result<Connection> {
        let connection = match self {
            Endpoint::Unix(path) => UnixStream::connect(path).map(Connection::Unix),
            Endpoint::Tcp(address) => TcpStream::connect(address).map(Connection::Tcp),
        };
        connection.with_context(|| format!("migration destination {self}"))
    }

    /// The destination's end: listens, takes the first connection and
    /// stops listening (a Unix socket's file is removed).
    pub(super) fn accept_one(&self) -> Result<Connection> {
        let listening = || format!("migration endpoint {self}");
        let accepted = match self {
            Endpoint::Unix(path) => {
                let listener = UnixListener::bind(path).with_context(listening)?;
                log::info!("waiting for a migration on {self}");
                let accepted = listener.accept();
                let _ = std::fs::remove_file(path);
                accepted.map(|(stream, _)| Connection::Unix(stream))
            }
            Endpoint::Tcp(address) => {
                let listener = TcpListener::bind(address).with_context(listening)?;
                log::info!("waiting for a migration on {self}");
                listener.accept().map(|(stream, peer)| {
                    log::info!("migration source {peer} connected");
                    Connection::Tcp(stream)
                })
            }
        };
        accepted.context("migration: accepting the source")
    }
}

/// One end of a migration's stream.
pub(super) enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection {
    /// Bounds each blocking read and write. On TCP, small records go out
    /// at once: the last one (the state, then the answer) is what the
    /// guest's downtime waits on.
    pub(super) fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        match self {
            Connection::Unix(stream) => {
                stream.set_read_timeout(Some(read))?;
                stream.set_write_timeout(Some(write))
            }
            Connection::Tcp(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(read))?;
                stream.set_write_timeout(Some(write))
            }
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Unix(stream) => stream.read(buf),
            Connection::Tcp(stream) => stream.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Unix(stream) => stream.write(buf),
            Connection::Tcp(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
