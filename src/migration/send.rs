//! The source end: RAM while the guest runs, then with the guest paused
//! the last pages and the state, and the destination's answer.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::{
    millis, read_u32, read_u8, write_hello, Connection, Endpoint, Report, MAX_PAGES_RECORD,
    TAG_PAGES, TAG_STATE,
};
use crate::api::models::FullVmConfiguration;
use crate::dirty::DirtyPages;
use crate::machine::Machine;
use crate::snapshot::Snapshot;

/// Rounds while the guest runs stop once fewer pages than this were
/// written in the last one (4 MiB of 4 KiB pages)...
const FEW_PAGES: u64 = 1024;
/// ...or after this many: a guest writing faster than the link carries
/// is paused with what is left.
const MAX_ROUNDS: u32 = 10;
/// How long the destination may take to run the guest once it has all.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// How long one write may block (a destination that stopped reading).
const WRITE_WAIT: Duration = Duration::from_secs(30);

/// The source end of a migration, connected to its destination.
pub struct Sender {
    stream: Connection,
    started: Instant,
    rounds: u32,
    bytes_sent: u64,
    /// Pages the last round left for the stop-and-copy.
    left: Option<DirtyPages>,
}

impl Sender {
    /// Connects to the destination listening on `destination`, says
    /// hello, and turns on dirty-page logging in `machine`.
    pub fn connect(destination: &Endpoint, machine: &mut Machine) -> Result<Sender> {
        let stream = destination.connect()?;
        stream.set_timeouts(ANSWER_WAIT, WRITE_WAIT)?;
        let mut sender = Sender {
            stream,
            started: Instant::now(),
            rounds: 0,
            bytes_sent: 0,
            left: None,
        };
        let ram = machine.guest_memory().iter().map(|r| r.len()).sum();
        write_hello(&mut sender.stream, ram).context("migration: hello")?;
        machine.start_dirty_log()?;
        Ok(sender)
    }

    /// Sends RAM while the guest runs: all of it (but all-zero chunks),
    /// then the pages written meanwhile, round after round, until a round
    /// finds few or the rounds run out.
    pub fn precopy(&mut self, machine: &Machine) -> Result<()> {
        let mem = machine.guest_memory();
        self.send_all(mem)?;
        self.rounds = 1;
        loop {
            let dirty = machine.take_dirty_pages()?;
            if dirty.count() < FEW_PAGES || self.rounds == MAX_ROUNDS {
                self.left = Some(dirty);
                return Ok(());
            }
            self.send_dirty(mem, &dirty)?;
            self.rounds += 1;
        }
    }

    /// With the guest paused (since `paused_at`): the pages written since
    /// the last round, the VM's state, and the destination's answer.
    pub fn finish(
        mut self,
        machine: &Machine,
        config: FullVmConfiguration,
        paused_at: Instant,
    ) -> Result<Report> {
        let mem = machine.guest_memory();
        // The state first: saving it may write guest RAM (aarch64's VGIC
        // flushes pending bits and ITS tables there), which the dirty
        // log then has for the pages that follow.
        let state = Snapshot::new(config, machine.save_state()?).to_framed()?;
        match self.left.take() {
            Some(left) => {
                self.send_dirty(mem, &left)?;
                self.send_dirty(mem, &machine.take_dirty_pages()?)?;
            }
            // No pre-copy (the dirty log is not complete on this
            // architecture): all of RAM now, the guest paused.
            None => self.send_all(mem)?,
        }
        let stream = &mut self.stream;
        let mut header = vec![TAG_STATE];
        header.extend((state.len() as u64).to_le_bytes());
        stream
            .write_all(&header)
            .and_then(|()| stream.write_all(&state))
            .context("migration: sending the VM state")?;
        let status = read_u8(stream).context("migration: the destination's answer")?;
        let len = read_u32(stream)?.min(4096);
        let mut message = vec![0u8; len as usize];
        stream.read_exact(&mut message)?;
        if status != 0 {
            bail!(
                "the destination could not run the guest: {}",
                String::from_utf8_lossy(&message)
            );
        }
        Ok(Report {
            rounds: self.rounds,
            bytes_sent: self.bytes_sent,
            downtime_ms: millis(paused_at.elapsed()),
            total_ms: millis(self.started.elapsed()),
        })
    }

    /// Every region, in 1 MiB records, but chunks that are all zeros (the
    /// destination's RAM starts zeroed).
    fn send_all(&mut self, mem: &GuestMemoryMmap) -> Result<()> {
        let mut buf = vec![0u8; MAX_PAGES_RECORD as usize];
        let mut base = 0;
        for region in mem.iter() {
            let mut done = 0;
            while done < region.len() {
                let len = (region.len() - done).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..len];
                region
                    .read_slice(chunk, MemoryRegionAddress(done))
                    .context("reading guest memory")?;
                if chunk.iter().any(|&b| b != 0) {
                    self.send_pages(base + done, chunk)?;
                }
                done += len as u64;
            }
            base += region.len();
        }
        Ok(())
    }

    /// The `dirty` pages of `mem`, runs of neighbours in one record.
    fn send_dirty(&mut self, mem: &GuestMemoryMmap, dirty: &DirtyPages) -> Result<()> {
        let mut buf = Vec::with_capacity(MAX_PAGES_RECORD as usize);
        for run in dirty.runs(mem, MAX_PAGES_RECORD as usize) {
            buf.resize(run.len, 0);
            mem.read_slice(&mut buf, run.addr)
                .context("reading guest memory")?;
            self.send_pages(run.offset, &buf)?;
        }
        Ok(())
    }

    fn send_pages(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let stream = &mut self.stream;
        // One write for the header: on TCP (no Nagle) each write may be
        // a segment of its own.
        let mut header = vec![TAG_PAGES];
        header.extend(offset.to_le_bytes());
        header.extend((bytes.len() as u32).to_le_bytes());
        stream
            .write_all(&header)
            .and_then(|()| stream.write_all(bytes))
            .context("migration: sending guest memory")?;
        self.bytes_sent += bytes.len() as u64;
        Ok(())
    }
}
