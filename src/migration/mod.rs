//! Live migration between two tandem processes over a Unix socket or TCP
//! (endpoint.rs). The destination (`--migrate-listen`) accepts one
//! connection; the source (`PUT /migrate`) sends guest RAM while the
//! guest runs — all of it, then in rounds the pages written meanwhile
//! (dirty-page logging is turned on for the purpose) — then pauses the
//! guest, sends the last pages and the VM's state (a snapshot's state
//! file, framed and checksummed), and waits for the destination to run it. The source then
//! stops and exits; on any failure it carries on as before.
//!
//! The stream: a hello (magic, protocol version, RAM size), then records
//! (a tag byte, then its fields, little-endian): pages (`offset` u64 in
//! RAM laid out back to back as in a snapshot's memory file, `len` u32,
//! the bytes), and finally the state (`len` u64, the bytes). The
//! destination answers one record: a status byte (0 ok), `len` u32 and a
//! message. docs/migration.md has the rest.

mod endpoint;
mod receive;
mod send;

use std::io::{self, Read, Write};
use std::time::Duration;

use endpoint::Connection;
pub use endpoint::Endpoint;
pub use receive::{receive, Incoming};
pub use send::Sender;

const MAGIC: &[u8; 8] = b"TANDEMMG";
/// Bumped whenever the stream changes; both ends must speak the same.
const PROTOCOL_VERSION: u32 = 1;
const TAG_PAGES: u8 = 1;
const TAG_STATE: u8 = 2;
/// Most bytes in one pages record.
const MAX_PAGES_RECORD: u32 = 1 << 20;

/// What a finished migration measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Rounds of pages sent while the guest ran (the first sends all RAM).
    pub rounds: u32,
    /// Guest RAM bytes sent, over all rounds and the last copy.
    pub bytes_sent: u64,
    /// From the guest's pause to the destination running it, ms.
    pub downtime_ms: u64,
    /// From the connection to the destination running the guest, ms.
    pub total_ms: u64,
}

fn millis(time: Duration) -> u64 {
    time.as_millis().try_into().unwrap_or(u64::MAX)
}

fn read_u8(from: &mut impl Read) -> io::Result<u8> {
    let mut byte = [0u8];
    from.read_exact(&mut byte)?;
    Ok(byte[0])
}

fn read_u32(from: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    from.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(from: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    from.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn write_hello(to: &mut impl Write, ram: u64) -> io::Result<()> {
    to.write_all(MAGIC)?;
    to.write_all(&PROTOCOL_VERSION.to_le_bytes())?;
    to.write_all(&ram.to_le_bytes())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
