//! The destination end: one connection, RAM into a memory file of its
//! own (a memfd: nobody else's, so the VM maps it shared and no page is
//! held twice), then the state; the caller builds the VM and answers.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::{
    read_u32, read_u64, read_u8, Connection, Endpoint, MAGIC, MAX_PAGES_RECORD, PROTOCOL_VERSION,
    TAG_PAGES, TAG_STATE,
};
use crate::snapshot::{Snapshot, MAX_BODY};

/// A migration received in full: the VM's state and RAM, and the source
/// waiting for the answer.
pub struct Incoming {
    /// The VM's state, checked like a state file.
    pub snapshot: Snapshot,
    /// Its RAM, regions back to back.
    pub memory: File,
    stream: Connection,
}

impl Incoming {
    /// Tells the source whether the guest runs here now.
    pub fn answer(mut self, result: &Result<()>) -> Result<()> {
        let (status, message) = match result {
            Ok(()) => (0u8, String::new()),
            Err(e) => (1, format!("{e:#}")),
        };
        let mut answer = vec![status];
        answer.extend((message.len() as u32).to_le_bytes());
        answer.extend(message.as_bytes());
        self.stream
            .write_all(&answer)
            .context("migration: answering the source")
    }
}

/// Waits on `endpoint` for one migration and receives it.
pub fn receive(endpoint: &Endpoint) -> Result<Incoming> {
    let mut stream = endpoint.accept_one()?;
    let ram = read_hello(&mut stream)?;
    let memory = memfd::MemfdOptions::default()
        .close_on_exec(true)
        .create("tandem-guest-ram")
        .context("migration: a memory file for guest RAM")?
        .into_file();
    memory.set_len(ram).context("migration: sizing guest RAM")?;
    let mut buf = vec![0u8; MAX_PAGES_RECORD as usize];
    loop {
        match read_u8(&mut stream).context("migration: the stream ended early")? {
            TAG_PAGES => {
                let offset = read_u64(&mut stream)?;
                let len = read_u32(&mut stream)?;
                if len > MAX_PAGES_RECORD
                    || offset.checked_add(len.into()).is_none_or(|end| end > ram)
                {
                    bail!("migration: {len} bytes at {offset:#x} do not fit {ram} bytes of RAM");
                }
                let bytes = &mut buf[..len as usize];
                stream.read_exact(bytes)?;
                memory.write_all_at(bytes, offset)?;
            }
            TAG_STATE => {
                let len = read_u64(&mut stream)?;
                if len > MAX_BODY + 64 {
                    bail!("migration: a state of {len} bytes");
                }
                let mut state = vec![0u8; len as usize];
                stream.read_exact(&mut state)?;
                let snapshot = Snapshot::from_framed(&state).context("migration: the VM state")?;
                return Ok(Incoming {
                    snapshot,
                    memory,
                    stream,
                });
            }
            tag => bail!("migration: unknown record {tag}"),
        }
    }
}

/// Checks the hello; returns the RAM size.
fn read_hello(stream: &mut Connection) -> Result<u64> {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).context("migration: hello")?;
    if &magic != MAGIC {
        bail!("migration: the peer is not a tandem migration source");
    }
    let version = read_u32(stream)?;
    if version != PROTOCOL_VERSION {
        bail!("migration: protocol version {version}, this tandem speaks {PROTOCOL_VERSION}");
    }
    Ok(read_u64(stream)?)
}
