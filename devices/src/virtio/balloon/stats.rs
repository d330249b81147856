//! The balloon's statistics queue (VIRTIO_BALLOON_F_STATS_VQ): the driver
//! puts one buffer of `(le16 tag, le64 value)` entries on the queue; the
//! device reads it, keeps it, and gives it back on each polling interval,
//! which is the driver's cue to refill it and queue it again. This file
//! owns parsing that buffer (bounded: a garbage buffer is refused whole,
//! unknown tags are skipped), the hold-and-give-back protocol and the
//! interval's timer.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use guest_memory::GuestMemoryMmap;
use serde::Serialize;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::timerfd::TimerFd;

use crate::virtio::{guarded, pop_chain, Chain, Interrupt};
use crate::LogLimit;

/// One statistic on the wire: le16 tag then le64 value, packed.
pub const STAT_LEN: usize = 10;
/// Most entries a buffer may hold. Linux sends at most 16 (one per tag it
/// knows); a longer buffer is refused rather than read.
pub const MAX_STATS: usize = 64;

static REFUSED: LogLimit = LogLimit::new();
static UNKNOWN_TAGS: LogLimit = LogLimit::new();

/// What the guest last reported, in Firecracker's field names; a field the
/// guest never reported is `None` and left out of the JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuestStats {
    /// Bytes swapped in (tag 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Bytes swapped out (tag 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Major page faults (tag 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Minor page faults (tag 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Bytes free (tag 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// Bytes of RAM the guest has (tag 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Bytes available to new programs (tag 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// Bytes of disk caches (tag 7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb page allocations (tag 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb page allocations (tag 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM kills (tag 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Allocation stalls (tag 11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    /// Pages scanned by kswapd (tag 12).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    /// Pages scanned in direct reclaim (tag 13).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    /// Pages reclaimed by kswapd (tag 14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    /// Pages reclaimed in direct reclaim (tag 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

impl GuestStats {
    /// The field for `tag`, `None` for a tag the spec does not define.
    fn field(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kill,
            11 => &mut self.alloc_stall,
            12 => &mut self.async_scan,
            13 => &mut self.direct_scan,
            14 => &mut self.async_reclaim,
            15 => &mut self.direct_reclaim,
            _ => return None,
        })
    }
}

/// Why a stats buffer was refused whole.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Empty, or not a whole number of entries.
    #[error("stats buffer of {0} bytes is not a whole number of 10-byte entries")]
    BadLength(usize),
    /// More entries than any driver sends.
    #[error("stats buffer of {0} bytes holds more than {MAX_STATS} entries")]
    TooLong(usize),
}

/// Checks a buffer's length before anything is read from guest memory.
pub fn check_len(len: usize) -> Result<(), StatsError> {
    if len > MAX_STATS * STAT_LEN {
        Err(StatsError::TooLong(len))
    } else if len == 0 || !len.is_multiple_of(STAT_LEN) {
        Err(StatsError::BadLength(len))
    } else {
        Ok(())
    }
}

/// Updates `stats` with the entries in `bytes`; returns how many entries
/// had a tag the spec does not define (skipped). A refused buffer changes
/// nothing. A tag repeated within one buffer keeps its last value.
pub fn parse(bytes: &[u8], stats: &mut GuestStats) -> Result<usize, StatsError> {
    check_len(bytes.len())?;
    let mut unknown = 0;
    for entry in bytes.chunks_exact(STAT_LEN) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let mut value = [0u8; 8];
        value.copy_from_slice(&entry[2..]);
        match stats.field(tag) {
            Some(field) => *field = Some(u64::from_le_bytes(value)),
            None => unknown += 1,
        }
    }
    Ok(unknown)
}

/// Reads and parses one chain's readable part into `stats`; the chain is
/// kept whatever it holds (the protocol needs it back).
fn read_chain(mem: &GuestMemoryMmap, chain: &Chain, stats: &mut GuestStats) -> bool {
    let readable = chain.readable();
    let result = chain
        .validate(mem)
        .map_err(|e| e.to_string())
        .and_then(|()| check_len(readable.len()).map_err(|e| e.to_string()))
        .and_then(|()| {
            let mut bytes = vec![0u8; readable.len()];
            readable
                .read_into(mem, &mut bytes)
                .map_err(|e| e.to_string())?;
            parse(&bytes, stats).map_err(|e| e.to_string())
        });
    match result {
        Ok(0) => true,
        Ok(unknown) => {
            // A newer driver may know tags the spec had not yet.
            UNKNOWN_TAGS.info(format_args!(
                "virtio-balloon: {unknown} unknown stats tags skipped"
            ));
            true
        }
        Err(e) => {
            REFUSED.warn(format_args!(
                "virtio-balloon: stats buffer {} refused: {e}",
                chain.head
            ));
            false
        }
    }
}

/// The device's end of the stats protocol: the buffer it holds between
/// intervals.
#[derive(Debug, Default)]
pub struct StatsProtocol {
    /// Head of the buffer the device holds, if any.
    held: Option<u16>,
}

/// What one pass over the stats queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Buffers read into the statistics.
    pub parsed: u64,
    /// Buffers refused (garbage).
    pub refused: u64,
}

impl StatsProtocol {
    /// Whether the device holds a buffer now.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Takes the buffers the driver queued: each is read into `stats` and
    /// held; a driver that queues another while one is held (it should
    /// not) gets the older one back at once, empty. Serves at most twice
    /// the queue size per call.
    pub fn receive(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &Interrupt,
        stats: &mut GuestStats,
    ) -> Result<Received, virtio_queue::Error> {
        let mut received = Received::default();
        let budget = usize::from(queue.size()).max(1) * 2;
        for _ in 0..budget {
            let Some(chain) = pop_chain(queue, mem)? else {
                break;
            };
            if read_chain(mem, &chain, stats) {
                received.parsed += 1;
            } else {
                received.refused += 1;
            }
            self.give_back(index, queue, mem, interrupt)?;
            self.held = Some(chain.head);
        }
        Ok(received)
    }

    /// Returns the held buffer (if any) to the driver, which refills it.
    pub fn give_back(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &Interrupt,
    ) -> Result<(), virtio_queue::Error> {
        let Some(head) = self.held.take() else {
            return Ok(());
        };
        if guarded(|| queue.add_used(mem, head, 0))?.is_some() {
            guarded(|| interrupt.notify_queue(index, queue, mem))?;
        }
        Ok(())
    }

    /// The next available entry a device restored from a snapshot should
    /// take: the held buffer's, so that it holds the buffer again.
    pub fn resume_position(&self, queue: &Queue) -> u16 {
        let next = queue.next_avail();
        if self.holds() {
            next.wrapping_sub(1)
        } else {
            next
        }
    }
}

/// Sets the stats timer to fire every `seconds` (0 stops it).
pub fn arm(timer: &Mutex<TimerFd>, seconds: u16) -> io::Result<()> {
    let mut timer = timer.lock().unwrap_or_else(|p| p.into_inner());
    if seconds == 0 {
        return timer.clear().map_err(io::Error::from);
    }
    let every = Duration::from_secs(seconds.into());
    timer.reset(every, Some(every)).map_err(io::Error::from)
}
